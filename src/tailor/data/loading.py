"""Read the files users have into canonical records: {"messages": [...]} or {"text": ...}.

Every row read is either kept or counted under a reason in a `LoadReport`; nothing is dropped
silently. Formats are detected per record (OpenAI messages, sharegpt, alpaca, raw text).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tailor.errors import TailorError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "bot": "assistant", "model": "assistant"}
SUPPORTED = (".jsonl", ".json", ".txt")


@dataclass
class LoadReport:
    """What happened to every row: how many were kept and why the others were skipped."""

    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # reason -> first place it happened

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)

    def summary(self) -> str:
        parts = [f"{self.read} rows read, {self.kept} kept"]
        parts += [f"{n} skipped: {r} (first at {self.examples[r]})" for r, n in self.skipped.most_common()]
        return "; ".join(parts)


def iter_rows(path: Path) -> Iterator[tuple[object, str]]:
    """Yield (row, 'file:line') from a .jsonl, .json or .txt file."""
    if not path.is_file():
        raise TailorError(f"data file not found: {path}", fix="check the path in data.train / data.eval / eval.data")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line), f"{path}:{n}"
                except json.JSONDecodeError as exc:
                    yield _BadJSON(str(exc)), f"{path}:{n}"
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TailorError(f"not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}:{exc.colno}",
                              fix="fix the JSON, or use .jsonl with one record per line") from None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        for n, row in enumerate(data):
            yield row, f"{path}[{n}]"
    elif suffix == ".txt":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                yield {"text": line.rstrip("\n")}, f"{path}:{n}"
    else:
        raise TailorError(f"unsupported data file type '{suffix}'", where=str(path),
                          fix=f"use one of {', '.join(SUPPORTED)}")


class _BadJSON(str):
    pass


def to_record(row: object, fmt: str = "auto", text_field: str = "text") -> dict | str:
    """Canonical record, or a string saying why the row cannot be used."""
    if isinstance(row, _BadJSON):
        return "invalid JSON"
    if not isinstance(row, dict):
        return "row is not a JSON object"
    if fmt in ("auto", "messages") and isinstance(row.get("messages"), list):
        msgs = [{"role": m.get("role"), "content": m.get("content")} for m in row["messages"] if isinstance(m, dict)]
        return _check(msgs, row)
    if fmt in ("auto", "sharegpt") and isinstance(row.get("conversations"), list):
        msgs = []
        if isinstance(row.get("system"), str) and row["system"]:
            msgs.append({"role": "system", "content": row["system"]})
        for m in row["conversations"]:
            if not isinstance(m, dict):
                return "sharegpt turn is not an object"
            role = SHAREGPT_ROLES.get(str(m.get("from", m.get("role", ""))).lower())
            if role is None:
                return f"unknown sharegpt role '{m.get('from')}'"
            msgs.append({"role": role, "content": m.get("value", m.get("content"))})
        return _check(msgs, row)
    if fmt in ("auto", "alpaca") and "instruction" in row and "output" in row:
        msgs = []
        if isinstance(row.get("system"), str) and row["system"]:
            msgs.append({"role": "system", "content": row["system"]})
        for turn in row.get("history") or []:
            if isinstance(turn, (list, tuple)) and len(turn) == 2:
                msgs += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
        prompt = str(row["instruction"] or "")
        if row.get("input"):
            prompt = f"{prompt}\n{row['input']}" if prompt else str(row["input"])
        msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
        return _check(msgs, row)
    if fmt in ("auto", "text") and text_field in row:
        text = row[text_field]
        if not isinstance(text, str):
            return f"'{text_field}' is not a string"
        return {"text": text} if text.strip() else "empty text"
    return f"no usable fields for format '{fmt}' (keys: {', '.join(sorted(map(str, row)))[:80]})"


def _check(msgs: list[dict], row: dict) -> dict | str:
    for m in msgs:
        if m["role"] not in ("system", "user", "assistant"):
            return f"unknown role '{m['role']}'"
        if not isinstance(m["content"], str):
            return "message content is not a string"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
        return "no assistant answer"
    record = {"messages": msgs}
    for key in ("answer", "fact_id", "lang", "label"):
        if key in row:
            record[key] = row[key]
    return record


def load_records(paths: list[str | Path], fmt: str = "auto", text_field: str = "text",
                 report: LoadReport | None = None) -> list[dict]:
    """Read every file; return canonical records and fill `report` with what was skipped and why."""
    report = report if report is not None else LoadReport()
    records: list[dict] = []
    for p in paths:
        for row, where in iter_rows(Path(p)):
            report.read += 1
            rec = to_record(row, fmt, text_field)
            if isinstance(rec, str):
                report.skip(rec, where)
            else:
                report.kept += 1
                records.append(rec)
    return records


def require_rows(records: list, report: LoadReport, paths: list, what: str) -> None:
    """A dataset with no usable rows is an error that says why the rows were rejected."""
    if records:
        return
    reasons = "; ".join(f"{n}x {r} (e.g. {report.examples[r]})" for r, n in report.skipped.most_common(3)) or "the files are empty"
    raise TailorError(f"no usable {what} rows in {', '.join(map(str, paths)) or '(no files given)'}: {reasons}",
                      fix="check the file format (chat `messages`, alpaca, sharegpt or `text`) and data.format")
