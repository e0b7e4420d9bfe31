"""The UI app through HTTP: every page renders, the shared-machine guards hold, bad input is refused with the
CLI's what / where / fix message and writes nothing."""

import io
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


def test_failed_run_resumes_from_its_checkpoint(tmp_path):
    app = create_app(tmp_path / "ws", runner_interval=3600)  # the runner leaves the queued jobs queued
    client = TestClient(app, base_url="http://127.0.0.1:7860")
    table = app.state.ctx.table
    out = tmp_path / "ws" / "runs" / "r" / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    job = table.add("train", "train r", ["python", "-m", "tailor.cli", "train", "recipe.yaml"], device="default",
                    run_dir=out, meta={"recipe": str(out.parent / "recipe.yaml")})
    table.update(job.id, state="failed", note="the job's process ended without an exit status")
    page = client.get(f"/runs/{job.id}").text
    assert 'id="resume-form"' in page and "ended without an exit status" in page
    r = client.post(f"/runs/{job.id}/resume", follow_redirects=False)
    new = table.get(int(r.headers["location"].rsplit("/", 1)[1]))
    assert new.argv == job.argv + ["train.resume=true"] and new.run_dir == str(out) and new.device == "default"
    assert client.post(f"/runs/{new.id}/resume").status_code == 400  # queued or running: nothing to resume


def test_llama_factory_registry_is_picked_dataset_by_dataset(client, app, tmp_path):
    from tailor.config import Recipe
    from tailor.data.prepare import run
    from tailor.ui.pages_data import data_settings

    folder = tmp_path / "data" / "lf"
    folder.mkdir(parents=True)
    rows = [{"instruction": f"Question {i}: how long is the return window for item {i}?", "output": f"{i} days."} for i in range(6)]
    (folder / "alpaca.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"support": {"file_name": "alpaca.json"}}))
    r = client.post("/data/add", data={"path": str(folder / "dataset_info.json")})
    assert r.status_code == 200 and "LLaMA-Factory dataset" in r.text and "support (lf/dataset_info.json)" in r.text
    settings = {"data": data_settings(app.state.ctx, 0.0)}
    assert settings["data"]["sources"] == [{"registry": str(folder / "dataset_info.json"), "name": "support"}]
    prepared = run(Recipe.model_validate(settings))  # what the Data page's job runs: the registry entry is read
    assert prepared.splits["train"] + prepared.splits["eval"] >= 1 and prepared.report()["rows_read"] == 6


def test_ship_and_registry_run_the_cli_commands(tmp_path):
    app = create_app(tmp_path / "ws", runner_interval=3600)
    client = TestClient(app, base_url="http://127.0.0.1:7860")
    table = app.state.ctx.table
    ws = app.state.ctx.workspace
    adapter = ws.runs / "r" / "out" / "final"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "/b"}))
    full = ws.models / "m"
    full.mkdir()
    (full / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (full / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    ws.prepared_dir.mkdir(parents=True)
    (ws.prepared_dir / "eval.jsonl").write_text(CHAT)

    def last_argv():
        return table.list(limit=1)[0].argv[3:]  # after python -m tailor.cli

    assert client.post("/ship/start", data={"model": str(adapter), "action": "merge"}).status_code == 200
    assert last_argv()[:2] == ["merge", str(adapter)]
    client.post("/ship/start", data={"model": str(full), "action": "quantize", "method": "int4-weight", "max_examples": "8"})
    argv = last_argv()
    assert argv[:4] == ["quantize", str(full), "--method", "int4-weight"]
    assert argv[-4:] == ["--eval-data", str(ws.prepared_dir / "eval.jsonl"), "--max-examples", "8"]
    client.post("/ship/start", data={"model": str(adapter), "action": "export", "format": "gguf"})
    assert last_argv()[:4] == ["export", str(adapter), "--format", "gguf"]
    assert table.list(limit=1)[0].device == "default"  # queued on the device like training
    client.post("/ship/registry", data={"model": str(adapter), "name": "support-bot", "promote": "on"})
    assert last_argv() == ["registry", "register", "support-bot", str(adapter), "--url", str(ws.root / "registry.db"),
                           "--stage", "production"]
    n = len(table.list())
    r = client.post("/ship/start", data={"model": str(full), "action": "merge"})
    assert r.status_code == 400 and "nothing to merge" in r.text
    r = client.post("/ship/start", data={"model": str(full), "action": "export", "format": "tflite"})
    assert r.status_code == 400 and "unknown export format" in r.text
    r = client.post("/ship/registry", data={"model": str(full), "name": "bad name!"})
    assert r.status_code == 400 and len(table.list()) == n


def test_unreadable_model_directories_are_explained(client, app):
    ws = app.state.ctx.workspace
    no_weights = ws.models / "empty"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    r = client.post("/model/select", data={"path": str(no_weights)})
    assert r.status_code == 400 and "no weights" in r.text
    broken = ws.models / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"")
    r = client.post("/model/select", data={"path": str(broken)})
    assert r.status_code == 400 and "unreadable config" in r.text
    assert "model" not in ws.state() or ws.state()["model"] is None


def test_a_result_folder_is_zipped_for_download(client, app):
    import zipfile

    ws = app.state.ctx.workspace
    out = ws.ship / "export-1"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    assert client.post("/ship/zip", data={"path": str(out)}).status_code == 200
    job = app.state.ctx.runner.wait(app.state.ctx.table.list(kind="zip")[0].id)
    assert job.state == "done"
    link = re.search(r'href="(/files\?path=[^"]+download=1)"', client.get("/ship").text).group(1).replace("&amp;", "&")
    r = client.get(link)
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.read("export-1/model.safetensors") == b"weights"
    assert client.post("/ship/zip", data={"path": "/etc"}).status_code == 400


def test_registry_versions_listed_and_promoted(client, app):
    from tailor.mlops.registry import Registry

    ws = app.state.ctx.workspace
    model = ws.models / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with Registry(ws.root / "registry.db") as reg:
        reg.register("bot", model)
        reg.register("bot", model)
    page = client.get("/ship").text
    assert page.count('action="/ship/promote"') == 2
    assert client.post("/ship/promote", data={"name": "bot", "version": "2"}).status_code == 200
    job = app.state.ctx.runner.wait(app.state.ctx.table.list(kind="registry")[0].id, timeout=120)
    assert job.state == "done", app.state.ctx.table.log_tail(job.id)
    page = client.get("/ship").text
    assert page.count('action="/ship/promote"') == 1 and "<td>production</td>" in page
    assert client.post("/ship/promote", data={"name": "bot", "version": "9"}).status_code == 400


def test_html_files_are_shown_sandboxed(client, app):
    page = app.state.ctx.workspace.evals / "report.html"
    page.write_text("<html><script>fetch('/api/upload')</script></html>")
    r = client.get("/files", params={"path": str(page)})
    assert r.status_code == 200 and r.headers["content-security-policy"].startswith("sandbox;")
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none': no script runs
