"""Word files through python-docx: heading styles, list paragraphs, tables, and page breaks for page numbers."""

from __future__ import annotations

import re

from tailor.data.documents.model import Block, Document, PageInfo, Unreadable
from tailor.errors import TailorError

_HEADING = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _page_breaks(par) -> int:
    """Explicit page breaks inside a paragraph (Word's rendered breaks are hints and counted too, once)."""
    el = par._p
    hard = sum(1 for br in el.iter(_W + "br") if br.get(_W + "type") == "page")
    rendered = 1 if any(True for _ in el.iter(_W + "lastRenderedPageBreak")) else 0
    return hard or rendered


def _kind(par) -> tuple[str, int]:
    style = (par.style.name if par.style is not None else "") or ""
    m = _HEADING.match(style.strip())
    if m:
        return "heading", int(m.group(1))
    if style.strip().lower() == "title":
        return "heading", 1
    if "list" in style.lower() or par._p.pPr is not None and par._p.pPr.numPr is not None:
        return "list", 0
    return "paragraph", 0


def read_docx(path) -> Document:
    """Blocks of a .docx in body order; `page` counts explicit page breaks (Word files store no page numbers)."""
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph
    except ImportError:
        raise TailorError("reading .docx files needs python-docx", where=str(path), fix='pip install "tailor[documents]"') from None
    try:
        d = docx.Document(str(path))
    except Exception as exc:  # python-docx raises zipfile/KeyError/ValueError types on damaged files
        raise Unreadable(f"the Word file cannot be read ({type(exc).__name__}: {str(exc)[:120]})", where=str(path),
                          fix="check that it is a .docx (Word 2007 or later) file; save .doc files as .docx") from None
    doc = Document(str(path))
    page = 1
    for item in d.iter_inner_content():
        if isinstance(item, Paragraph):
            breaks = _page_breaks(item)
            text = item.text.strip()
            if breaks and not text:
                page += breaks
                continue
            if text:
                kind, level = _kind(item)
                doc.blocks.append(Block(kind, text, page=page, level=level))
            page += breaks
        elif isinstance(item, Table):
            rows = []
            for row in item.rows:
                cells = [c.text.strip() for c in row.cells]
                if any(cells):
                    rows.append(cells)
            if rows:
                doc.blocks.append(Block("table", page=page, rows=rows))
    doc.pages = [PageInfo(n, empty=not any(b.page == n for b in doc.blocks)) for n in range(1, page + 1)]
    return doc
