"""Documents in: .pdf, .docx, .html/.htm, .md and images (.png, .jpg, .tiff) as rows of `tailor data prepare`.

A document is read into blocks (headings, paragraphs, list items, tables; `model`), running headers and
footers are removed (`corpus.remove_boilerplate`), and the source's `document.emit` decides the rows:

- text: chunks for domain pretraining, cut by structure within `document.chunk_tokens` (`corpus`), as
  Markdown-like text ('#' headings, '- ' items, pipe tables);
- qa: conversations from the structure (FAQ, tables, definitions) and from `document.templates` (`qa`).

Every row carries its provenance in its columns: `page` (first page; `page_end` when a chunk spans pages)
and `section` (the heading path, "Manual > Returns"); the record's `source` is the file name. Scanned pages
and images go through Tesseract (`ocr`), with each page's mean word confidence in the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterator

from tailor.data.documents.model import Block, Document, PageInfo, Unreadable
from tailor.errors import TailorError

PDF, DOCX, HTML, MARKDOWN = (".pdf",), (".docx",), (".html", ".htm"), (".md", ".markdown")
IMAGES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SUPPORTED = PDF + DOCX + HTML + MARKDOWN + IMAGES


def is_document(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED


def _ocr_reader(cfg) -> Callable | None:
    if not cfg.ocr:
        return None
    checked: list[bool] = []

    def read(image, where: str):
        from tailor.data.documents.ocr import ocr_image, require_tesseract

        if not checked:
            require_tesseract(cfg.ocr_languages, where)
            checked.append(True)
        return ocr_image(image, cfg.ocr_languages)

    return read


def _read_image(path: Path, cfg, ocr) -> Document:
    from PIL import Image, ImageSequence

    doc = Document(str(path))
    try:
        img = Image.open(path)
        frames = [f.convert("RGB") for f in ImageSequence.Iterator(img)]  # a multi-page TIFF is several pages
    except Exception as exc:
        raise Unreadable(f"the image cannot be read ({type(exc).__name__}: {str(exc)[:120]})", where=str(path),
                          fix="check that the file is a complete PNG, JPEG or TIFF image") from None
    for n, frame in enumerate(frames, 1):
        info = PageInfo(n)
        if ocr is None:
            info.method, info.note = "skipped", "image and document.ocr is off"
        else:
            paras, info.confidence = ocr(frame, f"{path}#page={n}")
            info.method, info.empty = "ocr", not paras
            doc.blocks.extend(Block("paragraph", t, page=n) for t in paras)
        doc.pages.append(info)
    return doc


def read_document(path: str | Path, cfg) -> Document:
    """Blocks and page information of one document (`cfg`: a source's `document` settings)."""
    path = Path(path)
    suffix = path.suffix.lower()
    ocr = _ocr_reader(cfg)
    if suffix in PDF:
        try:
            from tailor.data.documents.pdf import read_pdf
        except ImportError:
            raise TailorError("reading PDF files needs pdfplumber", where=str(path), fix='pip install "tailor[documents]"') from None
        doc = read_pdf(path, cfg, ocr)
    elif suffix in DOCX:
        from tailor.data.documents.office import read_docx

        doc = read_docx(path)
    elif suffix in HTML:
        from tailor.data.documents.web import read_html

        doc = read_html(path)
    elif suffix in MARKDOWN:
        from tailor.data.documents.web import read_markdown

        doc = read_markdown(path)
    elif suffix in IMAGES:
        doc = _read_image(path, cfg, ocr)
    else:
        raise TailorError(f"unsupported document type '{path.suffix}'", where=str(path), fix=f"use one of {', '.join(SUPPORTED)}")
    for p in doc.pages:
        if p.method == "ocr" and p.confidence is not None and p.confidence < cfg.ocr_min_confidence:
            p.low_confidence = True
    if cfg.ocr_drop_low:
        low = {p.number for p in doc.pages if p.low_confidence}
        doc.blocks = [b for b in doc.blocks if b.page not in low]
    if cfg.boilerplate:
        from tailor.data.documents.corpus import remove_boilerplate

        remove_boilerplate(doc, cfg.boilerplate_min_pages)
    return doc


def token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens of a text by the prepare tokenizer, or the words + CJK characters estimate without one."""
    if tokenizer is None:
        from tailor.data.documents.corpus import estimate_tokens

        return estimate_tokens
    return lambda t: len(tokenizer.encode(t, add_special_tokens=False))


def document_rows(path: Path, cfg, stats: dict, tokenizer=None, teacher=None) -> Iterator[tuple[dict, str]]:
    """(row, where) pairs of one document for the loader (`tailor.data.loading`); `stats` gathers the
    per-format accounting the report shows (pages, OCR confidence, boilerplate, chunks, QA pairs by method).
    `teacher` (`tailor.data.documents.teacher.Teacher`) writes pairs per chunk when `cfg.teacher` is set."""
    started = time.perf_counter()
    doc = read_document(path, cfg)
    fmt = path.suffix.lower().lstrip(".")
    s = stats.setdefault(fmt, {"files": 0, "pages": 0, "empty_pages": 0, "ocr_pages": 0, "skipped_pages": 0,
                               "boilerplate_removed": 0, "rows": 0, "seconds": 0.0})
    s["files"] += 1
    s["pages"] += len(doc.pages)
    s["empty_pages"] += sum(p.empty for p in doc.pages)
    s["ocr_pages"] += sum(p.method == "ocr" for p in doc.pages)
    s["skipped_pages"] += sum(p.method == "skipped" for p in doc.pages)
    s["boilerplate_removed"] += doc.boilerplate_lines
    for p in doc.pages:
        if p.method == "ocr":
            stats.setdefault("ocr", []).append({"file": path.name, "page": p.number, "confidence": None if p.confidence is None
                                                else round(p.confidence, 1), "low": p.low_confidence,
                                                "dropped": p.low_confidence and cfg.ocr_drop_low})
    rows = list(_text_rows(doc, cfg, tokenizer) if cfg.emit == "text" else _qa_rows(doc, path, cfg, stats))
    if cfg.emit == "qa" and cfg.teacher:
        rows += _teacher_rows(doc, cfg, stats, tokenizer, teacher)
    s["rows"] += len(rows)
    s["seconds"] = round(s["seconds"] + time.perf_counter() - started, 4)
    for row in rows:
        yield row, f"{path}#page={row['page']}" if row.get("page") is not None else str(path)


def _text_rows(doc: Document, cfg, tokenizer) -> Iterator[dict]:
    from tailor.data.documents.corpus import chunk_document

    for c in chunk_document(doc.blocks, cfg.chunk_tokens, token_counter(tokenizer)):
        row = {"text": c.text, "page": c.page, "section": c.section}
        if c.page_end is not None and c.page_end != c.page:
            row["page_end"] = c.page_end
        yield row


def _qa_rows(doc: Document, path: Path, cfg, stats: dict) -> Iterator[dict]:
    from tailor.data.augment import _parse_template, _substitute
    from tailor.data.documents.qa import _ambiguous_terms, extract, qualified_question
    from tailor.data.loading import to_record

    counts = stats.setdefault("qa_pairs", {})
    templates = []
    for i, t in enumerate(cfg.templates):
        probe = _slots(t)
        tree, names = _parse_template(t, i, {n: ["x"] for n in probe}, where=f"data.sources[].document.templates[{i}]")
        templates.append((tree, names))
    extracts = list(extract(doc.blocks))
    ambiguous = _ambiguous_terms(extracts)
    for ex in extracts:
        prov = {"page": ex.page, "section": ex.section}
        if ex.kind == "definition" and ex.fields.get("term") in ambiguous:
            ex.question = qualified_question(ex.fields["term"], ex.section.split(" > ")[-1])
        if ex.question and ex.answer and ex.kind in cfg.qa_from:
            counts[ex.kind] = counts.get(ex.kind, 0) + 1
            yield {"messages": [{"role": "user", "content": ex.question}, {"role": "assistant", "content": ex.answer}],
                   **prov, "qa": ex.kind}
        if not ex.fields:
            continue
        fields = {**ex.fields, "section": ex.section, "heading": ex.section.split(" > ")[-1],
                  "page": "" if ex.page is None else str(ex.page), "source": path.name}
        for i, (tree, names) in enumerate(templates):
            if all(fields.get(n) for n in names):
                rec = to_record(_substitute(tree, fields))
                if isinstance(rec, str):
                    raise TailorError(f"document template {i} filled from {path.name} page {ex.page} is unusable: {rec}",
                                      where=f"data.sources[].document.templates[{i}]", fix="write an alpaca, messages or text row")
                counts["template"] = counts.get("template", 0) + 1
                yield {**_as_row(rec), **prov, "qa": f"template[{i}]"}


def _teacher_rows(doc: Document, cfg, stats: dict, tokenizer, teacher) -> list[dict]:
    from tailor.data.documents.corpus import chunk_document
    from tailor.data.documents.teacher import teacher_pairs

    chunks = list(chunk_document(doc.blocks, cfg.chunk_tokens, token_counter(tokenizer)))
    pairs = teacher_pairs(chunks, cfg, teacher, stats.setdefault("qa_pairs", {})) if chunks else []
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
             "page": c.page, "section": c.section, "qa": "teacher"} for q, a, c in pairs]


def _slots(template: str) -> list[str]:
    from tailor.data.augment import slot_uses
    from tailor.data.slot_filters import split_slot

    try:
        tree = json.loads(template)
    except json.JSONDecodeError:
        return []  # _parse_template reports it
    return sorted({split_slot(u)[0] for u in slot_uses(tree)})


def _as_row(rec: dict) -> dict:
    """A canonical record from `to_record` as a loader row (its columns; conversion runs again in the loader)."""
    return {k: v for k, v in rec.items() if k in ("messages", "text", "prompt", "chosen", "rejected", "label", "completion")}
