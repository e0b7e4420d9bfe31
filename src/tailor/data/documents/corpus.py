"""From blocks to rows: boilerplate removal, section paths, and chunks cut by structure within a token budget."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

from tailor.data.documents.model import Block, Document

_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
_SENTENCE = re.compile(r"(?<=[.!?。！？;；])\s*")
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\u024f]+|[\u3400-\u9fff\uf900-\ufaff]|[^\sA-Za-z0-9]")
EDGE = 2  # blocks at the top and bottom of a page that may be running headers or footers


def estimate_tokens(text: str) -> int:
    """Words, CJK characters and punctuation marks: the count used when no tokenizer is given."""
    return len(_WORD.findall(text))


def _norm(text: str) -> str:
    return _SPACE.sub(" ", _DIGITS.sub("#", text)).strip().lower()


def remove_boilerplate(doc: Document, min_pages: int) -> int:
    """Drop paragraphs and list items at a page's top or bottom whose text (digits ignored, so "Page 3 of 9" matches
    "Page 4 of 9") recurs at the edge of at least half of the pages with text. Returns how many were removed."""
    by_page: dict[int, list[int]] = {}
    for i, b in enumerate(doc.blocks):
        if b.page is not None:
            by_page.setdefault(b.page, []).append(i)
    if len(by_page) < min_pages:
        return 0
    seen: Counter = Counter()
    edges: dict[int, str] = {}
    for idx in by_page.values():
        edge = set(idx[:EDGE] + idx[-EDGE:])
        keys = set()
        for i in edge:
            if doc.blocks[i].kind not in ("table", "heading"):  # a repeated title is structure, not a running header
                edges[i] = _norm(doc.blocks[i].text)
                keys.add(edges[i])
        seen.update(keys)
    common = {k for k, n in seen.items() if k and n >= max(min_pages, (len(by_page) + 1) // 2)}
    drop = {i for i, k in edges.items() if k in common}
    doc.blocks = [b for i, b in enumerate(doc.blocks) if i not in drop]
    doc.boilerplate_lines += len(drop)
    return len(drop)


@dataclass
class Section:
    path: list[str]          # heading texts from the top level down
    heading: Block | None
    blocks: list[Block]

    @property
    def name(self) -> str:
        return " > ".join(self.path)

    @property
    def page(self) -> int | None:
        pages = [b.page for b in ([self.heading] if self.heading else []) + self.blocks if b.page is not None]
        return pages[0] if pages else None


def sections(blocks: list[Block]) -> Iterator[Section]:
    """Blocks grouped under their nearest heading, each with the path of headings above it."""
    stack: list[Block] = []
    current = Section([], None, [])
    for b in blocks:
        if b.kind == "heading":
            if current.heading is not None or current.blocks:
                yield current
            while stack and stack[-1].level >= b.level:
                stack.pop()
            stack.append(b)
            current = Section([h.text for h in stack], b, [])
        else:
            current.blocks.append(b)
    if current.heading is not None or current.blocks:
        yield current


def _hard_cut(text: str, budget: int, count: Callable[[str], int]) -> list[str]:
    """A sentence over the budget, cut between words (characters for CJK) into the longest pieces that fit."""
    words = _WORD.findall(text) if text.isascii() else list(text)
    joiner = " " if text.isascii() else ""
    out, cur = [], []
    for w in words:
        if cur and count(joiner.join(cur + [w])) > budget:
            out.append(joiner.join(cur))
            cur = []
        cur.append(w)
    if cur:
        out.append(joiner.join(cur))
    return out


def _pieces(block: Block, budget: int, count: Callable[[str], int]) -> list[str]:
    """A block's text as pieces within budget: whole, else sentences (table rows), else hard cuts."""
    text = block.markdown()
    if count(text) <= budget:
        return [text]
    if block.kind == "table":  # rows under one copy of the header, as many as fit
        head, rows = text.split("\n")[:2], text.split("\n")[2:]
        units, cur = [], []
        for r in rows:
            if cur and count("\n".join(head + cur + [r])) > budget:
                units.append("\n".join(head + cur))
                cur = []
            cur.append(r)
        units.append("\n".join(head + cur))
    else:
        units = [s for s in _SENTENCE.split(text) if s.strip()]
    out: list[str] = []
    for u in units:
        out.extend([u] if count(u) <= budget else _hard_cut(u, budget, count))
    return out


@dataclass
class Chunk:
    text: str
    section: str
    page: int | None
    page_end: int | None


def chunk_document(blocks: list[Block], budget: int, count: Callable[[str], int]) -> Iterator[Chunk]:
    """Chunks of whole blocks under one section heading, each within `budget` tokens (the heading line
    included): a section is cut between blocks, a block between sentences, and a sentence only when it alone
    is over the budget."""
    for sec in sections(blocks):
        head = sec.heading.markdown() if sec.heading else ""
        room = max(1, budget - count(head) - 2) if head else budget

        def text_of(parts: list[str]) -> str:
            body = "\n\n".join(parts)
            return f"{head}\n\n{body}" if head else body

        def fits(parts: list[str]) -> bool:
            return count(text_of(parts)) <= budget

        parts: list[str] = []
        pages: list[int] = []
        for b in sec.blocks:
            for piece in _pieces(b, room, count):
                if parts and not fits(parts + [piece]):
                    yield Chunk(text_of(parts), sec.name, pages[0] if pages else sec.page, pages[-1] if pages else sec.page)
                    parts, pages = [], []
                parts.append(piece)
                if b.page is not None:
                    pages.append(b.page)
        if parts:
            yield Chunk(text_of(parts), sec.name, pages[0] if pages else sec.page, pages[-1] if pages else sec.page)
