"""Facts that changed: old rows the new data contradicts, so that `tailor refresh` can accept a policy change.

A row is superseded when the new data asks the same question (the same prompt, normalized) or about the
same fact (the same `refresh.fact_key` value, e.g. `fact_id`) and no new row gives its answer. Answers are
the rows' `answer` field where they carry one (the value `fact_accuracy` looks for), else the last
assistant reply: an old row with an `answer` is contradicted when that value differs from every new value;
an old row without one is contradicted when its reply contains none of the new values.

Superseded held-out rows leave the gate's old set (counted and listed in the report): the candidate is
then judged on the facts that did not change, where forgetting still fails the gate. Superseded training
rows leave the replay pool, so replay does not teach the old answer again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SPACE = re.compile(r"\s+")
_TRAILING = " \t\n.。!！?？,，;；:：\"'"


def norm(text: str) -> str:
    """Lower case, single spaces, no trailing punctuation: 'The window is 30 days.' == 'the window is 30 days'."""
    return _SPACE.sub(" ", str(text)).strip().strip(_TRAILING).lower()


def question_key(row: dict) -> str | None:
    """The normalized prompt of a chat row (every message before the last assistant turn); None for text rows."""
    msgs = row.get("messages")
    if not msgs or msgs[-1].get("role") != "assistant" or len(msgs) < 2:
        return None
    return "\n".join(f"{m.get('role')}: {norm(m.get('content') or '')}" for m in msgs[:-1])


def reply(row: dict) -> str | None:
    msgs = row.get("messages")
    return norm(msgs[-1].get("content") or "") if msgs and msgs[-1].get("role") == "assistant" else None


def value(row: dict) -> str | None:
    """The row's `answer` field, normalized (None when it has none)."""
    a = row.get("answer")
    return norm(a) if isinstance(a, str) and a.strip() else None


@dataclass
class NewFacts:
    """What the new data says: answers by question and fact values by fact key."""

    fact_key: str | None
    by_question: dict[str, list[tuple[str | None, str | None]]] = field(default_factory=dict)
    by_fact: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: list[dict], fact_key: str | None) -> "NewFacts":
        facts = cls(fact_key)
        for r in rows:
            q = question_key(r)
            if q is not None:
                facts.by_question.setdefault(q, []).append((value(r), reply(r)))
            f = r.get(fact_key) if fact_key else None
            if f is not None and value(r) is not None:
                facts.by_fact.setdefault(str(f), set()).add(value(r))
        return facts

    def contradiction(self, old: dict) -> str | None:
        """Why the new data contradicts this old row, or None when it does not."""
        mine, text = value(old), reply(old)
        f = old.get(self.fact_key) if self.fact_key else None
        if f is not None and str(f) in self.by_fact:
            new_values = self.by_fact[str(f)]
            agrees = mine in new_values if mine is not None else text is not None and any(v in text for v in new_values)
            if not agrees:
                return (f"{self.fact_key} {f}: {old.get('answer') if mine is not None else _short(text)!r} -> "
                        f"{' | '.join(sorted(new_values))!r}")
        q = question_key(old)
        if q is not None and q in self.by_question:
            answers = self.by_question[q]
            if not any(_agree(mine, text, nv, nt) for nv, nt in answers):
                new = answers[0][0] if answers[0][0] is not None else _short(answers[0][1])
                return f"same question: {(old.get('answer') if mine is not None else _short(text))!r} -> {new!r}"
        return None


def _agree(mine: str | None, text: str | None, new_value: str | None, new_text: str | None) -> bool:
    if mine is not None and new_value is not None:
        return mine == new_value
    if new_value is not None:
        return text is not None and new_value in text
    return text == new_text


def _short(text: str | None, n: int = 60) -> str:
    text = text or ""
    return text if len(text) <= n else text[: n - 3] + "..."


def split_superseded(old: list[dict], new: list[dict], fact_key: str | None) -> tuple[list[dict], list[dict]]:
    """(old rows the new data leaves standing, superseded rows each with a `superseded_by` reason)."""
    facts = NewFacts.of(new, fact_key)
    kept, gone = [], []
    for row in old:
        why = facts.contradiction(row)
        if why is None:
            kept.append(row)
        else:
            gone.append({**row, "superseded_by": why})
    return kept, gone
