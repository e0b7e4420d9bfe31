"""HTML and Markdown files as blocks. HTML uses the cleaning step's tag sets and entity handling
(`tailor.data.normalize`), keeping what that step flattens: heading levels, list items and table rows."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from tailor.data.documents.model import Block, Document, PageInfo
from tailor.data.normalize import _SKIP

_HEAD = {f"h{i}": i for i in range(1, 7)}
_BREAKS = frozenset("p div section article header footer nav aside main figure blockquote pre dt dd br hr "
                    "title address details summary caption figcaption".split())
_WS = re.compile(r"\s+")


class _Blocks(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.buf: list[str] = []
        self.kind, self.level = "paragraph", 0
        self.skip = 0
        self.table: list[list[str]] | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def _flush(self):
        text = _WS.sub(" ", "".join(self.buf)).strip()
        self.buf = []
        if text:
            self.blocks.append(Block(self.kind, text, level=self.level))
        self.kind, self.level = "paragraph", 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self.skip += 1
        elif tag == "table":
            self._flush()
            self.table = []
        elif tag == "tr" and self.table is not None:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif self.cell is not None:
            if tag == "br":
                self.cell.append(" ")
        elif tag in _HEAD:
            self._flush()
            self.kind, self.level = "heading", _HEAD[tag]
        elif tag == "li":
            self._flush()
            self.kind = "list"
        elif tag in _BREAKS:
            self._flush()

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(_WS.sub(" ", "".join(self.cell)).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.table is not None:
            if any(self.row):
                self.table.append(self.row)
            self.row = None
        elif tag == "table" and self.table is not None:
            if self.table:
                self.blocks.append(Block("table", rows=self.table))
            self.table = self.row = self.cell = None
        elif self.cell is None and (tag in _HEAD or tag == "li" or tag in _BREAKS or tag in ("ul", "ol")):
            self._flush()

    def handle_data(self, data):
        if self.skip:
            return
        (self.cell if self.cell is not None else self.buf).append(data)


def read_html(path) -> Document:
    text = _read_text(path)
    parser = _Blocks()
    parser.feed(text)
    parser.close()
    parser._flush()
    return _one_page(str(path), parser.blocks)


def _one_page(path: str, blocks: list[Block]) -> Document:
    """A web page or Markdown file is one page: page 1 is where each of its rows comes from."""
    for b in blocks:
        b.page = 1
    return Document(path, blocks, [PageInfo(1, empty=not blocks)])


_MD_HEAD = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_LIST = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+(.*)$")
_MD_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def read_markdown(path) -> Document:
    """Headings (#), list items, pipe tables and paragraphs (blank-line separated) of a Markdown file."""
    blocks: list[Block] = []
    para: list[str] = []
    table: list[list[str]] = []

    def flush():
        nonlocal para, table
        if para:
            blocks.append(Block("paragraph", " ".join(para)))
        if table:
            blocks.append(Block("table", rows=table))
        para, table = [], []

    for raw in _read_text(path).splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif m := _MD_HEAD.match(line):
            flush()
            blocks.append(Block("heading", m.group(2), level=len(m.group(1))))
        elif line.startswith("|"):
            if para:
                flush()
            if not _MD_RULE.match(line):
                table.append([c.strip() for c in line.strip("|").split("|")])
        elif m := _MD_LIST.match(raw):
            flush()
            blocks.append(Block("list", m.group(1).strip()))
        else:
            if table:
                flush()
            para.append(line)
    flush()
    return _one_page(str(path), blocks)


def _read_text(path) -> str:
    from tailor.errors import TailorError

    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TailorError(f"{path} is not UTF-8 text (byte {exc.start})", where=str(path), fix="re-save the file as UTF-8") from None
