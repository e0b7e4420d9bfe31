"""The generation task: answer held-out conversations with the serving prompt path, then score the answers.

Answers come from `tailor.models.generation.generate` (left-padded batches, KV cache, greedy
unless eval.do_sample), the same code that chat and serving use. An answer that opens with a `<think>` block
(R1-style reasoning) is scored on the text after `</think>` (tailor.data.reasoning). Scores per example: exact match,
normalized exact match, token F1, contains-answer (`fact_accuracy`, when the record carries an
`answer`), sentence BLEU and chrF, ROUGE-1/2/L, refusal, empty, answer length; aggregates are means
over all examples and per `lang`, except BLEU and chrF, which are corpus-level (sacrebleu's `zh`
tokenizer for Chinese groups, `13a` otherwise).
"""

from __future__ import annotations

from collections import defaultdict

from tailor.config import EvalConfig
from tailor.errors import TailorError
from tailor.evaluation import metrics as M
from tailor.evaluation.scoring import pad_id, sequence_logprobs

# Per-example keys averaged into the results (name in the results, key in the example row).
MEAN_KEYS = ("fact_accuracy", "exact_match", "normalized_exact_match", "token_f1", "rouge1", "rouge2", "rougeL",
             "answer_length", "answer_length_tokens", "json_valid", "json_field_accuracy", "json_exact_match")
RATE_KEYS = {"empty": "empty_rate", "refusal": "refusal_rate"}


def load_chat_records(paths: list[str], max_examples: int | None) -> list[dict]:
    """Chat records whose last turn is the assistant's reference answer."""
    from tailor.data.loading import LoadReport, load_records, require_rows

    report = LoadReport()
    records = [r for r in load_records(paths, "auto", "text", report) if "messages" in r]
    require_rows(records, report, paths, "evaluation")
    for n, r in enumerate(records):
        if r["messages"][-1]["role"] != "assistant":
            raise TailorError(f"evaluation record {n} does not end with an assistant reference answer",
                              where=", ".join(paths), fix="end each conversation with the expected assistant answer")
    return records[:max_examples] if max_examples else records


def score(records: list[dict], predictions: list[str], tokenizer=None,
          refusal_patterns: tuple[str, ...] = (), json_schema: dict | None = None) -> tuple[dict, list[dict]]:
    """Aggregate and per-example scores (overall and per `lang` when records carry one).

    With a tokenizer, `answer_length_tokens` counts the answer's tokens under it; `answer_length`
    always counts words (characters for Chinese), comparable across models. With `json_schema` (eval.json_schema)
    the answers are also scored as structured answers (`structured_scores`).
    """
    from tailor.data.reasoning import answer_of, split_reasoning

    examples = []
    for rec, full in zip(records, predictions):
        # A model trained to think (R1-style) is scored on its answer after the </think> block, against the
        # reference's own answer part.
        reasoning, pred = split_reasoning(full)
        ref = answer_of(rec["messages"][-1]["content"])
        row = {
            "prompt": rec["messages"][-2]["content"] if len(rec["messages"]) > 1 else "",
            "reference": ref,
            "prediction": pred,
            **({"reasoning": reasoning} if reasoning is not None else {}),
            "exact_match": M.exact_match(pred, ref),
            "normalized_exact_match": M.normalized_exact_match(pred, ref),
            "token_f1": M.token_f1(pred, ref),
            "bleu": M.sentence_bleu(pred, ref, M.bleu_tokenizer(ref, rec.get("lang"))),
            "chrf": M.sentence_chrf(pred, ref),
            **M.rouge(pred, ref),
            "answer_length": len(M.tokens(pred)),
            "refusal": M.is_refusal(pred, refusal_patterns),
            "empty": float(not pred.strip()),
        }
        if tokenizer is not None:
            row["answer_length_tokens"] = len(tokenizer(pred, add_special_tokens=False)["input_ids"]) if pred else 0
        if rec.get("answer"):
            row["answer"] = rec["answer"]
            row["fact_accuracy"] = M.contains_answer(pred, rec["answer"])
        for key in ("lang", "fact_id"):
            if key in rec:
                row[key] = rec[key]
        if json_schema is not None:
            row.update(structured_scores(pred, ref, json_schema, len(examples)))
        examples.append(row)
    return aggregate(examples), examples


def structured_scores(prediction: str, reference: str, schema: dict, index: int) -> dict:
    """json_valid (the answer parses and matches the schema), json_field_accuracy (share of the reference object's
    top-level fields the answer has with the same value; 0 or 1 for a non-object reference), json_exact_match."""
    import json

    from tailor.models.grammar import parse_json

    try:
        ref = json.loads(reference)
    except json.JSONDecodeError:
        raise TailorError(f"evaluation record {index}: the reference answer is not JSON, so a structured answer "
                          f"cannot be scored against it: {reference[:80]!r}", where="eval.json_schema",
                          fix="give JSON reference answers, or leave out eval.json_schema") from None
    value, problem = parse_json(prediction, schema)
    row = {"json_valid": float(problem is None), "json_exact_match": float(problem is None and value == ref)}
    if isinstance(ref, dict) and ref:
        got = value if isinstance(value, dict) else {}
        row["json_field_accuracy"] = sum(k in got and got[k] == v for k, v in ref.items()) / len(ref)
    else:
        row["json_field_accuracy"] = row["json_exact_match"]
    if problem:
        row["json_error"] = problem
    return row


def aggregate(examples: list[dict]) -> dict:
    """Means of the per-example scores and corpus BLEU/chrF, overall and per language."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for ex in examples:
        groups["all"].append(ex)
        if "lang" in ex:
            groups[ex["lang"]].append(ex)
    result: dict = {"n": len(examples)}
    for name, rows in groups.items():
        suffix = "" if name == "all" else f"/{name}"
        for k in MEAN_KEYS:
            vals = [r[k] for r in rows if k in r]
            if vals:
                result[k + suffix] = sum(vals) / len(vals)
        for k, out in RATE_KEYS.items():
            result[out + suffix] = sum(r[k] for r in rows) / len(rows) if rows else 0.0
        preds, refs = [r["prediction"] for r in rows], [r["reference"] for r in rows]
        if rows:
            # One tokenizer per corpus: zh when the group is Chinese (by lang or, failing that, by script).
            zh = any(M.bleu_tokenizer(r["reference"], r.get("lang")) == "zh" for r in rows)
            result["bleu" + suffix] = M.corpus_bleu(preds, refs, "zh" if zh else "13a")
            result["chrf" + suffix] = M.corpus_chrf(preds, refs)
    return result


def answer(model, tokenizer, conversations: list[list[dict]], cfg: EvalConfig,
           json_schema: dict | None = None) -> list[str]:
    """Batched answers with the eval settings (the one generation path); JSON matching `json_schema` when given."""
    from tailor.models.generation import generate

    return generate(model, tokenizer, conversations, cfg.max_new_tokens, cfg.batch_size, cfg.do_sample,
                    cfg.temperature, cfg.top_p, cfg.seed, json_schema=json_schema)


def answer_logprobs(model, tokenizer, conversations: list[list[dict]], predictions: list[str],
                    cfg: EvalConfig) -> list[float]:
    """Mean token log-prob the model gives its own answer (answer + end-of-turn, teacher-forced).

    The answer text is re-encoded through the training path, so its tokens can differ from the
    generated ids where the tokenizer would split the text differently; the score is of the text.
    """
    from tailor.data.templates import encode_conversation

    encoded = []
    for conv, pred in zip(conversations, predictions):
        prompt = conv[:-1] if conv and conv[-1]["role"] == "assistant" else conv
        enc = encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": pred}], 10**9)
        # Only the last assistant turn (the model's own answer) is scored; long prompts lose their oldest tokens.
        first = _last_turn_start(enc["labels"])
        labels = [-100] * first + enc["labels"][first:]
        encoded.append({"input_ids": enc["input_ids"][-cfg.max_length:], "labels": labels[-cfg.max_length:]})
    scores = sequence_logprobs(model, encoded, pad_id(tokenizer), cfg.batch_size)
    return [s / n if n else float("nan") for s, n in scores]


def _last_turn_start(labels: list[int]) -> int:
    """Index where the last run of scored labels begins."""
    i = len(labels)
    while i > 0 and labels[i - 1] == -100:
        i -= 1
    while i > 0 and labels[i - 1] != -100:
        i -= 1
    return i


def worst(examples: list[dict], k: int) -> list[dict]:
    """The k examples with the lowest fact accuracy, then token F1 (ties keep file order)."""
    order = sorted(range(len(examples)),
                   key=lambda i: (examples[i].get("fact_accuracy", examples[i]["normalized_exact_match"]),
                                  examples[i]["token_f1"], i))
    keep = ("prompt", "reference", "answer", "prediction", "fact_accuracy", "token_f1", "lang")
    return [{"index": i, **{key: examples[i][key] for key in keep if key in examples[i]}} for i in order[:k]]
