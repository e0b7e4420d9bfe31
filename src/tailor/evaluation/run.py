"""The evaluation stage: one entry point for every task, the same prompt path as training and serving.

`run(model_dir, data, cfg)` evaluates a model directory, an adapter directory (its base is found
from adapter_config.json) or a base plus `adapter=`, loaded by `tailor.adapters.loading.load_any` with
the CPU speed-ups of `tailor.runtime.enable` unless eval.runtime=false, on one of four tasks (`eval.task`):

- generation (default): answers generated in batches, scored by exact match, normalized exact
  match, token F1, fact accuracy (the answer contains the record's `answer`), BLEU, chrF, ROUGE,
  answer length, refusal and empty rates; plus the perplexity of the reference answers
  (token-weighted over assistant tokens only) and, optionally, robustness under noisy questions;
- lm: loss and perplexity of held-out text;
- classification: labels scored by likelihood -> accuracy, P/R/F1, AUC-ROC, confusion matrix, ECE;
- retrieval: candidates ranked by likelihood -> Recall@K, MRR, NDCG@K.

With `out_dir` it writes eval_results.json (the metrics, the worst examples, efficiency), examples.jsonl
(inputs, references, outputs and scores per example), confusion_matrix.png (classification) and,
with eval.select_uncertain=K, uncertain.jsonl: the K examples the model is least sure about, ready
for labelling.
"""

from __future__ import annotations

import difflib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from tailor.config import EvalConfig
from tailor.errors import TailorError
from tailor.evaluation import classification, efficiency, generation, lm, retrieval
from tailor.evaluation import metrics as M
from tailor.evaluation.generation import score  # noqa: F401  (part of this module's API)
from tailor.evaluation.scoring import answer_nll
from tailor.models.grammar import load_schema

TASKS = ("generation", "lm", "classification", "retrieval")
_LOADERS = {"generation": generation.load_chat_records, "lm": lm.load_rows,
            "classification": classification.load_rows, "retrieval": retrieval.load_rows}
_WORST = {"generation": generation.worst, "lm": lm.worst, "classification": classification.worst,
          "retrieval": retrieval.worst}


@dataclass
class EvalResult:
    """What `run` returns: the metrics (as saved in eval_results.json) and one row per example."""

    metrics: dict
    examples: list[dict] = field(default_factory=list)
    task: str = "generation"
    files: dict = field(default_factory=dict)  # name -> path written (with out_dir)
    explanations: list[dict] = field(default_factory=list)  # eval.explain: token attributions (tailor.evaluation.explain)


def check_task(task: str) -> str:
    """The task name, or an error naming the nearest valid one."""
    if task not in TASKS:
        near = difflib.get_close_matches(str(task), TASKS, n=1)
        raise TailorError(f"unknown evaluation task '{task}'." + (f" Did you mean '{near[0]}'?" if near else ""),
                          where="eval.task / --task", fix=f"use one of: {', '.join(TASKS)}")
    return task


def _check_options(cfg: EvalConfig, out_dir) -> None:
    if cfg.select_uncertain and cfg.task not in ("classification", "generation"):
        raise TailorError(f"select_uncertain works for classification and generation, not '{cfg.task}'",
                          where="eval.select_uncertain / --select-uncertain", fix="drop it, or evaluate one of those tasks")
    if cfg.select_uncertain and not out_dir:
        raise TailorError("select_uncertain writes uncertain.jsonl into the output folder, but none is given",
                          where="--out", fix="pass --out DIR (Python: out_dir=...)")
    if cfg.explain and cfg.task != "classification":
        raise TailorError(f"--explain attributes classification decisions, not task '{cfg.task}'", where="eval.explain / --explain",
                          fix="use --task classification with a classifier, or drop --explain")
    if cfg.robustness and cfg.task != "generation":
        raise TailorError(f"robustness re-asks generation questions; it does not apply to task '{cfg.task}'",
                          where="eval.robustness", fix="set eval.robustness=false, or use eval.task=generation")
    if cfg.json_schema:
        if cfg.task != "generation":
            raise TailorError(f"json_schema constrains generated answers; it does not apply to task '{cfg.task}'",
                              where="eval.json_schema", fix="leave it out, or use eval.task=generation")
        load_schema(cfg.json_schema)  # a missing or unusable schema fails before the model loads


def run(model_dir: str | Path, data: list[str] | None = None, cfg: EvalConfig | None = None,
        adapter: str | Path | None = None, out_dir: str | Path | None = None, chat_template: str | None = None,
        model=None, tokenizer=None, task: str | None = None) -> EvalResult:
    """Evaluate on eval.task (or `task`); with out_dir write eval_results.json, examples.jsonl and the task's extras."""
    from tailor.data.templates import set_chat_template
    from tailor.models.loading import is_sequence_classifier

    cfg = cfg or EvalConfig()
    if task is not None:
        cfg = cfg.model_copy(update={"task": check_task(task)})
    check_task(cfg.task)
    _check_options(cfg, out_dir)
    paths = list(data or cfg.data)
    if not paths:
        raise TailorError("no evaluation data given", where="eval.data / --data", fix="pass --data FILE.jsonl")
    from tailor.evaluation import vision

    if model is None and vision.is_vision_eval(model_dir, adapter):  # images: visual question answering
        metrics, examples = vision.run(model_dir, paths, adapter, out_dir, cfg.max_examples, cfg.max_new_tokens)
        files = {k: Path(out_dir) / k for k in ("eval_results.json", "examples.jsonl", "report.html")} if out_dir else {}
        return EvalResult({"task": "vqa", **metrics}, examples, "vqa", files)
    # Data errors surface before the (slow) model load.
    records = _LOADERS[cfg.task](paths, cfg.max_examples)
    if cfg.task != "classification" and (classification.is_classifier(model) if model is not None
                                         else is_sequence_classifier(adapter or model_dir)):
        raise TailorError(f"{adapter or model_dir} is a sequence classifier: it predicts labels, not text, so task "
                          f"'{cfg.task}' does not apply", where="eval.task / --task",
                          fix="evaluate it with --task classification on {text, label} rows")
    if model is None:
        from tailor import runtime
        from tailor.adapters.loading import load_any

        model, tokenizer = load_any(model_dir, adapter)
        if cfg.runtime:  # CPU speed-ups (eval.runtime=false: transformers' own path)
            runtime.enable(model)
    set_chat_template(tokenizer, chat_template)
    device = next(model.parameters()).device
    t0 = efficiency.start(device)
    if cfg.task == "generation":
        metrics, examples = _generation(model, tokenizer, records, cfg)
    else:
        module = {"lm": lm, "classification": classification, "retrieval": retrieval}[cfg.task]
        metrics, examples = module.evaluate(model, tokenizer, records, cfg)
    seconds = time.perf_counter() - t0
    if cfg.efficiency:
        from tailor.runtime import installed

        eff = {"seconds": seconds, "examples_per_second": len(examples) / seconds if seconds else float("nan"),
               "device": str(device), "runtime": installed(model)}
        if cfg.task == "generation":
            eff["generation_seconds"] = metrics.pop("_generation_seconds")
            eff["answers_per_second"] = len(examples) / eff["generation_seconds"] if eff["generation_seconds"] else float("nan")
            eff.update(efficiency.time_requests(model, tokenizer, [r["messages"] for r in records], cfg))
        metrics["efficiency"] = {**eff, **efficiency.peak_memory(device)}
    metrics.pop("_generation_seconds", None)
    metrics["worst_examples"] = _WORST[cfg.task](examples, cfg.worst_k)
    result = EvalResult(metrics, examples, cfg.task)
    if cfg.explain:
        from tailor.evaluation.explain import explain

        result.explanations = explain(model, tokenizer, examples, cfg)
    if out_dir:
        result.files = _write(result, cfg, Path(out_dir))
    return result


def _generation(model, tokenizer, records: list[dict], cfg: EvalConfig) -> tuple[dict, list[dict]]:
    convs = [r["messages"] for r in records]
    t = time.perf_counter()
    schema = load_schema(cfg.json_schema) if cfg.json_schema else None
    predictions = generation.answer(model, tokenizer, convs, cfg, schema)
    gen_seconds = time.perf_counter() - t
    metrics, examples = generation.score(records, predictions, tokenizer, tuple(cfg.refusal_patterns), schema)
    metrics = {"task": "generation", **metrics}
    nll, ntok, per_ex = answer_nll(model, tokenizer, convs, max_length=cfg.max_length, batch_size=cfg.batch_size)
    metrics["answer_perplexity"] = M.perplexity(nll, ntok)
    metrics["answer_tokens"] = ntok
    confidence = generation.answer_logprobs(model, tokenizer, convs, predictions, cfg)
    for ex, conv, v, c in zip(examples, convs, per_ex, confidence):
        ex["messages"] = conv[:-1]  # the input turns (the reference is the last one)
        ex["answer_nll"] = v
        ex["prediction_mean_logprob"] = c
    finite = [c for c in confidence if not math.isnan(c)]
    metrics["prediction_mean_logprob"] = sum(finite) / len(finite) if finite else float("nan")
    if cfg.robustness:
        from tailor.evaluation import robustness

        metrics["robustness"] = robustness.evaluate(model, tokenizer, records, metrics, examples, cfg)
    metrics["_generation_seconds"] = gen_seconds
    return metrics, examples


def select_uncertain(result: EvalResult, k: int, how: str = "margin") -> list[dict]:
    """The k examples the model is least sure about, as rows ready for labelling.

    classification: smallest top-2 margin (or largest entropy), with the model's suggested label;
    generation: lowest mean token log-prob of the model's own answer, as a chat record whose
    assistant turn is the model's answer (to be corrected), with the reference alongside.
    """
    if result.task == "classification":
        return classification.uncertain(result.examples, k, how)
    if result.task != "generation":
        raise TailorError(f"select_uncertain works for classification and generation, not '{result.task}'")
    def confidence(i: int) -> float:
        c = result.examples[i]["prediction_mean_logprob"]
        return -math.inf if math.isnan(c) else c

    rows = []
    for i in sorted(range(len(result.examples)), key=lambda i: (confidence(i), i))[:k]:
        ex = result.examples[i]
        rows.append({"messages": [*ex["messages"], {"role": "assistant", "content": ex["prediction"]}],
                     "reference": ex["reference"], **({"answer": ex["answer"]} if "answer" in ex else {}),
                     "prediction_mean_logprob": ex["prediction_mean_logprob"], "index": i})
    return rows


def _write(result: EvalResult, cfg: EvalConfig, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    files = {"results": out / "eval_results.json", "examples": out / "examples.jsonl"}
    if result.task == "classification":
        cm = result.metrics["confusion_matrix"]
        files["confusion_matrix"] = classification.plot_confusion(cm["matrix"], cm["labels"], out / "confusion_matrix.png")
    if cfg.select_uncertain:
        files["uncertain"] = out / "uncertain.jsonl"
        _write_jsonl(files["uncertain"], select_uncertain(result, cfg.select_uncertain, cfg.uncertainty))
    if result.explanations:
        files["explanations"] = out / "explanations.jsonl"
        _write_jsonl(files["explanations"], result.explanations)
    result.metrics["files"] = {k: str(v) for k, v in files.items()}
    files["results"].write_text(json.dumps(result.metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    _write_jsonl(files["examples"], result.examples)
    return files


_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object a line; Unicode line separators (which model output can hold) escaped so that no
    reader splitting on them (str.splitlines, many editors) cuts a record in two."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            line = json.dumps(row, ensure_ascii=False)
            for ch, esc in _LINE_BREAKS.items():
                line = line.replace(ch, esc)
            f.write(line + "\n")


def summary_metrics(metrics: dict) -> dict:
    """The scalar metrics, nested sections flattened to 'section/key' (for tables); lists and matrices left out."""
    flat: dict = {}
    for k, v in metrics.items():
        if k in ("worst_examples", "files", "confusion_matrix", "most_confused"):
            continue
        if isinstance(v, dict):
            for k2, v2 in summary_metrics(v).items():
                flat[f"{k}/{k2}"] = v2
        elif isinstance(v, (int, float, str)) or v is None:
            flat[k] = v
    return flat
