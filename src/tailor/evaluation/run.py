"""The evaluation stage: generate answers with the serving prompt path and score them.

`run(model_dir, data, cfg)` evaluates a model directory, an adapter directory (its base is found
from adapter_config.json) or a base plus `adapter=`. It reports fact accuracy (the answer contains
the record's `answer`), exact match, normalized exact match, token F1, empty-answer rate, and the
perplexity of the reference answers (token-weighted over assistant tokens only).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tailor.config import EvalConfig
from tailor.errors import TailorError
from tailor.evaluation import metrics as M


@dataclass
class EvalResult:
    metrics: dict
    examples: list[dict] = field(default_factory=list)


def load_for_eval(model_dir: str | Path, adapter: str | Path | None = None, dtype: str = "auto",
                  trust_remote_code: bool = False):
    """(model, tokenizer) for a model dir, an adapter dir, or a base plus an adapter."""
    from tailor.adapters.merge import is_adapter_dir, load_with_adapter
    from tailor.models.loading import load_model, load_tokenizer

    if adapter:
        return load_with_adapter(adapter, base=model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
    if is_adapter_dir(model_dir):
        return load_with_adapter(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
    model = load_model(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
    return model, load_tokenizer(model_dir, trust_remote_code=trust_remote_code)


@torch.no_grad()
def answer_nll(model, tokenizer, conversations: list[list[dict]], max_length: int = 1024,
               batch_size: int = 16) -> tuple[float, int, list[float]]:
    """Summed NLL and count of assistant tokens (padding and prompts excluded), plus per-example mean NLL."""
    from tailor.data.dataset import PadCollator
    from tailor.data.templates import encode_conversation

    model.eval()
    device = next(model.parameters()).device
    # A conversation with no assistant token left stands in as one padded, unscored token.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    empty = {"input_ids": [pad], "labels": [-100]}
    encoded = [encode_conversation(tokenizer, c, max_length) or empty for c in conversations]
    collate = PadCollator(pad)
    total, count, per_example = 0.0, 0, []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        batch = collate(chunk)
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100,
                                                reduction="none")
        valid = shift_labels != -100
        for i in range(len(chunk)):
            n_i = int(valid[i].sum())
            s_i = float(nll[i][valid[i]].sum())
            total, count = total + s_i, count + n_i
            per_example.append(s_i / n_i if n_i else float("nan"))
    return total, count, per_example


def _load_eval_records(paths: list[str], max_examples: int | None) -> list[dict]:
    from tailor.data.loading import LoadReport, load_records, require_rows

    report = LoadReport()
    records = [r for r in load_records(paths, "auto", "text", report) if "messages" in r]
    require_rows(records, report, paths, "evaluation")
    for n, r in enumerate(records):
        if r["messages"][-1]["role"] != "assistant":
            raise TailorError(f"evaluation record {n} does not end with an assistant reference answer",
                              where=", ".join(paths), fix="end each conversation with the expected assistant answer")
    return records[:max_examples] if max_examples else records


def score(records: list[dict], predictions: list[str]) -> tuple[dict, list[dict]]:
    """Aggregate and per-example scores (overall and per `lang` when records carry one)."""
    examples = []
    for rec, pred in zip(records, predictions):
        ref = rec["messages"][-1]["content"]
        row = {
            "prompt": rec["messages"][-2]["content"] if len(rec["messages"]) > 1 else "",
            "reference": ref,
            "prediction": pred,
            "exact_match": M.exact_match(pred, ref),
            "normalized_exact_match": M.normalized_exact_match(pred, ref),
            "token_f1": M.token_f1(pred, ref),
            "empty": float(not pred.strip()),
        }
        if rec.get("answer"):
            row["answer"] = rec["answer"]
            row["fact_accuracy"] = M.contains_answer(pred, rec["answer"])
        for key in ("lang", "fact_id"):
            if key in rec:
                row[key] = rec[key]
        examples.append(row)
    keys = ["fact_accuracy", "exact_match", "normalized_exact_match", "token_f1", "empty"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for ex in examples:
        groups["all"].append(ex)
        if "lang" in ex:
            groups[ex["lang"]].append(ex)
    result: dict = {"n": len(examples)}
    for name, rows in groups.items():
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            if vals:
                result[k if name == "all" else f"{k}/{name}"] = sum(vals) / len(vals)
    result["empty_rate"] = result.pop("empty", 0.0)
    return result, examples


def run(model_dir: str | Path, data: list[str] | None = None, cfg: EvalConfig | None = None,
        adapter: str | Path | None = None, out_dir: str | Path | None = None, chat_template: str | None = None,
        model=None, tokenizer=None) -> EvalResult:
    """Evaluate and (with out_dir) write eval_results.json and examples.jsonl."""
    from tailor.data.templates import set_chat_template
    from tailor.models.generation import generate

    cfg = cfg or EvalConfig()
    paths = list(data or cfg.data)
    if not paths:
        raise TailorError("no evaluation data given", where="eval.data / --data", fix="pass --data FILE.jsonl")
    records = _load_eval_records(paths, cfg.max_examples)
    if model is None:
        model, tokenizer = load_for_eval(model_dir, adapter)
    set_chat_template(tokenizer, chat_template)
    convs = [r["messages"] for r in records]
    predictions = generate(model, tokenizer, convs, cfg.max_new_tokens, cfg.batch_size, cfg.do_sample,
                           cfg.temperature, cfg.top_p, cfg.seed)
    result, examples = score(records, predictions)
    nll, ntok, per_ex = answer_nll(model, tokenizer, convs, batch_size=cfg.batch_size)
    result["answer_perplexity"] = M.perplexity(nll, ntok)
    result["answer_tokens"] = ntok
    for ex, v in zip(examples, per_ex):
        ex["answer_nll"] = v
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
        with (out / "examples.jsonl").open("w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps(ex, ensure_ascii=False) + "\n")
    return EvalResult(result, examples)
