"""How a source's documents (.pdf, .docx, .html, .md, scans) become rows: `data.sources[].document`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tailor.config.sections import InputPath, Section

QA_KINDS = ("faq", "table", "definition")


class DocumentConfig(Section):
    """Reading documents: chunks for pretraining or question-answer pairs for SFT, each row with its provenance."""

    emit: Literal["text", "qa"] = Field("text", description="text = chunks for domain pretraining; qa = question-answer conversations for SFT (from the documents' structure and document.templates).")
    chunk_tokens: int = Field(256, ge=16, description="Token budget of a text chunk (the prepare tokenizer when there is one, else words + CJK characters); a section is cut between blocks, then sentences, and mid-sentence only when one sentence is over the budget.")
    qa_from: list[Literal["faq", "table", "definition"]] = Field(default_factory=lambda: list(QA_KINDS), description="Structure that becomes QA pairs with emit=qa: FAQ (Q:/A:, 问：/答：, question headings), table rows (first column = the subject), 'term: definition' lines.")
    templates: list[str] = Field(default_factory=list, description="JSON row templates with {field} slots, filled from every extracted record that has those fields (table rows: the header names in snake_case; term/definition lines: term, definition; FAQ: question, answer; always section, page, source); slot filters as in data.augment.fill.templates ({category|plural}, {category|a}).")
    boilerplate: bool = Field(True, description="Remove lines (headers, footers; digits ignored) repeated at the top or bottom of most pages of a document; counted in the report.")
    boilerplate_min_pages: int = Field(3, ge=2, description="A document needs at least this many pages before repeated lines count as boilerplate.")
    ocr: bool = Field(True, description="Read images and image-only PDF pages with Tesseract (off = such pages are counted skips).")
    ocr_languages: str = Field("eng+chi_sim", description="Tesseract language packs, '+'-joined (Debian: tesseract-ocr-eng, tesseract-ocr-chi-sim).")
    ocr_dpi: int = Field(300, ge=72, le=1200, description="Resolution at which image-only PDF pages are rendered for OCR.")
    ocr_min_confidence: float = Field(60.0, ge=0, le=100, description="Pages whose mean Tesseract word confidence is below this are listed as low-confidence in the report.")
    ocr_drop_low: bool = Field(False, description="Drop low-confidence OCR pages (counted) instead of only listing them.")
    teacher: InputPath | None = Field(None, description="Local instruct model directory that writes one question-answer pair per text chunk with emit=qa (loaded by `tailor data prepare`; batched through tailor's generation path). Kept only when grounded in the chunk, de-duplicated, and never twinned with an eval/test question.")
    teacher_min_overlap: float = Field(0.8, gt=0, le=1, description="Grounding test: the share of the answer's words (Latin words and numbers, lowercased; each CJK character a word) that must occur in its chunk.")
    teacher_max_new_tokens: int = Field(96, ge=8, description="Tokens the teacher may write per pair.")
    teacher_batch_size: int = Field(8, ge=1, description="Chunks per generation batch.")
