"""The canonical record every data step reads and writes, and the accounting of what each step did.

A record is a plain dict with one of these shapes (plus bookkeeping keys):

- chat / SFT:        {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}
- raw text:          {"text": str}
- classification:    {"text": str, "label": str|int}
- preference pair:   {"prompt": [messages...], "chosen": str, "rejected": str}
- KTO (unpaired):     {"prompt": [messages...], "completion": str, "label": bool}

Bookkeeping keys: "meta" (the row's other columns, used by split.group_by / time_column /
stratify_by), "where" ("file:line", for errors and reports), "source" (source name),
"origin" ("original", or the augmentation that made the row).

Every step reports through a `StepReport`: rows in, rows out, rows changed, and each dropped row
counted under a reason with the first place it happened, so `PrepareReport.check()` can prove that
every input row is accounted for.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

TEXT_KEYS = ("text", "chosen", "rejected", "completion")


def field_value(rec: dict, key: str):
    """A record's value for `key`: a top-level field, else one of the row's other columns (meta)."""
    if key in rec:
        return rec[key]
    return (rec.get("meta") or {}).get(key)


def iter_texts(rec: dict, prompt_only: bool = False) -> Iterator[str]:
    """Every text of a record (message contents, text, chosen/rejected).

    prompt_only: only what the user wrote (user turns and instructions), never answers.
    """
    for key in ("messages", "prompt"):
        for m in rec.get(key) or []:
            if not prompt_only or m["role"] == "user":
                yield m["content"]
    if rec.get("label") is not None or not prompt_only:
        # classification text is the input; for plain text records it is everything
        if isinstance(rec.get("text"), str):
            yield rec["text"]
    if not prompt_only:
        for key in ("chosen", "rejected", "completion"):
            if isinstance(rec.get(key), str):
                yield rec[key]


def map_texts(rec: dict, fn: Callable[[str], str], prompt_only: bool = False) -> dict:
    """A copy of the record with `fn` applied to every text `iter_texts` would yield."""
    out = dict(rec)
    for key in ("messages", "prompt"):
        if rec.get(key):
            out[key] = [{**m, "content": fn(m["content"])} if (not prompt_only or m["role"] == "user") else m
                        for m in rec[key]]
    if isinstance(rec.get("text"), str) and (rec.get("label") is not None or not prompt_only):
        out["text"] = fn(rec["text"])
    if not prompt_only:
        for key in ("chosen", "rejected", "completion"):
            if isinstance(rec.get(key), str):
                out[key] = fn(rec[key])
    return out


def record_text(rec: dict) -> str:
    """All text of a record joined by newlines (what dedup hashes and length filters measure)."""
    return "\n".join(iter_texts(rec))


def record_kind(rec: dict) -> str:
    if "prompt" in rec and "chosen" in rec:
        return "preference"
    if "prompt" in rec and "completion" in rec:
        return "kto"
    if "messages" in rec:
        return "chat"
    if "label" in rec and rec.get("label") is not None:
        return "classification"
    return "text"


@dataclass
class StepReport:
    """What one step did: rows in and out, rows it changed, rows it dropped by reason."""

    name: str
    n_in: int = 0
    n_out: int = 0
    changed: int = 0
    added: int = 0            # rows a step created (augmentation); not input rows
    dropped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # reason -> first "where" it happened
    extra: dict = field(default_factory=dict)     # step-specific accounting (documents: pages, OCR, QA pairs)

    def drop(self, reason: str, where: str | None = None) -> None:
        self.dropped[reason] += 1
        if where:
            self.examples.setdefault(reason, where)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict:
        out = {"step": self.name, "in": self.n_in, "out": self.n_out, "changed": self.changed, "added": self.added,
               "dropped": dict(self.dropped.most_common()), "first_seen": self.examples}
        return {**out, **self.extra} if self.extra else out

    def line(self) -> str:
        parts = [f"{self.name}: {self.n_in} in, {self.n_out} out"]
        if self.changed:
            parts.append(f"{self.changed} changed")
        if self.added:
            parts.append(f"{self.added} added")
        parts += [f"{n} dropped: {r} (first at {self.examples.get(r, '?')})" for r, n in self.dropped.most_common()]
        return "; ".join(parts)


@dataclass
class PrepareReport:
    """The accounting of a whole `tailor data prepare` run."""

    steps: list[StepReport] = field(default_factory=list)
    splits: dict = field(default_factory=dict)   # split name -> rows written
    extra: dict = field(default_factory=dict)    # token statistics, cache key, timings

    def step(self, name: str) -> StepReport:
        rep = StepReport(name)
        self.steps.append(rep)
        return rep

    @property
    def rows_read(self) -> int:
        return sum(s.n_in for s in self.steps if s.name.startswith("load"))

    def check(self) -> None:
        """Every row read is either in a split or dropped under a reason (augmented rows counted apart)."""
        dropped = sum(s.n_dropped for s in self.steps)
        added = sum(s.added for s in self.steps)
        written = sum(self.splits.values())
        if self.rows_read != dropped + written - added:
            raise AssertionError(f"accounting broken: {self.rows_read} read != {dropped} dropped + {written} written"
                                 f" - {added} added")

    def to_dict(self) -> dict:
        return {"rows_read": self.rows_read, "splits": self.splits, "steps": [s.to_dict() for s in self.steps], **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        lines = [f"rows read: {self.rows_read}"]
        for s in self.steps:
            lines.append(f"  {s.line()}")
            lines += [f"    {line}" for line in _document_lines(s.extra.get("documents"))]
        lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        for split, t in (self.extra.get("tokens") or {}).items():
            lines.append(f"tokens {split}: {t['tokenized']} rows, {t['tokens']} tokens ({t['loss_tokens']} carry loss), "
                         f"mean {t['length_mean']}, p95 {t['length_p95']}, max {t['length_max']}, {t['truncated']} truncated")
            lines += [f"  {n} rows {reason}" for reason, n in t["not_tokenized"].items()]
        return "\n".join(lines)


def _document_lines(stats: dict | None) -> list[str]:
    """The documents part of a load step: per format pages, rows and speed; QA pairs by method; OCR pages."""
    if not stats:
        return []
    lines = []
    for fmt, s in stats.items():
        if fmt in ("qa_pairs", "ocr"):
            continue
        rate = f", {s['pages'] / s['seconds']:.1f} pages/s" if s["seconds"] else ""
        lines.append(f"{fmt}: {s['files']} files, {s['pages']} pages ({s['ocr_pages']} OCR, {s['empty_pages']} empty, "
                     f"{s['skipped_pages']} skipped), {s['boilerplate_removed']} boilerplate lines removed, "
                     f"{s['rows']} rows{rate}")
    if stats.get("qa_pairs"):
        lines.append("QA pairs: " + ", ".join(f"{k} {v}" for k, v in stats["qa_pairs"].items()))
    for p in stats.get("ocr", []):
        flag = " LOW" + (" (dropped)" if p["dropped"] else "") if p["low"] else ""
        lines.append(f"OCR {p['file']} page {p['page']}: confidence {p['confidence']}{flag}")
    return lines
