"""The rows TRL's preference and RL trainers read, made by the same chat-template code as SFT.

    preference_rows   {"prompt": [...], "chosen", "rejected"}  -> {"prompt_ids", "chosen_ids", "rejected_ids"}
    kto_rows          {"prompt": [...], "completion", "label"} -> {"prompt_ids", "completion_ids", "label"}
    grpo_rows         a conversation ending with a user turn (or one whose last assistant turn is the reference)
                      -> {"prompt": [messages], "reference": str | None}

An answer's tokens are `tailor.data.templates.encode_conversation` of prompt + that answer, split where the
SFT loss mask begins: so the tokens a preference run trains on are exactly those an SFT run would train on for
the same conversation (end-of-turn included). Every row left out is counted in the LoadReport with its reason.
"""

from __future__ import annotations

from tailor.data.loading import LoadReport
from tailor.data.records import field_value, record_kind
from tailor.data.templates import encode_conversation
from tailor.data.tokenize import IGNORE, with_system_prompt

PROMPT_TOO_LONG = "prompt fills data.max_length (no answer token left)"


def encode_answer(tokenizer, prompt: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of prompt + one assistant answer: the SFT encoding cut where its loss mask begins
    (the answer ends with the template's end-of-turn; anything the template adds after it is left out)."""
    enc = encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": answer}], None)
    if enc is None:
        return [], []
    labelled = [i for i, lab in enumerate(enc["labels"]) if lab != IGNORE]
    first, last = labelled[0], labelled[-1]
    return enc["input_ids"][:first], enc["input_ids"][first:last + 1]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def preference_rows(records: list[dict], tokenizer, max_length: int, report: LoadReport,
                    system_prompt: str | None = None) -> list[dict]:
    """DPO/ORPO/SimPO rows from preference records; other records and prompts longer than max_length are counted."""
    rows = []
    for rec in records:
        where = rec.get("where", "?")
        if record_kind(rec) != "preference":
            report.skip(f"not a preference pair ({record_kind(rec)} row)", where)
            continue
        prompt = with_system_prompt(rec["prompt"], system_prompt)
        p_c, chosen = encode_answer(tokenizer, prompt, rec["chosen"])
        p_r, rejected = encode_answer(tokenizer, prompt, rec["rejected"])
        # Token merges across the prompt/answer boundary can differ between the two answers: the prompt is the
        # longest prefix both share, the rest belongs to each answer (as TRL does).
        n = _common_prefix(p_c, p_r)
        chosen, rejected = p_c[n:] + chosen, p_r[n:] + rejected
        if not chosen or not rejected:
            report.skip("an answer renders to no tokens", where)
            continue
        if chosen == rejected:
            report.skip("identical chosen and rejected tokens", where)
            continue
        if n >= max_length:
            report.skip(PROMPT_TOO_LONG, where)
            continue
        rows.append({"prompt_ids": p_c[:n], "chosen_ids": chosen, "rejected_ids": rejected})
        report.kept += 1
    return rows


def kto_rows(records: list[dict], tokenizer, max_length: int, report: LoadReport,
             system_prompt: str | None = None) -> list[dict]:
    """KTO rows from labelled records (`label` true = a desirable answer); preference pairs give one row each way."""
    rows = []
    for rec in records:
        where, kind = rec.get("where", "?"), record_kind(rec)
        if kind == "kto":
            answers = [(rec["completion"], bool(rec["label"]))]
        elif kind == "preference":  # a pair is a thumbs-up and a thumbs-down on the same prompt
            answers = [(rec["chosen"], True), (rec["rejected"], False)]
        else:
            report.skip(f"not a labelled answer ({kind} row)", where)
            continue
        prompt = with_system_prompt(rec["prompt"], system_prompt)
        for answer, label in answers:
            prompt_ids, completion = encode_answer(tokenizer, prompt, answer)
            if not completion:
                report.skip("an answer renders to no tokens", where)
            elif len(prompt_ids) >= max_length:
                report.skip(PROMPT_TOO_LONG, where)
            else:
                rows.append({"prompt_ids": prompt_ids, "completion_ids": completion, "label": label})
                report.kept += 1
    return rows


def grpo_rows(records: list[dict], report: LoadReport, reference_field: str, need_reference: bool,
              missing: str = "error", system_prompt: str | None = None) -> list[dict]:
    """GRPO prompts and their reference answers: the record's `reference_field`, else the last assistant turn
    (which is then not part of the prompt). A row without one, when a reward needs it, raises (missing='error')
    or is counted (missing='skip')."""
    from tailor.errors import TailorError

    rows = []
    for rec in records:
        where = rec.get("where", "?")
        if "messages" not in rec:
            report.skip(f"not a prompt ({record_kind(rec)} row)", where)
            continue
        messages = with_system_prompt(rec["messages"], system_prompt)
        reference = field_value(rec, reference_field)
        if messages[-1]["role"] == "assistant":
            reference = messages[-1]["content"] if reference is None else reference
            messages = messages[:-1]
        if not messages or messages[-1]["role"] not in ("user", "tool"):
            report.skip("the prompt does not end with a user turn", where)
            continue
        if reference is not None and not isinstance(reference, str):
            reference = str(reference)
        if need_reference and (reference is None or not reference.strip()):
            if missing == "error":
                raise TailorError(f"a GRPO row has no reference answer ('{reference_field}' field or a final assistant "
                                  "turn) but a reference reward is configured", where=where,
                                  fix=f"add '{reference_field}' to every row, set grpo.missing_reference=skip to leave "
                                      "such rows out, or use rewards that need no reference (format, length, language)")
            report.skip("no reference answer (grpo.missing_reference=skip)", where)
            continue
        rows.append({"prompt": messages, "reference": reference})
        report.kept += 1
    return rows
