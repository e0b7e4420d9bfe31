"""Turn canonical records into tokenized training datasets (pretraining blocks or masked SFT turns)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from datasets import Dataset

from tailor.data.loading import LoadReport
from tailor.data.templates import encode_conversation


def record_text(rec: dict) -> str:
    """Plain text of a record for pretraining: raw text, or the conversation's contents joined."""
    if "text" in rec:
        return rec["text"]
    return "\n".join(m["content"] for m in rec["messages"])


def pretrain_dataset(records: list[dict], tokenizer, block_size: int, packing: bool = True,
                     report: LoadReport | None = None) -> Dataset:
    """Loss on every token. Packing concatenates documents (each ended by EOS) into full blocks."""
    eos = tokenizer.eos_token_id
    encoded = tokenizer([record_text(r) for r in records], add_special_tokens=False)["input_ids"]
    rows: list[list[int]] = []
    if packing:
        stream: list[int] = []
        for ids in encoded:
            stream.extend(ids + ([eos] if eos is not None else []))
        # The tail shorter than a block is dropped; it is counted, not silently lost.
        n = len(stream) // block_size
        rows = [stream[i * block_size:(i + 1) * block_size] for i in range(n)]
        if report is not None and len(stream) % block_size:
            report.skip(f"{len(stream) % block_size} tail tokens shorter than one block", "end of packed stream")
    else:
        for ids in encoded:
            ids = ids + ([eos] if eos is not None else [])
            if report is not None and len(ids) > block_size:
                report.skip("truncated to data.max_length (kept)", "pretraining text")
            rows.append(ids[:block_size])
    return Dataset.from_dict({"input_ids": rows, "labels": rows})


def sft_dataset(records: list[dict], tokenizer, max_length: int, system_prompt: str | None = None,
                report: LoadReport | None = None) -> Dataset:
    """Loss on assistant turns only (end-of-turn included), via the chat template."""
    ids, labels = [], []
    for n, rec in enumerate(records):
        messages = rec["messages"]
        if system_prompt and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}, *messages]
        enc = encode_conversation(tokenizer, messages, max_length)
        if enc is None:
            if report is not None:
                report.skip("no assistant token within data.max_length", f"record {n}")
            continue
        if enc["truncated"] and report is not None:
            report.skip("truncated to data.max_length (kept)", f"record {n}")
        ids.append(enc["input_ids"])
        labels.append(enc["labels"])
    return Dataset.from_dict({"input_ids": ids, "labels": labels})


def split_validation(records: list[dict], ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out a seeded random share of records for validation."""
    if ratio <= 0 or len(records) < 2:
        return records, []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(len(records) * ratio))
    val = set(order[:n_val])
    return [r for i, r in enumerate(records) if i not in val], [records[i] for i in sorted(val)]


@dataclass
class PadCollator:
    """Right-pad input_ids with the pad id and labels with -100; attention mask marks real tokens."""

    pad_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
