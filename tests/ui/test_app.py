"""The UI app through HTTP: every page renders, the shared-machine guards hold, bad input is refused with the
CLI's what / where / fix message and writes nothing."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from tailor.errors import TailorError
from tailor.ui.app import PAGES, create_app
from tailor.ui.server import access_token

CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n"


@pytest.fixture
def app(tmp_path):
    return create_app(tmp_path / "ws", [tmp_path / "data"], max_upload_mb=0.01)


@pytest.fixture
def client(app):
    with TestClient(app, base_url="http://127.0.0.1:7860") as c:
        yield c


def test_every_page_renders(client):
    for href, label in PAGES:
        r = client.get(href)
        assert r.status_code == 200 and f">{label}</a>" in r.text
        links = re.findall(r'(?:src|href)="([^"]*)"', r.text)
        assert links and all(u.startswith(("/", "#", "data:")) and not u.startswith("//") for u in links), links


def test_unknown_host_refused(client):
    assert client.get("/", headers={"host": "attacker.example:7860"}).status_code == 421


def test_cross_site_post_refused(client):
    r = client.post("/data/prepare", headers={"origin": "http://attacker.example"})
    assert r.status_code == 403


def test_token_required_off_loopback(tmp_path):
    token = access_token("0.0.0.0", None)
    assert token and len(token) >= 24 and access_token("127.0.0.1", None) is None
    with pytest.raises(TailorError, match="too short"):
        access_token("0.0.0.0", "short")
    app = create_app(tmp_path, host="0.0.0.0", token=token)
    with TestClient(app, base_url="http://192.0.2.1:7860") as c:
        assert c.get("/").status_code == 401
        assert c.get("/?token=wrong").status_code == 401
        assert c.get(f"/?token={token}").status_code == 200
        assert c.get("/data").status_code == 200  # the cookie set by the first visit


def test_upload_refusals_are_shown_and_leave_nothing(client, app):
    uploads = app.state.ctx.workspace.uploads
    r = client.put("/api/upload?name=bad.jsonl", content=b'{"messages": [\n')
    assert r.status_code == 400 and r.json()["error"]["where"] == "bad.jsonl:1"
    r = client.put("/api/upload?name=big.jsonl", content=CHAT.encode() * 200)
    assert r.status_code == 400 and "upload limit" in r.json()["error"]["what"]
    assert list(uploads.iterdir()) == []
    r = client.put("/api/upload?name=chat.jsonl", content=CHAT.encode())
    assert r.status_code == 200
    assert app.state.ctx.workspace.state()["sources"] == [str(uploads / "chat.jsonl")]
    page = client.get("/data").text
    assert "chat.jsonl" in page and "chat (1)" in page


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../etc/passwd"])
def test_out_of_root_paths_refused_everywhere(client, path):
    r = client.get("/files", params={"path": path})
    assert r.status_code == 400 and "outside the folders" in r.text and "root:" not in r.text
    assert client.get("/api/browse", params={"path": path}).status_code == 400
    r = client.post("/data/add", data={"path": path})
    assert r.status_code == 400 and "outside the folders this UI may use" in r.text
    r = client.post("/model/select", data={"path": path})
    assert r.status_code == 400 and "outside" in r.text


def test_train_form_refuses_bad_values_and_writes_nothing(client, app, tmp_path):
    ws = app.state.ctx.workspace
    r = client.post("/train/start", data={"name": "x", "train.lr": "1e-3"})
    assert r.status_code == 400 and "no model chosen yet" in r.text
    model = tmp_path / "ws" / "models" / "m"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    ws.update(model=str(model), sources=[str(tmp_path / "d.jsonl")])
    r = client.post("/train/start", data={"name": "x", "train.lr": "-1", "train.batch_size": "two"})
    assert r.status_code == 400
    assert r.text.count('class="error"') >= 3  # both fields and the summary
    assert "greater than 0" in r.text and "valid integer" in r.text
    assert list(ws.runs.iterdir()) == [] and app.state.ctx.table.list() == []
    r = client.post("/train/preview", data={"name": "x", "train.lr": "0.001", "train.max_steps": "5"})
    assert r.status_code == 200 and "lr: 0.001" in r.text and "max_steps: 5" in r.text


def test_cli_has_the_ui_command():
    from tailor.cli import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["ui"].format_help()
    for flag in ("--host", "--port", "--workspace", "--root", "--token", "--max-upload-mb", "--jobs-per-device"):
        assert flag in help_text
