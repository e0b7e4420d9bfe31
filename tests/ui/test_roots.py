"""File access confined to the roots: traversal, absolute paths and links out are refused; uploads are checked,
size-limited and leave nothing behind when refused."""

import asyncio
import json

import pytest

from tailor.errors import TailorError
from tailor.ui.roots import Roots, safe_name, save_upload


@pytest.fixture
def roots(tmp_path):
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    return Roots([tmp_path / "root"])


def test_paths_inside_are_resolved(roots, tmp_path):
    assert roots.check(tmp_path / "root" / "sub") == (tmp_path / "root" / "sub").resolve()
    assert roots.check("sub") == (tmp_path / "root" / "sub").resolve()  # relative = under the first root


@pytest.mark.parametrize("path", ["../outside/secret.txt", "sub/../../outside", "/etc/passwd", "~/.ssh"])
def test_paths_outside_are_refused(roots, path):
    with pytest.raises(TailorError, match="outside the folders") as err:
        roots.check(path, "data path")
    assert err.value.where == "data path" and "--root" in err.value.fix


def test_links_out_of_a_root_are_refused(roots, tmp_path):
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(TailorError, match="outside"):
        roots.check(tmp_path / "root" / "link" / "secret.txt")


def test_listing(roots, tmp_path):
    (tmp_path / "root" / "a.jsonl").write_text("{}\n")
    top = roots.listing(None)
    assert top["dirs"] == [str((tmp_path / "root").resolve())]
    inside = roots.listing(tmp_path / "root")
    assert inside["dirs"] == ["sub"] and inside["files"] == ["a.jsonl"] and inside["parent"] is None
    with pytest.raises(TailorError):
        roots.listing(tmp_path / "outside")


def _chunks(data: bytes, size: int = 7):
    async def gen():
        for i in range(0, len(data), size):
            yield data[i:i + size]
    return gen()


def upload(folder, name, data, limit=10_000):
    return asyncio.run(save_upload(_chunks(data), name, folder, limit))


def test_upload_saved_under_a_safe_name(tmp_path):
    row = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    p = upload(tmp_path, "../../evil/chat.jsonl", (row + "\n").encode())
    assert p == tmp_path / "chat.jsonl" and p.read_text().strip() == row
    assert upload(tmp_path, "chat.jsonl", (row + "\n").encode()).name == "chat-1.jsonl"  # never overwrites


@pytest.mark.parametrize("name,data,message", [
    ("big.jsonl", b'{"text": "x"}\n' * 1000, "larger than the upload limit"),
    ("bad.jsonl", b'{"messages": [1, 2\n', "invalid JSON"),
    ("odd.jsonl", b'{"foo": 1}\n', "no usable fields"),
    ("empty.jsonl", b"", "is empty"),
    ("tool.exe", b"MZ", "not a data file"),
])
def test_refused_uploads_leave_nothing(tmp_path, name, data, message):
    with pytest.raises(TailorError, match=message) as err:
        upload(tmp_path, name, data)
    assert list(tmp_path.iterdir()) == []
    assert str(tmp_path) not in err.value.message()  # the user's file name, not the temporary one


def test_safe_name():
    assert safe_name("..\\..\\a b.jsonl") == "a_b.jsonl"
    with pytest.raises(TailorError):
        safe_name("../..")
