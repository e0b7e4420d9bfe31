"""Batched generation from chat prompts: one path for evaluation, chat and serving."""

from __future__ import annotations

import torch

from tailor.data.templates import encode_prompt


def decoding_kwargs(tokenizer, max_new_tokens: int, do_sample: bool = False, temperature: float = 0.7,
                    top_p: float = 0.9) -> dict:
    """Arguments for `model.generate` shared by evaluation, chat and serving (greedy unless do_sample)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad,
                  eos_token_id=tokenizer.eos_token_id)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p)
    else:
        # Unset the model's own sampling defaults so greedy decoding raises no warnings.
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


@torch.no_grad()
def generate_rows(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64, batch_size: int = 16,
                  do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.9,
                  json_schema: dict | None = None) -> list[list[int]]:
    """The generated token ids (up to max_new_tokens, padding after end-of-sequence included) per conversation.

    With `json_schema`, decoding is constrained to JSON matching it (tailor.models.grammar)."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows: list[list[int]] = []
    for start in range(0, len(conversations), batch_size):
        prompts = [encode_prompt(tokenizer, c) for c in conversations[start:start + batch_size]]
        width = max(len(p) for p in prompts)
        # Left padding keeps every prompt's last token at the same position for batched decoding.
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        extra = {}
        if json_schema is not None:
            from transformers import LogitsProcessorList

            from tailor.models.grammar import SchemaLogitsProcessor

            extra["logits_processor"] = LogitsProcessorList([SchemaLogitsProcessor(tokenizer, json_schema)])
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             **decoding_kwargs(tokenizer, max_new_tokens, do_sample, temperature, top_p), **extra)
        rows.extend(out[:, width:].tolist())
    return rows


def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64, batch_size: int = 16,
             do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.9, seed: int = 0,
             json_schema: dict | None = None) -> list[str]:
    """Answer each conversation (its trailing assistant turn, if any, is dropped). Greedy by default; with
    `json_schema` every answer is JSON constrained to it."""
    if do_sample:
        torch.manual_seed(seed)
    rows = generate_rows(model, tokenizer, conversations, max_new_tokens, batch_size, do_sample, temperature, top_p,
                         json_schema)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
