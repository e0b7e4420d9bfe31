"""Question-answer pairs from a document's structure and from the user's templates over extracted fields.

Structure read (document.qa_from):
- faq: "Q: ... / A: ..." (also "Question:/Answer:", "问：/答：") in one block or consecutive blocks, and
  headings ending in "?" or "？" under a heading that names an FAQ, answered by the paragraph below;
- table: a table with a header row and at least one body row; the first column names the subject and every
  other non-empty column gives one pair ("What is the <column> of <subject>?" / "<subject>的<column>是多少？");
- definition: "term: definition" lines (term of at most 6 words / 12 CJK characters) outside FAQ blocks; a
  term defined differently in several places of a document ("Price: $459" on every product page) is an
  attribute of its section, and the question names the section's heading ("What is the price of <heading>?").

Every extraction is also a record of named fields (table rows: the header names in snake_case; FAQ:
question, answer; definitions: term, definition; always section, page, source) that `document.templates`
fill (tailor's template filling, `tailor.data.augment`): each template is filled from every record that
has all of its slots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

from tailor.data.documents.corpus import sections
from tailor.data.documents.model import Block

_Q = re.compile(r"^\s*(?:Q|Question|问|问题)\s*[:：.]\s*(.+)$", re.IGNORECASE | re.DOTALL)
_A = re.compile(r"^\s*(?:A|Answer|答|回答)\s*[:：.]\s*(.+)$", re.IGNORECASE | re.DOTALL)
_QA_ONE = re.compile(r"^\s*(?:Q|Question|问|问题)\s*[:：.]\s*(.+?)\s+(?:A|Answer|答|回答)\s*[:：.]\s*(.+)$",
                     re.IGNORECASE | re.DOTALL)
_DEF = re.compile(r"^\s*([^:：\n]{1,60}?)\s*[:：]\s*(\S.*)$", re.DOTALL)
_FAQ_HEAD = re.compile(r"faq|frequently asked|questions|常见问题|问答", re.IGNORECASE)
_HAN = re.compile("[\u3400-\u9fff]")
_SLUG = re.compile(r"[^\w]+", re.UNICODE)


def is_zh(text: str) -> bool:
    return bool(_HAN.search(text))


def slug(name: str) -> str:
    """A header as a template field name: lowercase, runs of non-word characters as '_'."""
    return _SLUG.sub("_", name.strip().lower()).strip("_") or "column"


@dataclass
class Extract:
    kind: str                      # faq | table | definition
    question: str | None
    answer: str | None
    fields: dict = field(default_factory=dict)
    section: str = ""
    page: int | None = None


def _table(b: Block, section: str) -> Iterator[Extract]:
    rows = b.rows
    if len(rows) < 2 or len(rows[0]) < 2:
        return
    header = rows[0]
    names = [slug(h) for h in header]
    for row in rows[1:]:
        subject = (row[0] if row else "").strip()
        if not subject:
            continue
        values = {names[j]: (row[j] if j < len(row) else "").strip() for j in range(len(names))}
        first = True
        for j in range(1, len(header)):
            value = values[names[j]]
            if not value:
                continue
            col = header[j].strip()
            q = f"{subject}的{col}是多少？" if is_zh(col + subject) else f"What is the {col.lower()} of {subject}?"
            # The record of fields rides on the row's first pair only, so a template fills once per row.
            yield Extract("table", q, value, dict(values) if first else {}, section, b.page)
            first = False
        if first:  # a row with only its subject still offers its fields to templates
            yield Extract("table", None, None, dict(values), section, b.page)


def extract(blocks: list[Block]) -> Iterator[Extract]:
    """Every pair (and record of fields) the structure offers, in document order."""
    for sec in sections(blocks):
        name = sec.name
        in_faq = any(_FAQ_HEAD.search(p) for p in sec.path)
        pending: tuple[str, int | None] | None = None  # a question waiting for its answer block
        if in_faq and sec.heading is not None and sec.heading.text.rstrip().endswith(("?", "？")):
            pending = (sec.heading.text.strip(), sec.heading.page)
        for b in sec.blocks:
            if b.kind == "table":
                pending = None
                yield from _table(b, name)
                continue
            text = b.text.strip()
            one = _QA_ONE.match(text)
            if one:
                pending = None
                q, a = one.group(1).strip(), one.group(2).strip()
                yield Extract("faq", q, a, {"question": q, "answer": a}, name, b.page)
                continue
            q = _Q.match(text)
            if q:
                pending = (q.group(1).strip(), b.page)
                continue
            a = _A.match(text)
            if pending is not None and (a or b.kind == "paragraph"):
                answer = (a.group(1) if a else text).strip()
                yield Extract("faq", pending[0], answer, {"question": pending[0], "answer": answer}, name, pending[1])
                pending = None
                continue
            pending = None
            d = _DEF.match(text)
            if d and "\n" not in d.group(1):
                term, definition = d.group(1).strip(), d.group(2).strip()
                short = len(term) <= 12 if is_zh(term) else len(term.split()) <= 6
                if short and term and definition and not term.lower().startswith(("http", "www")):
                    q = f"{term}是什么？" if is_zh(term) else f"What is {term}?"
                    yield Extract("definition", q, definition, {"term": term, "definition": definition}, name, b.page)


def _ambiguous_terms(extracts: list[Extract]) -> set[str]:
    """Terms a document defines with more than one different definition."""
    seen: dict[str, set[str]] = {}
    for ex in extracts:
        if ex.kind == "definition":
            seen.setdefault(ex.fields["term"], set()).add(ex.fields["definition"])
    return {t for t, defs in seen.items() if len(defs) > 1}


def qualified_question(term: str, heading: str) -> str:
    return f"{heading}的{term}是什么？" if is_zh(term + heading) else f"What is the {term.lower()} of {heading}?"
