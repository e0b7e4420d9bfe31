"""File access of the UI, confined to configured roots: pickers, uploads and downloads go through here.

A path is resolved (symlinks followed, `..` folded) before it is compared with the roots, so neither
`../../etc/passwd` nor a link pointing out of a root gets through. Uploads stream to a hidden temporary file
under the upload folder, stop at the size limit, are checked as data (a malformed file is refused with the data
loader's own message), and only then take their name: a refused upload leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import AsyncIterator

from tailor.errors import TailorError

from tailor.data.documents import SUPPORTED as DOCUMENTS

UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".parquet") + DOCUMENTS  # documents: tailor.data.documents
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class Roots:
    """The folders the UI may read and write; everything else is refused."""

    def __init__(self, roots: list[str | Path]):
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        for r in self.roots:
            r.mkdir(parents=True, exist_ok=True)

    def check(self, path: str | Path, where: str = "path") -> Path:
        """The resolved path, if it lies under a root; else a TailorError naming the roots."""
        if path is None or str(path).strip() == "":
            raise TailorError("no path given", where=where, fix="pick a file or folder under " + self.describe())
        if "\x00" in str(path):
            raise TailorError("the path holds a NUL character", where=where, fix="pick the path with the file picker")
        p = Path(os.path.expanduser(str(path)))
        p = (p if p.is_absolute() else self.roots[0] / p).resolve()
        if not any(p == r or p.is_relative_to(r) for r in self.roots):
            raise TailorError(f"{path} is outside the folders this UI may use", where=where,
                              fix=f"pick a path under {self.describe()} (start `tailor ui --root DIR` to add a folder)")
        return p

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def listing(self, path: str | Path | None) -> dict:
        """Folders and files of a directory under a root (the roots themselves when `path` is empty)."""
        if not path:
            return {"path": None, "parent": None, "dirs": [str(r) for r in self.roots], "files": []}
        p = self.check(path, "folder")
        if not p.is_dir():
            raise TailorError(f"{p} is not a folder", where="folder", fix="pick a folder")
        dirs, files = [], []
        for child in sorted(p.iterdir(), key=lambda c: c.name.lower()):
            if child.name.startswith("."):
                continue
            (dirs if child.is_dir() else files).append(child.name)
        parent = str(p.parent) if any(p.parent == r or p.parent.is_relative_to(r) for r in self.roots) else None
        return {"path": str(p), "parent": parent, "dirs": dirs[:500], "files": files[:500]}


def safe_name(name: str) -> str:
    """A file name with no folder part and no surprising characters."""
    base = _SAFE_NAME.sub("_", Path(name.replace("\\", "/")).name).strip("._")
    if not base:
        raise TailorError(f"unusable file name {name!r}", where="upload", fix="rename the file, e.g. chat.jsonl")
    return base


async def save_upload(chunks: AsyncIterator[bytes], name: str, folder: Path, max_bytes: int) -> Path:
    """Stream an upload into `folder`, refusing it (and deleting what was written) past `max_bytes` or when the
    data loader cannot read it."""
    name = safe_name(name)
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        raise TailorError(f"{name}: not a data file tailor reads", where="upload",
                          fix="upload " + ", ".join(UPLOAD_SUFFIXES) + " files (chat records, alpaca, sharegpt, text, documents)")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload-{uuid.uuid4().hex}-{name}"
    size = 0
    try:
        with tmp.open("wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TailorError(f"{name} is larger than the upload limit of {max_bytes / 2**20:.0f} MiB",
                                      where="upload", fix="start `tailor ui --max-upload-mb N`, or put the file under a "
                                      "root folder and pick it with the file picker")
                fh.write(chunk)
        if size == 0:
            raise TailorError(f"{name} is empty", where="upload", fix="upload a file with data rows")
        check_data_file(tmp, display=name)
        final = _free_name(folder, name)
        tmp.replace(final)
        return final
    finally:
        tmp.unlink(missing_ok=True)


def _free_name(folder: Path, name: str) -> Path:
    p = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while p.exists():
        p = folder / f"{stem}-{n}{suffix}"
        n += 1
    return p


def check_data_file(path: Path, display: str | None = None, limit: int | None = None) -> dict:
    """Read a data file with the data stage's loader and converter: its detected formats and first rows.

    A malformed file raises the loader's TailorError (file and line), with the uploaded name in place of the
    temporary one."""
    from tailor.data.formats import convert_row

    formats: dict[str, int] = {}
    rows: list[dict] = []
    n = 0
    shown = display or path.name
    for row, where in _rows_named(path, display):
        try:
            rec, _ = convert_row(row)
        except Exception as exc:  # noqa: BLE001 - the converter's row error: reason, column, fix
            if not hasattr(exc, "reason"):
                raise
            col = f", field '{exc.column}'" if getattr(exc, "column", None) else ""
            raise TailorError(f"{shown}: a row cannot be used: {exc.reason}",
                              where=where.replace(str(path), shown) + col,
                              fix=exc.fix or "correct the row, or remove it from the file") from None
        fmt = _format_of(rec)
        formats[fmt] = formats.get(fmt, 0) + 1
        if len(rows) < 5:
            rows.append(rec)
        n += 1
        if limit and n >= limit:
            break
    if not n:
        raise TailorError(f"{display or path.name} holds no data rows", where=display or str(path),
                          fix="upload a file with at least one record")
    return {"rows": n, "formats": formats, "first": rows}


def _rows_named(path: Path, display: str | None):
    """The loader's rows; its errors name the file as the user knows it."""
    from tailor.data.loading import iter_rows

    try:
        yield from iter_rows(path)
    except TailorError as exc:
        if display:
            exc = TailorError(exc.what.replace(str(path), display), where=(exc.where or display).replace(str(path), display),
                              fix=exc.fix)
        raise exc from None


def _format_of(rec) -> str:
    if not isinstance(rec, dict):
        return "text"
    if "messages" in rec:
        return "chat"
    if "chosen" in rec:
        return "preference"
    if "label" in rec:
        return "classification"
    return "text"
