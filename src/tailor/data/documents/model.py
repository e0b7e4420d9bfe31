"""What every document reader returns: pages of blocks (headings, paragraphs, list items, tables) in reading order."""

from __future__ import annotations

from dataclasses import dataclass, field

from tailor.errors import TailorError


class Unreadable(TailorError):
    """A file that cannot be read (encrypted, damaged): a counted skip with data.on_error=skip."""


@dataclass
class Block:
    """One structural unit. `text` holds a heading's, paragraph's or list item's text; a table holds `rows`."""

    kind: str                      # "heading" | "paragraph" | "list" | "table"
    text: str = ""
    page: int | None = None        # 1-based page; None where the format has no pages (HTML, Markdown)
    level: int = 0                 # heading level (1 = top)
    rows: list[list[str]] = field(default_factory=list)

    def markdown(self) -> str:
        """Markdown-like text: '#' headings, '- ' list items, pipe tables."""
        if self.kind == "heading":
            return "#" * max(1, min(self.level, 6)) + " " + self.text
        if self.kind == "list":
            return "- " + self.text
        if self.kind == "table":
            return table_markdown(self.rows)
        return self.text


def table_markdown(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    cells = [[(c or "").replace("\n", " ").replace("|", "\\|").strip() for c in r] + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


@dataclass
class PageInfo:
    """What reading one page found: how it was read, OCR confidence (0-100, mean word confidence), emptiness."""

    number: int
    method: str = "text"           # "text" | "ocr" | "skipped"
    confidence: float | None = None
    empty: bool = False
    low_confidence: bool = False
    note: str = ""


@dataclass
class Document:
    path: str
    blocks: list[Block] = field(default_factory=list)
    pages: list[PageInfo] = field(default_factory=list)
    boilerplate_lines: int = 0     # lines removed as repeated headers/footers
