"""Robustness: ask the same generation set again with noisy questions and report how much the scores drop.

Only the last user turn (the question) changes; references and facts stay, so a drop means the
model's answer depends on surface form. Noise kinds:

- typo: character typos (swap with the next character, delete, double, or replace a Latin letter)
  at `eval.robustness_rate` of the letters; digits are never touched, so the question keeps its facts;
- eda: one EDA operation per question (`tailor.data.augment.eda_text`: synonym, insert, swap or
  delete over the built-in bilingual dictionary) touching `eval.robustness_rate` of the words;
- template: the question wrapped in a polite paraphrase ("Quick question: ...", "请问，...").

Every draw comes from a generator seeded by eval.seed, the noise kind and the row index.
"""

from __future__ import annotations

import random
import re
import string

from tailor.config import EvalConfig
from tailor.evaluation import metrics as M
from tailor.evaluation.generation import answer, score
from tailor.models.grammar import load_schema

KEYS = ("fact_accuracy", "normalized_exact_match", "token_f1", "rougeL")
_TEMPLATES = {
    "en": ("Quick question: {q}", "{q} Thanks in advance!", "Hi there, {q}", "Could you help me with this? {q}"),
    "zh": ("请问，{q}", "{q}谢谢！", "你好，{q}", "想问一下：{q}"),
}


def typo(text: str, rate: float, rng: random.Random) -> str:
    """Character typos at `rate` of the letters (at least one); digits and spaces are never touched."""
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if not letters:
        return text
    chars = list(text)
    n = max(1, int(rate * len(letters) + 0.5))
    for i in sorted(rng.sample(letters, min(n, len(letters))), reverse=True):
        ops = ["delete", "double"]
        if i + 1 < len(chars) and chars[i + 1].isalpha() and chars[i + 1] != chars[i]:
            ops.append("swap")
        if chars[i] in string.ascii_letters:
            ops.append("replace")
        op = rng.choice(ops)
        if op == "delete" and len(letters) > 1:
            del chars[i]
        elif op == "swap":
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == "replace":
            new = rng.choice([c for c in string.ascii_lowercase if c != chars[i].lower()])
            chars[i] = new.upper() if chars[i].isupper() else new
        else:
            chars.insert(i, chars[i])
    return "".join(chars)


def _synonym_table():
    from tailor.data.synonyms import CJK_CHARS, merged_synonyms

    table = merged_synonyms()
    run = re.compile(f"[{CJK_CHARS}]+")
    return table, max((len(k) for k in table if run.fullmatch(k)), default=1)


def perturb(text: str, kind: str, rate: float, rng: random.Random, table=None) -> str:
    """One noisy version of a question."""
    if kind == "typo":
        return typo(text, rate, rng)
    if kind == "eda":
        from tailor.data.augment import eda_text

        table, max_cjk = table or _synonym_table()
        return eda_text(text, rng.choice(["synonym", "insert", "swap", "delete"]), rate, rng, table, max_cjk)
    if kind == "template":
        return rng.choice(_TEMPLATES["zh" if M.has_cjk(text) else "en"]).replace("{q}", text)
    raise ValueError(f"unknown noise kind {kind!r}")


def _noisy(record: dict, kind: str, rate: float, rng: random.Random, table) -> dict:
    msgs = [dict(m) for m in record["messages"]]
    last_user = max((i for i, m in enumerate(msgs[:-1]) if m["role"] == "user"), default=None)
    if last_user is not None:
        msgs[last_user]["content"] = perturb(msgs[last_user]["content"], kind, rate, rng, table)
    return {**record, "messages": msgs}


def evaluate(model, tokenizer, records: list[dict], clean: dict, examples: list[dict], cfg: EvalConfig) -> dict:
    """Scores under each noise kind and the drop from the clean scores; adds each example's noisy run to `examples`."""
    table = _synonym_table() if "eda" in cfg.robustness_noise else None
    summary: dict = {}
    for kind in cfg.robustness_noise:
        noisy = [_noisy(r, kind, cfg.robustness_rate, random.Random(f"{cfg.seed}:robustness:{kind}:{i}"), table)
                 for i, r in enumerate(records)]
        schema = load_schema(cfg.json_schema) if cfg.json_schema else None  # noisy questions, same constraint
        preds = answer(model, tokenizer, [r["messages"] for r in noisy], cfg, schema)
        metrics, rows = score(noisy, preds, tokenizer, tuple(cfg.refusal_patterns), schema)
        changed = sum(a["messages"] != b["messages"] for a, b in zip(records, noisy))
        out = {"changed_questions": changed}
        for key in KEYS:
            if key in metrics and key in clean:
                out[key] = metrics[key]
                out[f"drop/{key}"] = clean[key] - metrics[key]
        summary[kind] = out
        for ex, row in zip(examples, rows):
            ex.setdefault("robustness", {})[kind] = {k: row[k] for k in ("prompt", "prediction", *KEYS) if k in row}
    for key in KEYS:
        drops = [summary[kind][f"drop/{key}"] for kind in cfg.robustness_noise if f"drop/{key}" in summary[kind]]
        if drops:
            summary[f"mean_drop/{key}"] = sum(drops) / len(drops)
    return summary
