"""The language-modelling task: loss and perplexity on held-out text, token-weighted, padding excluded.

Records are read like pretraining reads them (`tailor.data.records.record_text`: a `text` field, or
a conversation's contents joined by newlines, each document ended by EOS), so the loss here is the
quantity `train.objective=pretrain` minimizes. A document longer than eval.max_length is scored in
windows that overlap by one token, so every token but the first is scored once and nothing is cut.
"""

from __future__ import annotations

from tailor.config import EvalConfig
from tailor.evaluation import metrics as M
from tailor.evaluation.scoring import pad_id, sequence_logprobs, text_windows


def load_rows(paths: list[str], max_examples: int | None) -> list[dict]:
    """Text and chat records (classification rows count as their text)."""
    from tailor.data.loading import LoadReport, load_records, require_rows

    report = LoadReport()
    records = load_records(paths, "auto", "text", report)
    require_rows(records, report, paths, "language-modelling")
    return records[:max_examples] if max_examples else records


def evaluate(model, tokenizer, records: list[dict], cfg: EvalConfig) -> tuple[dict, list[dict]]:
    """Token-weighted loss and perplexity overall, per-document mean NLL and perplexity."""
    from tailor.data.records import record_text

    texts = [record_text(r) for r in records]
    windows, owner = [], []
    for i, text in enumerate(texts):
        for w in text_windows(tokenizer, text, cfg.max_length):
            windows.append(w)
            owner.append(i)
    scores = sequence_logprobs(model, windows, pad_id(tokenizer), cfg.batch_size)
    nll, count, n_windows = [0.0] * len(texts), [0] * len(texts), [0] * len(texts)
    for i, (s, n) in zip(owner, scores):
        nll[i] -= s
        count[i] += n
        n_windows[i] += 1
    total, tokens = sum(nll), sum(count)
    result = {"task": "lm", "n": len(texts), "loss": total / tokens if tokens else float("nan"),
              "perplexity": M.perplexity(total, tokens), "tokens": tokens, "windows": len(windows)}
    examples = [{"index": i, "text": t, "tokens": count[i], "windows": n_windows[i],
                 "nll": nll[i] / count[i] if count[i] else float("nan"), "perplexity": M.perplexity(nll[i], count[i])}
                for i, t in enumerate(texts)]
    return result, examples


def worst(examples: list[dict], k: int) -> list[dict]:
    """The k documents with the highest mean NLL (documents with no scored token last)."""
    order = sorted(range(len(examples)), key=lambda i: (-(examples[i]["nll"] if examples[i]["tokens"] else -1e9), i))
    return [{"index": i, "text": examples[i]["text"][:300], "nll": examples[i]["nll"], "tokens": examples[i]["tokens"]}
            for i in order[:k]]
