"""Log-likelihood scoring: how probable the model finds given tokens, batched with padding excluded.

Every task that scores text rather than generating it goes through `sequence_logprobs`: answer
perplexity (generation), held-out text (lm), label likelihoods (classification) and candidate
likelihoods (retrieval). Sequences are encoded the way training encodes them
(`encode_conversation` for chat turns, text + EOS for plain text), so a score here is the
quantity the training loss optimizes.
"""

from __future__ import annotations

import torch

from tailor.data.templates import encode_conversation


def pad_id(tokenizer) -> int:
    """The id padding uses (the pad token, else EOS); padded positions are masked and never scored."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


@torch.no_grad()
def sequence_logprobs(model, encoded: list[dict], pad_id: int, batch_size: int = 16) -> list[tuple[float, int]]:
    """(summed log-prob, token count) of the tokens whose label is not -100, for each sequence.

    `encoded` rows are {"input_ids": [...], "labels": [...]} with labels -100 where a token is
    context only. Sequences are sorted by length so batches hold little padding; padding is masked
    in attention and never scored. Results come back in input order.
    """
    from tailor.data.packing import PadCollator

    model.eval()
    device = next(model.parameters()).device
    collate = PadCollator(pad_id)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([encoded[i] for i in idx])
        ids, labels, mask = batch["input_ids"].to(device), batch["labels"].to(device), batch["attention_mask"].to(device)
        # Prompt tuning prepends virtual-token logits: keep the positions of the real input only.
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1]:].float()
        targets = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100,
                                                reduction="none")
        sums, counts = (-nll.sum(1)).tolist(), (targets != -100).sum(1).tolist()
        for j, i in enumerate(idx):
            out[i] = (float(sums[j]), int(counts[j]))
    return out


def encode_turn(tokenizer, user: str, answer: str, max_length: int) -> dict:
    """A user turn and an assistant answer, labels on the answer (end-of-turn included), as training encodes them.

    Longer than max_length: the oldest tokens are cut (left truncation), so the answer is always scored.
    """
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    enc = encode_conversation(tokenizer, messages, max_length=10**9)
    ids, labels = enc["input_ids"], enc["labels"]
    truncated = len(ids) > max_length
    return {"input_ids": ids[-max_length:], "labels": labels[-max_length:], "truncated": truncated}


def answer_nll(model, tokenizer, conversations: list[list[dict]], max_length: int = 1024,
               batch_size: int = 16) -> tuple[float, int, list[float]]:
    """Summed NLL and count of assistant tokens (padding and prompts excluded), plus per-example mean NLL."""
    # A conversation with no assistant token left stands in as one padded, unscored token.
    empty = {"input_ids": [pad_id(tokenizer)], "labels": [-100]}
    encoded = [encode_conversation(tokenizer, c, max_length) or empty for c in conversations]
    scores = sequence_logprobs(model, encoded, pad_id(tokenizer), batch_size)
    total = -sum(s for s, _ in scores)
    count = sum(n for _, n in scores)
    return total, count, [-s / n if n else float("nan") for s, n in scores]


def text_windows(tokenizer, text: str, max_length: int) -> list[dict]:
    """Plain text as pretraining sees it (tokens + EOS), in windows of max_length tokens.

    Consecutive windows overlap by one token, which is context in the later window, so every token
    but the document's first is scored exactly once (T tokens -> T - 1 scored, however many windows).
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    stride = max_length - 1
    windows = []
    for start in range(0, max(len(ids) - 1, 1), stride):
        chunk = ids[start:start + max_length]
        windows.append({"input_ids": chunk, "labels": chunk})
    return windows
