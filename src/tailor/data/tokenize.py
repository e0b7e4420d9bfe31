"""Tokenize prepared records (in parallel with `datasets.map`) and measure what the model will see."""

from __future__ import annotations

import json

from tailor.config import DataConfig


def _encode_batch(batch: dict, tokenizer, max_length: int, system_prompt: str | None) -> dict:
    from tailor.data.templates import encode_conversation

    out = {"input_ids": [], "labels": [], "source": [], "n_tokens": [], "n_loss": [], "truncated": [], "status": []}
    eos = tokenizer.eos_token_id
    for raw in batch["record"]:
        rec = json.loads(raw)
        ids = labels = None
        truncated, status = False, "ok"
        if "messages" in rec:
            msgs = rec["messages"]
            if system_prompt and msgs and msgs[0]["role"] != "system":
                msgs = [{"role": "system", "content": system_prompt}, *msgs]
            full = encode_conversation(tokenizer, msgs, max_length)
            if full is None:
                status = "no loss token within data.max_length"
            else:
                ids, labels, truncated = full["input_ids"], full["labels"], full["truncated"]
        elif isinstance(rec.get("text"), str) and rec.get("label") is None:
            # Pretraining text is kept whole: training cuts it into data.max_length blocks, losing nothing.
            ids = tokenizer(rec["text"], add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
            labels = list(ids)
        else:
            status = "not tokenized (classification or preference rows are kept as records)"
        out["source"].append(str(rec.get("source") or ""))
        out["input_ids"].append(ids or [])
        out["labels"].append(labels or [])
        out["n_tokens"].append(len(ids or []))
        out["n_loss"].append(sum(1 for x in labels or [] if x != -100))
        out["truncated"].append(truncated)
        out["status"].append(status)
    return out


def tokenize_split(records: list[dict], tokenizer, data: DataConfig, num_proc: int = 1):
    """(Dataset of input_ids/labels, statistics) for chat and text records; None when nothing was tokenizable."""
    from datasets import Dataset

    raw = Dataset.from_dict({"record": [json.dumps(r, ensure_ascii=False) for r in records]})
    enc = raw.map(_encode_batch, batched=True, batch_size=256, remove_columns=["record"],
                  num_proc=num_proc if num_proc > 1 and len(records) >= 512 else None,
                  fn_kwargs={"tokenizer": tokenizer, "max_length": data.max_length, "system_prompt": data.system_prompt},
                  desc="tokenizing")
    status = enc["status"]
    lengths = enc["n_tokens"]
    keep = [i for i, s in enumerate(status) if s == "ok"]
    skipped: dict[str, int] = {}
    for s in status:
        if s != "ok":
            skipped[s] = skipped.get(s, 0) + 1
    stats = {
        "rows": len(records),
        "tokenized": len(keep),
        "not_tokenized": skipped,
        "tokens": int(sum(lengths[i] for i in keep)),
        "loss_tokens": int(sum(enc["n_loss"][i] for i in keep)),
        "truncated": int(sum(1 for i in keep if enc["truncated"][i])),
        **length_summary([lengths[i] for i in keep]),
    }
    stats["truncated_share"] = round(stats["truncated"] / max(len(keep), 1), 4)
    if not keep:
        return None, stats
    ds = enc.select(keep).remove_columns(["n_tokens", "n_loss", "truncated", "status"])
    return ds, stats


def length_summary(lengths: list[int]) -> dict:
    """Mean, median, 95th percentile and maximum of token lengths."""
    if not lengths:
        return {"length_mean": 0, "length_p50": 0, "length_p95": 0, "length_max": 0}
    s = sorted(lengths)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"length_mean": round(sum(s) / len(s), 1), "length_p50": pick(0.5), "length_p95": pick(0.95), "length_max": s[-1]}
