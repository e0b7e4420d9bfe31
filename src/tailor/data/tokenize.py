"""The one path from canonical records to tokens, and what each objective makes of them.

`encode_record` is the only place a record becomes tokens: a conversation goes through the chat
template (loss on assistant turns, end-of-turn included; `data.system_prompt` is added to
conversations that have none), a text record becomes its tokens and EOS (loss on every token).
Nothing is cut here; what one training sequence may hold is the objective's business:

- `sft_examples`: conversations cut to `max_length` (counted as kept), a conversation with no
  assistant token within it dropped (counted), rows that are not conversations skipped (counted).
- `pretrain_blocks`: with packing, documents are concatenated and cut into full `max_length`
  blocks (a tail shorter than a block is counted, not trained on; a stream shorter than one
  block stays one short row); without packing, each document is cut into consecutive blocks of
  `max_length` tokens, the last one shorter, so no text is lost and no block spans two documents.

`tokenize_split` runs `encode_record` over a split in parallel (`datasets.map`) and measures it:
`tailor data prepare` writes its output, and training reads that output for every kind of input.
`sft_dataset` / `pretrain_dataset` compose the same functions for records already in memory.
"""

from __future__ import annotations

import json

from tailor.data.images import IMAGE_TOKENS_CUT
from tailor.data.loading import LoadReport
from tailor.data.templates import encode_conversation

IGNORE = -100
NOT_TOKENIZED = "not tokenized (classification, preference and KTO rows are kept as records)"
NO_LOSS_TOKEN = "no assistant token in the conversation"
COLUMNS = ("input_ids", "labels", "chat", "source", "where", "images")


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """The conversation with `system_prompt` as its first message, unless it already has a system message."""
    if system_prompt and messages and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _is_text(rec: dict) -> bool:
    return "messages" not in rec and isinstance(rec.get("text"), str) and rec.get("label") is None


def _text_encodings(tokenizer, texts: list[str]) -> list[dict]:
    """Documents' tokens and EOS, loss on every token (one batched tokenizer call)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [{"input_ids": x + eos, "labels": x + eos, "chat": False} for x in ids]


def encode_record(rec: dict, tokenizer, system_prompt: str | None = None, processor=None) -> dict | str:
    """{"input_ids", "labels", "chat"} for a conversation or a text record, or why the record has no tokens.
    A conversation with images is encoded by `tailor.data.images.encode_multimodal` with the model's `processor`."""
    if rec.get("images"):
        from tailor.data.images import encode_multimodal

        return encode_multimodal(with_system_prompt(rec["messages"], system_prompt), rec["images"], processor)
    if "messages" in rec:
        enc = encode_conversation(tokenizer, with_system_prompt(rec["messages"], system_prompt), None)
        if enc is None:
            return NO_LOSS_TOKEN
        return {"input_ids": enc["input_ids"], "labels": enc["labels"], "chat": True}
    if _is_text(rec):
        return _text_encodings(tokenizer, [rec["text"]])[0]
    return NOT_TOKENIZED


def _encode_batch(batch: dict, tokenizer, system_prompt: str | None, processor=None) -> dict:
    out: dict[str, list] = {c: [] for c in (*COLUMNS, "status")}
    records = [json.loads(raw) for raw in batch["record"]]
    texts = iter(_text_encodings(tokenizer, [r["text"] for r in records if _is_text(r)]))
    for rec in records:
        enc = next(texts) if _is_text(rec) else encode_record(rec, tokenizer, system_prompt, processor)
        ok = isinstance(enc, dict)
        out["input_ids"].append(enc["input_ids"] if ok else [])
        out["labels"].append(enc["labels"] if ok else [])
        out["chat"].append(bool(ok and enc["chat"]))
        out["source"].append(str(rec.get("source") or ""))
        out["where"].append(str(rec.get("where") or ""))
        out["images"].append(enc.get("images", []) if ok else [])
        out["status"].append("ok" if ok else enc)
    return out


def tokenize_split(records: list[dict], tokenizer, max_length: int, system_prompt: str | None = None,
                   num_proc: int = 1, processor=None):
    """(Dataset of input_ids/labels/chat/source/where, statistics) for chat and text records.

    The dataset is None when no record had tokens. Statistics count the rows `max_length` will cut
    (`truncated`) and the rows without tokens by reason (`not_tokenized`).
    """
    from datasets import Dataset

    raw = Dataset.from_dict({"record": [json.dumps(r, ensure_ascii=False) for r in records]})
    enc = raw.map(_encode_batch, batched=True, batch_size=256, remove_columns=["record"],
                  num_proc=num_proc if num_proc > 1 and len(records) >= 512 else None,
                  fn_kwargs={"tokenizer": tokenizer, "system_prompt": system_prompt, "processor": processor},
                  desc="tokenizing")
    status = enc["status"]
    keep = [i for i, s in enumerate(status) if s == "ok"]
    skipped: dict[str, int] = {}
    for s in status:
        if s != "ok":
            skipped[s] = skipped.get(s, 0) + 1
    ids_col, labels_col = enc["input_ids"], enc["labels"]
    lengths = [len(ids_col[i]) for i in keep]
    stats = {
        "rows": len(records),
        "tokenized": len(keep),
        "not_tokenized": skipped,
        "tokens": int(sum(lengths)),
        "loss_tokens": int(sum(sum(1 for x in labels_col[i] if x != IGNORE) for i in keep)),
        "truncated": int(sum(1 for n in lengths if n > max_length)),
        **length_summary(lengths),
    }
    stats["truncated_share"] = round(stats["truncated"] / max(len(keep), 1), 4)
    if not keep:
        return None, stats
    return enc.select(keep).remove_columns(["status"]), stats


def length_summary(lengths: list[int]) -> dict:
    """Mean, median, 95th percentile and maximum of token lengths."""
    if not lengths:
        return {"length_mean": 0, "length_p50": 0, "length_p95": 0, "length_max": 0}
    s = sorted(lengths)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"length_mean": round(sum(s) / len(s), 1), "length_p50": pick(0.5), "length_p95": pick(0.95), "length_max": s[-1]}


# ---------------------------------------------------------------------------------------------
# What each objective trains on


def sft_examples(ds, max_length: int, report: LoadReport | None = None):
    """Conversations of a tokenized split as SFT rows (input_ids, labels), cut to `max_length`; every
    row left out or cut is counted in `report` with its reason and place."""
    from datasets import Dataset

    def skip(reason: str, where: str) -> None:
        if report is not None:
            report.skip(reason, where)

    rows: dict[str, list] = {"input_ids": [], "labels": []}
    images = ds["images"] if "images" in ds.column_names else [[]] * len(ds)
    vision = any(images)
    if vision:
        rows["images"] = []
    for n, (ids, labels, chat, where) in enumerate(zip(ds["input_ids"], ds["labels"], ds["chat"], ds["where"])):
        where = where or f"row {n}"
        if len(ids) > max_length and images[n]:
            skip(IMAGE_TOKENS_CUT, where)  # a part of an image cannot be trained on
            continue
        if not chat:
            skip("raw text record in an sft run (needs a conversation)", where)
            continue
        if len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            if all(lab == IGNORE for lab in labels):
                skip("no assistant token within data.max_length", where)
                continue
            skip("truncated to data.max_length (kept)", where)
        rows["input_ids"].append(ids)
        rows["labels"].append(labels)
        if vision:
            rows["images"].append(images[n])
    return Dataset.from_dict(rows)


def pretrain_blocks(docs: list[list[int]], block_size: int, packing: bool,
                    report: LoadReport | None = None) -> list[list[int]]:
    """Pretraining rows from documents' tokens (see the module docstring for the two rules)."""
    if not packing:
        return [ids[i:i + block_size] for ids in docs for i in range(0, len(ids), block_size)]
    stream = [t for ids in docs for t in ids]
    n = len(stream) // block_size
    if n == 0:
        return [stream] if stream else []
    if report is not None and len(stream) % block_size:
        report.skip(f"{len(stream) % block_size} tail tokens shorter than one block", "end of packed stream")
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n)]


def sft_dataset(records: list[dict], tokenizer, max_length: int, system_prompt: str | None = None,
                report: LoadReport | None = None):
    """SFT rows (loss on assistant turns) from conversations in memory: `tokenize_split` then `sft_examples`."""
    from datasets import Dataset

    ds, stats = tokenize_split(records, tokenizer, max_length, system_prompt)
    if report is not None:
        for reason, n in stats["not_tokenized"].items():
            for _ in range(n):
                report.skip(reason, "records")
    if ds is None:
        return Dataset.from_dict({"input_ids": [], "labels": []})
    return sft_examples(ds, max_length, report)


def pretrain_dataset(records: list[dict], tokenizer, block_size: int, packing: bool = True,
                     report: LoadReport | None = None):
    """Pretraining rows (loss on every token) from records in memory: `tokenize_split` then `pretrain_blocks`."""
    from datasets import Dataset

    ds, _ = tokenize_split(records, tokenizer, block_size)
    rows = pretrain_blocks(ds["input_ids"] if ds is not None else [], block_size, packing, report)
    return Dataset.from_dict({"input_ids": rows, "labels": rows})
