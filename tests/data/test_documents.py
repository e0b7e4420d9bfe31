"""Documents in: every format on small files made here, provenance through prepare, OCR, skips and errors."""

import json
import shutil
from pathlib import Path

import pytest

from tailor.config import DocumentConfig, load_recipe
from tailor.data.documents import document_rows, read_document
from tailor.data.documents.corpus import chunk_document, estimate_tokens
from tailor.data.documents.model import Block
from tailor.data.prepare import run
from tailor.errors import TailorError

from .docfiles import page_ops, text_image, write_pdf

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")


def _manual(tmp_path: Path) -> Path:
    """Three pages: a running header and footer on each, headings by font size, a ruled price table, an FAQ."""
    header, footer = (11, "Northwind Outfitters - Product Manual"), (11, "Page {} of 3")
    pages = [
        page_ops([header, (24, "Returns"), (11, "Tents can be returned within 60 days."),
                  (11, "Laptops can be returned within 30 days."), (11, "Restocking fee: 15% of the price."),
                  footer[:1] + (footer[1].format(1),)]),
        page_ops([header, (24, "Prices"), (11, "Current prices in US dollars."), footer[:1] + (footer[1].format(2),)],
                 table=[["Product", "Price"], ["Summit 4 tent", "$459"], ["Lumen headlamp", "$42"]]),
        page_ops([header, (24, "FAQ"), (11, "Q: Do you ship to Canada?"), (11, "A: Yes, in 7 to 10 business days."),
                  footer[:1] + (footer[1].format(3),)]),
    ]
    return write_pdf(tmp_path / "manual.pdf", pages)


def test_pdf_structure_boilerplate_and_pages(tmp_path):
    doc = read_document(_manual(tmp_path), DocumentConfig())
    md = [(b.markdown(), b.page) for b in doc.blocks]
    assert ("# Returns", 1) in md and ("# Prices", 2) in md and ("# FAQ", 3) in md
    assert ("| Product | Price |\n|---|---|\n| Summit 4 tent | $459 |\n| Lumen headlamp | $42 |", 2) in md
    assert doc.boilerplate_lines == 6  # the header and the numbered footer of three pages
    assert not any("Product Manual" in t or "Page " in t for t, _ in md)
    kept = read_document(tmp_path / "manual.pdf", DocumentConfig(boilerplate=False))
    assert sum("Product Manual" in b.text for b in kept.blocks) == 3


def test_pdf_qa_from_structure_with_provenance(tmp_path):
    stats: dict = {}
    rows = [r for r, _ in document_rows(_manual(tmp_path), DocumentConfig(emit="qa"), stats)]
    pairs = {(r["messages"][0]["content"], r["messages"][1]["content"]): (r["qa"], r["page"], r["section"]) for r in rows}
    assert pairs[("What is the price of Summit 4 tent?", "$459")] == ("table", 2, "Prices")
    assert pairs[("Do you ship to Canada?", "Yes, in 7 to 10 business days.")] == ("faq", 3, "FAQ")
    assert pairs[("What is Restocking fee?", "15% of the price.")] == ("definition", 1, "Returns")
    assert stats["qa_pairs"] == {"definition": 1, "table": 2, "faq": 1}
    assert stats["pdf"]["pages"] == 3 and stats["pdf"]["boilerplate_removed"] == 6


def test_templates_fill_from_extracted_fields(tmp_path):
    cfg = DocumentConfig(emit="qa", qa_from=[], templates=[
        '{"messages": [{"role": "user", "content": "How much is the {product}?"}, {"role": "assistant", "content": "{price}."}]}',
        '{"instruction": "Define {term}.", "output": "{definition}"}'])
    stats: dict = {}
    rows = [r for r, _ in document_rows(_manual(tmp_path), cfg, stats)]
    assert [(r["messages"][0]["content"], r["messages"][1]["content"], r["page"]) for r in rows if r["qa"] == "template[0]"] == [
        ("How much is the Summit 4 tent?", "$459.", 2), ("How much is the Lumen headlamp?", "$42.", 2)]
    assert stats["qa_pairs"] == {"template": 3}
    with pytest.raises(TailorError, match="not valid JSON"):
        list(document_rows(tmp_path / "manual.pdf", DocumentConfig(emit="qa", templates=["{oops"]), {}))


def test_docx_headings_lists_tables_and_page_breaks(tmp_path):
    import docx
    from docx.enum.text import WD_BREAK

    d = docx.Document()
    d.add_heading("Store policies", 1)
    d.add_paragraph("Gift cards are valid for 5 years.")
    d.add_paragraph("Keep the receipt", style="List Bullet")
    d.paragraphs[-1].add_run().add_break(WD_BREAK.PAGE)
    d.add_heading("退货", 2)
    t = d.add_table(rows=2, cols=2)
    for cell, text in zip(t._cells, ["类别", "退货期限", "帐篷", "60天"]):
        cell.text = text
    d.save(tmp_path / "policies.docx")
    doc = read_document(tmp_path / "policies.docx", DocumentConfig())
    assert [(b.markdown(), b.page) for b in doc.blocks] == [
        ("# Store policies", 1), ("Gift cards are valid for 5 years.", 1), ("- Keep the receipt", 1), ("## 退货", 2),
        ("| 类别 | 退货期限 |\n|---|---|\n| 帐篷 | 60天 |", 2)]
    rows = [r for r, _ in document_rows(tmp_path / "policies.docx", DocumentConfig(emit="qa"), {})]
    assert [(r["messages"][0]["content"], r["messages"][1]["content"], r["page"], r["section"]) for r in rows] == [
        ("帐篷的退货期限是多少？", "60天", 2, "Store policies > 退货")]


def test_html_and_markdown_keep_structure(tmp_path):
    (tmp_path / "help.html").write_text(
        "<html><head><style>p{color:red}</style><script>var x=1;</script></head><body><h1>Help</h1>"
        "<p>Shipping &amp; delivery.</p><ul><li>Fast</li><li>Cheap</li></ul>"
        "<table><tr><th>Region</th><th>Delivery time</th></tr><tr><td>Alaska</td><td>6 to 9 days</td></tr></table>"
        "<h2>FAQ</h2><h3>Do you ship abroad?</h3><p>Yes, to Canada and Mexico.</p></body></html>", encoding="utf-8")
    doc = read_document(tmp_path / "help.html", DocumentConfig())
    assert [b.markdown() for b in doc.blocks] == [
        "# Help", "Shipping & delivery.", "- Fast", "- Cheap", "| Region | Delivery time |\n|---|---|\n| Alaska | 6 to 9 days |",
        "## FAQ", "### Do you ship abroad?", "Yes, to Canada and Mexico."]
    qa = {r["messages"][0]["content"]: r["messages"][1]["content"]
          for r, _ in document_rows(tmp_path / "help.html", DocumentConfig(emit="qa"), {})}
    assert qa == {"What is the delivery time of Alaska?": "6 to 9 days", "Do you ship abroad?": "Yes, to Canada and Mexico."}
    (tmp_path / "notes.md").write_text("# Notes\n\nLine one\ncontinues.\n\n- item\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
                                       encoding="utf-8")
    assert [b.markdown() for b in read_document(tmp_path / "notes.md", DocumentConfig()).blocks] == [
        "# Notes", "Line one continues.", "- item", "| a | b |\n|---|---|\n| 1 | 2 |"]


def test_chunks_stay_within_budget_and_cut_between_sentences():
    sentences = [f"Sentence number {i} talks about tents." for i in range(12)]
    blocks = [Block("heading", "Tents", level=1), Block("paragraph", " ".join(sentences[:6]), page=1),
              Block("paragraph", " ".join(sentences[6:]), page=2)]
    chunks = list(chunk_document(blocks, 30, estimate_tokens))
    assert len(chunks) > 2
    for c in chunks:
        assert estimate_tokens(c.text) <= 30
        assert c.text.startswith("# Tents\n\n") and c.text.endswith(".") and c.section == "Tents"
    body = " ".join(c.text.removeprefix("# Tents\n\n").replace("\n\n", " ") for c in chunks)
    assert body == " ".join(sentences)
    assert chunks[0].page == 1 and chunks[-1].page == 2
    # one sentence over the budget must be cut, and nothing is lost
    long = [Block("paragraph", "word " * 50)]
    cut = list(chunk_document(long, 16, estimate_tokens))
    assert [estimate_tokens(c.text) for c in cut] == [16, 16, 16, 2]


@needs_tesseract
def test_ocr_images_and_scanned_pdf_pages_with_confidence(tmp_path):
    text_image(["Returns are accepted within 60 days."]).save(tmp_path / "scan.png")
    text_image(["帐篷的退货期限是六十天"]).save(tmp_path / "scan_zh.tiff")
    text_image(["Gift cards are valid for 5 years."]).save(tmp_path / "scanned.pdf")  # an image-only PDF page
    stats: dict = {}
    got = {p.name: [r for r, _ in document_rows(p, DocumentConfig(), stats)]
           for p in (tmp_path / "scan.png", tmp_path / "scan_zh.tiff", tmp_path / "scanned.pdf")}
    assert "Returns are accepted within 60 days." in got["scan.png"][0]["text"]
    assert "帐篷的退货期限是六十天" in got["scan_zh.tiff"][0]["text"]
    assert "Gift cards are valid for 5 years." in got["scanned.pdf"][0]["text"] and got["scanned.pdf"][0]["page"] == 1
    assert stats["pdf"]["ocr_pages"] == 1 and stats["png"]["ocr_pages"] == 1
    assert all(p["confidence"] > 80 and not p["low"] for p in stats["ocr"])
    strict: dict = {}
    rows = list(document_rows(tmp_path / "scan.png", DocumentConfig(ocr_min_confidence=100, ocr_drop_low=True), strict))
    assert rows == [] and strict["ocr"][0]["low"] and strict["ocr"][0]["dropped"]
    off: dict = {}
    assert list(document_rows(tmp_path / "scanned.pdf", DocumentConfig(ocr=False), off)) == []
    assert off["pdf"]["skipped_pages"] == 1


def test_missing_tesseract_names_the_packages(tmp_path, monkeypatch):
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract"))
    text_image(["Scanned"]).save(tmp_path / "scanned.pdf")
    with pytest.raises(TailorError) as e:
        list(document_rows(tmp_path / "scanned.pdf", DocumentConfig(), {}))
    assert "tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim" in str(e.value)


def test_encrypted_corrupt_empty_and_unsupported_files(tmp_path):
    write_pdf(tmp_path / "locked.pdf", [page_ops([(11, "secret")])], encrypt=True)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF body")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not a zip")
    for name, msg in (("locked.pdf", "encrypted"), ("broken.pdf", "cannot be read"), ("broken.docx", "cannot be read")):
        with pytest.raises(TailorError, match=msg):
            list(document_rows(tmp_path / name, DocumentConfig(), {}))
    write_pdf(tmp_path / "blank.pdf", [page_ops([(11, "Only page one has text.")]), page_ops([])])
    stats: dict = {}
    rows = [r for r, _ in document_rows(tmp_path / "blank.pdf", DocumentConfig(), stats)]
    assert len(rows) == 1 and stats["pdf"]["empty_pages"] == 1
    (tmp_path / "slides.pptx").write_bytes(b"x")
    recipe = load_recipe(None, [f"data.sources=[{{path: {tmp_path / 'slides.pptx'}}}]", f"data.prepared_dir={tmp_path / 'out'}"])
    with pytest.raises(TailorError, match="unsupported data file type '.pptx'"):
        run(recipe)
    # skipped and counted in a folder prepare (the unsupported file is not a data file of the folder)
    for name in ("blank.pdf", "slides.pptx"):
        (tmp_path / name).unlink()
    recipe = load_recipe(None, [f"data.sources=[{{path: {tmp_path}}}]", "data.on_error=skip",
                                f"data.prepared_dir={tmp_path / 'out'}"])
    with pytest.raises(TailorError, match="no rows left"):
        run(recipe)
    (tmp_path / "ok.md").write_text("# Fine\n\nA readable document.\n", encoding="utf-8")
    report = run(recipe).report()
    load = report["steps"][0]
    assert load["in"] == 4 and load["out"] == 1
    assert set(load["dropped"]) == {"unreadable document: the PDF is encrypted (password-protected)",
                                    next(r for r in load["dropped"] if r.startswith("unreadable document: the PDF cannot")),
                                    next(r for r in load["dropped"] if r.startswith("unreadable document: the Word file"))}


def test_provenance_survives_prepare(tmp_path):
    _manual(tmp_path)
    (tmp_path / "faq.md").write_text("# FAQ\n\nQ: Do you ship to Canada?\nA: Yes, in 7 to 10 business days.\n\n"
                                     "# Hours\n\nSeattle: 9 am to 9 pm\n", encoding="utf-8")
    recipe = load_recipe(None, [
        f"data.sources=[{{path: {tmp_path / 'manual.pdf'}}}, {{path: {tmp_path / 'faq.md'}}}]",
        "data.clean=[nfkc, whitespace]", "data.split.test=1", f"data.prepared_dir={tmp_path / 'text'}"])
    prepared = run(recipe)
    rows = prepared.records("train") + prepared.records("test")
    assert rows and all(r["meta"].get("section") and r["source"] in ("manual.pdf", "faq.md") for r in rows)
    assert {(r["source"], r["meta"].get("page"), r["meta"]["section"]) for r in rows} >= {
        ("manual.pdf", 1, "Returns"), ("manual.pdf", 2, "Prices"), ("manual.pdf", 3, "FAQ"), ("faq.md", 1, "Hours")}
    assert all("#page=" in r["where"] for r in rows if r["source"] == "manual.pdf")
    text = (prepared.path / "report.txt").read_text(encoding="utf-8")
    assert "pdf: 1 files, 3 pages (0 OCR, 0 empty, 0 skipped), 6 boilerplate lines removed" in text
    # QA rows: the FAQ pair appears in both files; de-dup keeps one, with its provenance
    qa = load_recipe(None, [
        f"data.sources=[{{path: {tmp_path / 'manual.pdf'}, document: {{emit: qa}}}}, {{path: {tmp_path / 'faq.md'}, document: {{emit: qa}}}}]",
        f"data.prepared_dir={tmp_path / 'qa'}"])
    prepared = run(qa)
    rows = prepared.records("train")
    canada = [r for r in rows if r["messages"][0]["content"] == "Do you ship to Canada?"]
    assert len(canada) == 1 and canada[0]["meta"] == {"page": 3, "section": "FAQ", "qa": "faq"}
    report = json.loads((prepared.path / "report.json").read_text(encoding="utf-8"))
    assert report["steps"][0]["documents"]["qa_pairs"] == {"definition": 1, "table": 2, "faq": 1}
    assert report["steps"][1]["documents"]["qa_pairs"] == {"faq": 1, "definition": 1}


def test_data_inspect_shows_provenance_and_tokenizer_budget(tmp_path, tokenizer_dir, tokenizer, capsys):
    import yaml

    from tailor.cli import main

    _manual(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"tokenizer": str(tokenizer_dir)}, "data": {
        "sources": [{"path": str(tmp_path / "manual.pdf"), "document": {"chunk_tokens": 24}}],
        "prepared_dir": str(tmp_path / "prepared"), "max_length": 64}}), encoding="utf-8")
    assert main(["data", "prepare", str(recipe)]) == 0
    rows = run(load_recipe(recipe), tokenizer).records("train")
    assert all(len(tokenizer.encode(r["text"], add_special_tokens=False)) <= 24 for r in rows)
    assert main(["data", "inspect", str(tmp_path / "prepared"), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "manual.pdf#page=" in out and "section: " in out


def test_attribute_lines_name_their_section_and_tables_chunk_under_one_header(tmp_path):
    (tmp_path / "specs.md").write_text("# Tent\n\nPrice: $459\n\nMSRP: the list price.\n\n# Lamp\n\nPrice: $42\n",
                                       encoding="utf-8")
    qa = [(r["messages"][0]["content"], r["messages"][1]["content"])
          for r, _ in document_rows(tmp_path / "specs.md", DocumentConfig(emit="qa"), {})]
    assert qa == [("What is the price of Tent?", "$459"), ("What is MSRP?", "the list price."),
                  ("What is the price of Lamp?", "$42")]
    table = Block("table", rows=[["Item", "Price"]] + [[f"item {i}", f"${i}"] for i in range(30)], page=4)
    chunks = list(chunk_document([table], 60, estimate_tokens))
    assert len(chunks) > 1 and all(c.text.startswith("| Item | Price |\n|---|---|\n| item") for c in chunks)
    assert all(c.text.count("| Item | Price |") == 1 and estimate_tokens(c.text) <= 60 and c.page == 4 for c in chunks)
    assert sum(c.text.count("| item ") for c in chunks) == 30


def _teacher_recipe(tmp_path: Path, teacher: str):
    (tmp_path / "guide.md").write_text(
        "# Returns\n\nTents can be returned within 60 days of delivery.\n\n# Shipping\n\nOrders to Alaska arrive in 6 to 9 "
        "business days.\n\n# Hours\n\nThe Seattle store opens at 9 am.\n\n# Rentals\n\nThe gear rental deposit is $50.\n",
        encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "When does the Seattle store open?"}, {"role": "assistant", "content": "9 am"}]}) + "\n",
        encoding="utf-8")
    return load_recipe(None, [
        f"data.sources=[{{path: {tmp_path / 'guide.md'}, document: {{emit: qa, qa_from: [], teacher: {teacher}}}}},"
        f" {{path: {tmp_path / 'eval.jsonl'}, split: eval}}]", f"data.prepared_dir={tmp_path / 'out'}"])


def test_teacher_pairs_are_grounded_deduplicated_and_never_twin_eval(tmp_path):
    replies = {
        "Returns": "Q: How long can I return a tent?\nA: Within 60 days of delivery.",          # kept
        "Shipping": "Q: How long does shipping to Alaska take?\nA: About two weeks by boat.",    # not grounded
        "Hours": "Q: When does the Seattle store open?\nA: At 9 am.",                            # twin of the eval row
        "Rentals": "The deposit is fifty dollars.",                                              # unparseable
    }
    calls = []

    def teacher(model_dir, convs, max_new_tokens, batch_size):
        calls.append((model_dir, len(convs), max_new_tokens, batch_size))
        return [next(v for k, v in replies.items() if f"# {k}" in c[0]["content"]) for c in convs]

    prepared = run(_teacher_recipe(tmp_path, "teacher-dir"), teacher=teacher)
    assert calls == [("teacher-dir", 4, 96, 8)]
    train = prepared.records("train")
    assert [(r["messages"][0]["content"], r["messages"][1]["content"], r["meta"]) for r in train] == [
        ("How long can I return a tent?", "Within 60 days of delivery.", {"page": 1, "section": "Returns", "qa": "teacher"})]
    report = prepared.report()
    assert report["steps"][0]["documents"]["qa_pairs"] == {
        "teacher": 2, "rejected: answer not grounded (< 80% of its words in the chunk)": 1,
        "rejected: no 'Q: / A:' in the reply": 1}
    twin = next(s for s in report["steps"] if s["step"] == "documents.teacher_vs_eval")
    assert twin["dropped"] == {"teacher question: exact twin of an eval/test question": 1}
    assert [r["messages"][0]["content"] for r in prepared.records("eval")] == ["When does the Seattle store open?"]


def test_teacher_model_loaded_by_prepare_and_required(tmp_path, llama_dir, capsys):
    from tailor.cli import main
    from tailor.models.teacher import teacher_for

    recipe = _teacher_recipe(tmp_path, str(llama_dir))
    with pytest.raises(TailorError, match="no teacher model was loaded"):
        run(recipe)
    teacher = teacher_for(recipe.data)
    replies = teacher(str(llama_dir), [[{"role": "user", "content": "Q?"}]] * 3, 4, 2)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    # through the CLI: a random tiny model writes no grounded pair, and every chunk is accounted for
    import yaml

    data = recipe.data.model_dump(mode="json", exclude_defaults=True)
    data["sources"][0]["document"]["teacher_max_new_tokens"] = 8
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
    assert main(["data", "prepare", str(path)]) == 0
    counts = json.loads((tmp_path / "out" / "report.json").read_text())["steps"][0]["documents"]["qa_pairs"]
    assert sum(counts.values()) == 4  # one reply per chunk, each kept or rejected under a reason
    assert teacher_for(load_recipe(None, []).data) is None


def test_web_ui_uploads_documents_checked_by_the_same_reader(tmp_path):
    import asyncio

    from tailor.ui.roots import check_data_file, save_upload

    def upload(folder, name, data, limit):
        async def chunks():
            yield data
        return asyncio.run(save_upload(chunks(), name, folder, limit))

    saved = upload(tmp_path / "up", "Guide.md", "# Guide\n\nTents: 60 days.\n".encode(), limit=10_000)
    assert saved.name == "Guide.md"
    assert check_data_file(saved)["first"][0]["text"] == "# Guide\n\nTents: 60 days."
    with pytest.raises(TailorError, match="the PDF cannot be read") as err:
        upload(tmp_path / "up", "broken.pdf", b"%PDF-1.4\nnot a body", limit=10_000)
    assert "broken.pdf" in err.value.message() and ".upload-" not in err.value.message()
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == ["Guide.md"]


def test_pdf_list_items_with_drawn_bullets(tmp_path):
    # browsers print list bullets as small filled shapes left of the text, not as characters
    ops = "\n".join(["BT /F1 11 Tf 50 780 Td (Pack these:) Tj ET",
                     "60 763 3 3 re f", "BT /F1 11 Tf 70 760 Td (a tent) Tj ET",
                     "60 743 3 3 re f", "BT /F1 11 Tf 70 740 Td (a stove) Tj ET",
                     "BT /F1 11 Tf 50 700 Td (- a lamp, marked by a character) Tj ET"])
    doc = read_document(write_pdf(tmp_path / "list.pdf", [ops]), DocumentConfig())
    assert [b.markdown() for b in doc.blocks] == ["Pack these:", "- a tent", "- a stove", "- a lamp, marked by a character"]
