"""PDF pages through pdfplumber: text lines with their font sizes (headings), list items (a bullet character, a
number, or a small shape just left of the line), ruled tables, and image-only pages rendered and read by OCR."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter

from tailor.data.documents.model import Block, Document, PageInfo, Unreadable
from tailor.errors import TailorError

_BULLET = re.compile(r"^\s*(?:[•●▪◦·‣∙○■□\-*–]|\(?\d{1,3}[.)]|[a-z][.)])\s+")
_CJK_END = re.compile("[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]$")
_CJK_START = re.compile("^[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
# CJK fonts share one glyph between a radical and the character it looks like, and their ToUnicode maps often
# name the radical (U+2Exx/U+2Fxx): "常⻅问题" for "常见问题". NFKC fixes the Kangxi block; these are the
# supplement's radicals that stand for whole simplified characters.
_RADICALS = str.maketrans(dict(zip(
    "\u2ec5\u2ec6\u2ec8\u2ec9\u2ecb\u2ed3\u2ed4\u2eda\u2edb\u2edc\u2edd\u2ee2\u2ee5\u2ee6\u2ee9\u2eec\u2eee\u2ef3"
    "\u2ea0\u2e9f\u2eab\u2eae\u2ebc\u2ed6\u2ee3\u2ea7\u2eac",
    "见角讠贝车长门页风飞食马鱼鸟黄齐齿龟民母目竹肉阝骨牛示")))

_RADICAL = re.compile("[\u2e80-\u2fdf]")
_KANGXI = re.compile("[\u2f00-\u2fdf]")


def fix_radicals(text: str) -> str:
    """Radical code points a PDF font mapped its glyphs to, as the characters they stand for."""
    if text.isascii():
        return text
    if not _RADICAL.search(text):
        return text
    return _KANGXI.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text).translate(_RADICALS)


def join_lines(a: str, b: str) -> str:
    """Two wrapped lines as one: no space between CJK characters, a space between words."""
    if not a:
        return b
    if _CJK_END.search(a) and _CJK_START.search(b):
        return a + b
    return a + " " + b


def _open(path, where: str):
    import pdfplumber

    # pdfminer logs a warning per glyph for fonts without a bounding box (Chromium's CJK subsets): noise.
    logging.getLogger("pdfminer").setLevel(logging.ERROR)
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect

    try:
        pdf = pdfplumber.open(path)
        pdf.pages  # parses the page tree: a broken file fails here, not halfway through
        return pdf
    except Exception as exc:  # pdfminer raises many types (PSEOF, PDFSyntaxError, ...) on damaged files
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc  # pdfplumber wraps them
        if isinstance(cause, (PDFPasswordIncorrect, PDFEncryptionError)):
            raise Unreadable("the PDF is encrypted (password-protected)", where=where,
                             fix="save an unprotected copy (e.g. qpdf --decrypt), or remove the file from the source") from None
        raise Unreadable(f"the PDF cannot be read ({type(cause).__name__}: {str(cause)[:120]})", where=where,
                         fix="check that the file is a complete, undamaged PDF (open it in a viewer, or re-export it)") from None


def _line_info(line: dict) -> tuple[float, bool]:
    chars = [c for c in line.get("chars", []) if not c["text"].isspace()]
    if not chars:
        return 0.0, False
    size = Counter(round(c["size"], 1) for c in chars).most_common(1)[0][0]
    bold = all("bold" in (c.get("fontname") or "").lower() for c in chars)
    return size, bold


def _bullet_marks(page) -> list[tuple[float, float, float, float]]:
    """Small filled shapes (x0, x1, top, bottom): list bullets that a browser draws as graphics, not text."""
    return [(o["x0"], o["x1"], o["top"], o["bottom"]) for o in page.curves + page.rects
            if 1.5 <= o["x1"] - o["x0"] <= 8 and 1.5 <= o["bottom"] - o["top"] <= 8]


def read_pdf(path, cfg, ocr_page) -> Document:
    """Blocks of every page of a PDF. `ocr_page(image, where)` reads an image-only page (None when OCR is off)."""
    where = str(path)
    pdf = _open(path, where)
    doc = Document(where)
    pages: list[tuple[int, list]] = []  # (page number, [(top, kind, payload)])
    sizes: Counter = Counter()
    try:
        for number, page in enumerate(pdf.pages, 1):
            pwhere = f"{where}#page={number}"
            try:
                if not any(not c["text"].isspace() for c in page.chars):
                    info = PageInfo(number)
                    if page.images and ocr_page is not None:
                        image = page.to_image(resolution=cfg.ocr_dpi).original
                        paras, conf = ocr_page(image, pwhere)
                        info.method, info.confidence = "ocr", conf
                        pages.append((number, [(float(i), "ocr", t) for i, t in enumerate(paras)]))
                        info.empty = not paras
                    elif page.images:
                        info.method, info.note = "skipped", "image-only page and document.ocr is off"
                    else:
                        info.empty = True
                    doc.pages.append(info)
                    continue
                tables = page.find_tables()
                items = [(t.bbox[1], "table", t.extract()) for t in tables]
                boxes = [t.bbox for t in tables]
                body = page.filter(lambda o: not any(b[0] <= (o.get("x0", 0) + o.get("x1", 0)) / 2 <= b[2]
                                                     and b[1] <= (o.get("top", 0) + o.get("bottom", 0)) / 2 <= b[3]
                                                     for b in boxes)) if boxes else page
                marks = _bullet_marks(page)
                for line in body.extract_text_lines(strip=True, return_chars=True):
                    size, bold = _line_info(line)
                    if not line["text"]:
                        continue
                    for c in line["chars"]:
                        sizes[round(c["size"], 1)] += 1
                    dot = any(line["x0"] - 24 <= m[1] <= line["x0"] and line["top"] <= (m[2] + m[3]) / 2 <= line["bottom"]
                              for m in marks)
                    items.append((line["top"], "line", (fix_radicals(line["text"]), size, bold, dot,
                                                        line["bottom"] - line["top"])))
                items.sort(key=lambda it: it[0])
                pages.append((number, items))
                doc.pages.append(PageInfo(number))
            except TailorError:
                raise
            except Exception as exc:
                raise Unreadable(f"page {number} of the PDF cannot be read ({type(exc).__name__}: {str(exc)[:120]})",
                                  where=pwhere, fix="re-export the PDF, or remove the page") from None
    finally:
        pdf.close()
    body_size = sizes.most_common(1)[0][0] if sizes else 0.0
    heading_sizes = sorted({round(s) for s in sizes if body_size and s >= body_size * 1.15}, reverse=True)
    for number, items in pages:
        doc.blocks.extend(_blocks(number, items, body_size, heading_sizes))
    return doc


def _blocks(number: int, items: list, body: float, heading_sizes: list[int]) -> list[Block]:
    out: list[Block] = []
    prev_bottom = None
    open_block: Block | None = None
    for top, kind, payload in items:
        if kind == "table":
            rows = [[fix_radicals((c or "").strip()) for c in row] for row in payload if any((c or "").strip() for c in row)]
            if rows:
                out.append(Block("table", page=number, rows=rows))
            open_block, prev_bottom = None, None
            continue
        if kind == "ocr":
            out.append(Block("paragraph", payload, page=number))
            continue
        text, size, bold, dot, height = payload
        gap = None if prev_bottom is None else top - prev_bottom
        prev_bottom = top + height
        if body and size >= body * 1.15 and len(text) <= 200:
            level = heading_sizes.index(round(size)) + 1 if round(size) in heading_sizes else 1
            if open_block is not None and open_block.kind == "heading" and open_block.level == level and gap is not None and gap < height * 0.6:
                open_block.text = join_lines(open_block.text, text)  # a heading wrapped over two lines
            else:
                open_block = Block("heading", text, page=number, level=level)
                out.append(open_block)
            continue
        if bold and len(text) <= 80 and not text.rstrip().endswith((".", "。", ":", "：")) and not _BULLET.match(text):
            open_block = Block("heading", text, page=number, level=len(heading_sizes) + 1)
            out.append(open_block)
            continue
        bullet = _BULLET.match(text)
        if bullet or dot:
            open_block = Block("list", text[bullet.end():].strip() if bullet else text, page=number)
            out.append(open_block)
            continue
        if (open_block is not None and open_block.kind in ("paragraph", "list") and gap is not None
                and gap < height * 0.6):
            open_block.text = join_lines(open_block.text, text)
        else:
            open_block = Block("paragraph", text, page=number)
            out.append(open_block)
    return out
