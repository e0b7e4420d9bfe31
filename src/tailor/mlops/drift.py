"""Drift watch and the A/B gate of `tailor refresh`, measured with tailor's own evaluation and comparison.

Drift: production's perplexity on newly arrived data against the baseline recorded in the registry
(its perplexity on its own held-out data), and optionally a task metric such as fact accuracy.
Chat rows are measured by the generation task (perplexity of the reference answers, plus the
scores of generated answers); text rows by the lm task (perplexity of the text).

Gate: `tailor compare`'s machinery (paired per-example scores, bootstrap intervals, `--require`
expressions) on the old held-out set and on the new one. The candidate passes only if it is not
worse than production on the old set (within `refresh.tolerance`) and better on the new set.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from tailor.config import EvalConfig, Recipe, RefreshConfig
from tailor.errors import TailorError

PPL_KEYS = {"generation": ("answer_perplexity", "answer_tokens"), "lm": ("perplexity", "tokens")}


def data_fingerprint(paths: list[str | Path]) -> str:
    """Hash of the files' names and bytes (folders: every file inside, in sorted order)."""
    h = hashlib.blake2b(digest_size=16)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise TailorError(f"data path not found: {p}", where="refresh.new_data / data.train",
                              fix="point at existing files or folders")
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def task_for(recipe: Recipe, rows: list[dict]) -> str:
    """generation for chat rows (answer perplexity + answer scores), lm for text (or when eval.task=lm)."""
    if recipe.eval.task in ("classification", "retrieval"):
        raise TailorError(f"tailor refresh measures perplexity; eval.task={recipe.eval.task} has none",
                          where="eval.task", fix="use eval.task=generation (chat data) or lm (text data)")
    return "lm" if recipe.eval.task == "lm" or not any("messages" in r for r in rows) else "generation"


def eval_settings(recipe: Recipe, task: str, cfg: RefreshConfig) -> EvalConfig:
    """The recipe's eval settings for refresh measurements: one task, no timing runs, bounded size."""
    return recipe.eval.model_copy(update={"task": task, "efficiency": False, "robustness": False, "select_uncertain": 0,
                                          "max_examples": cfg.max_examples, "data": []})


def summary(metrics: dict, task: str, task_metric: str | None) -> dict:
    """perplexity, tokens, n and the task metric (when measured) of an evaluation's metrics."""
    ppl_key, tok_key = PPL_KEYS[task]
    out = {"perplexity": metrics.get(ppl_key), "tokens": metrics.get(tok_key), "n": metrics.get("n")}
    if task_metric and isinstance(metrics.get(task_metric), (int, float)):
        out[task_metric] = metrics[task_metric]
    return out


def measure(model_path: str | Path, files: list[str | Path], eval_cfg: EvalConfig, out_dir: Path,
            task_metric: str | None) -> dict:
    """Evaluate a model (or adapter) on files; the saved result is reused when out_dir already holds one."""
    from tailor.evaluation.run import run as evaluate

    done = out_dir / "measure.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    res = evaluate(model_path, [str(f) for f in files], eval_cfg, out_dir=out_dir)
    result = summary(res.metrics, eval_cfg.task, task_metric)
    done.write_text(json.dumps(result, indent=2), encoding="utf-8")  # written last: marks the evaluation complete
    return result


def baseline_from(metrics: dict, task: str, task_metric: str | None) -> dict:
    """The perplexity and task metric a version recorded for its own held-out data (empty when it has none)."""
    ppl_key, _ = PPL_KEYS[task]
    out = {}
    if isinstance(metrics.get(ppl_key), (int, float)):
        out["perplexity"] = metrics[ppl_key]
    if task_metric and isinstance(metrics.get(task_metric), (int, float)):
        out[task_metric] = metrics[task_metric]
    return out


def check_drift(baseline: dict, now: dict, cfg: RefreshConfig) -> dict:
    """Whether production degraded on the new data: perplexity rise past cfg.threshold, task metric drop past cfg.task_drop."""
    base_ppl, ppl = baseline.get("perplexity"), now.get("perplexity")
    if not base_ppl or ppl is None or math.isnan(ppl):
        raise TailorError("no perplexity to compare: the baseline or the new measurement is missing", where="refresh drift check")
    rise = ppl / base_ppl - 1
    out = {"perplexity_baseline": base_ppl, "perplexity_new": ppl, "rise": rise, "threshold": cfg.threshold,
           "n_new": now.get("n"), "reasons": []}
    if rise > cfg.threshold:
        out["reasons"].append(f"perplexity {base_ppl:.3f} -> {ppl:.3f} ({rise:+.1%}, threshold +{cfg.threshold:.0%})")
    m = cfg.task_metric
    if m and m in baseline and m in now:
        drop = baseline[m] - now[m]
        out.update({"task_metric": m, "task_baseline": baseline[m], "task_new": now[m], "task_drop": drop,
                    "task_threshold": cfg.task_drop})
        if drop > cfg.task_drop:
            out["reasons"].append(f"{m} {baseline[m]:.3f} -> {now[m]:.3f} (down {drop:.3f}, threshold {cfg.task_drop})")
    elif m:
        missing = "the new data" if m not in now else "production's baseline"
        out["note"] = f"{m} not compared: {missing} has none (fact_accuracy needs an `answer` field in the rows)"
    out["degraded"] = bool(out["reasons"])
    return out


def combine(parts: list[dict], task_metric: str | None) -> dict:
    """One summary of several evaluated sets: token-weighted perplexity, example-weighted task metric."""
    tokens = sum(p.get("tokens") or 0 for p in parts)
    nll = sum(math.log(p["perplexity"]) * (p.get("tokens") or 0) for p in parts if p.get("perplexity"))
    out = {"perplexity": math.exp(nll / tokens) if tokens else float("nan"), "tokens": tokens,
           "n": sum(p.get("n") or 0 for p in parts)}
    scored = [p for p in parts if task_metric and task_metric in p]
    if scored and len(scored) == len(parts):
        out[task_metric] = sum(p[task_metric] * (p.get("n") or 0) for p in scored) / max(out["n"], 1)
    return out


# ---------------------------------------------------------------------------------------------
# The gate


def _compare(a, b, files: list[str], eval_cfg: EvalConfig, out_dir: Path):
    from tailor.evaluation.compare import run as compare

    return compare(a, b, files, eval_cfg, out_dir=out_dir, resamples=1000, report=False).result


def gate(production: str | Path, candidate: str | Path, old_files: list[str], new_files: list[str], eval_cfg: EvalConfig,
         cfg: RefreshConfig, out_dir: Path, saved: dict[str, Path] | None = None) -> dict:
    """Compare candidate (B) with production (A) on the old and the new held-out sets; decide with `--require` rules.

    `saved` maps "old"/"new" to earlier `tailor eval --out` folders of production on those exact sets, which
    are reused instead of evaluating production again.
    """
    from tailor.evaluation.compare import check_requirements, parse_requirement

    ppl_key = PPL_KEYS[eval_cfg.task][0]
    tol, gain, m = cfg.tolerance, cfg.min_gain, cfg.task_metric
    sets, checks = {}, []
    for label, files in (("old", old_files), ("new", new_files)):
        if label == "old" and not files:
            continue  # every old held-out row was superseded by the new data: nothing old left to protect
        a = (saved or {}).get(label) or production
        result = _compare(a, candidate, files, eval_cfg, out_dir / label)
        ma, mb = result["a"]["metrics"], result["b"]["metrics"]
        a_ppl = ma[ppl_key]
        if label == "old":
            reqs = [(f"{ppl_key}<={tol * a_ppl:+.6g}", f"perplexity may rise by at most {tol:.1%}", f"<= {tol:+.1%}")]
            if m and m in ma and m in mb:
                reqs.append((f"{m}>={-tol:+.6g}", f"{m} may fall by at most {tol:g}", f">= {-tol:+.3f}"))
        else:
            reqs = [(f"{ppl_key}<{-gain * a_ppl:+.6g}", "perplexity must fall" + (f" by more than {gain:.1%}" if gain else ""),
                     f"< {-gain:+.1%}" if gain else "< 0%")]
            if m and m in ma and m in mb:
                reqs.append((f"{m}>=+0", f"{m} must not fall", ">= +0.000"))
        held = check_requirements(result, [parse_requirement(r) for r, _, _ in reqs])
        for (text, rule, bound), g in zip(reqs, held):
            metric = ppl_key if text.startswith(ppl_key) else m
            va, vb = ma[metric], mb[metric]
            change = f"{va:.4g} -> {vb:.4g}" + (f" ({vb / va - 1:+.1%})" if metric == ppl_key and va else f" ({vb - va:+.3f})")
            checks.append({"set": label, "requirement": text, "rule": rule, "bound": bound, "metric": metric, "a": va, "b": vb,
                           "value": g["value"], "holds": g["holds"], "text": f"{label} held-out set: {metric} {change}; {rule}"})
        sets[label] = {"n": result["n"], "files": list(files), "compare": str(out_dir / label / "compare.json"),
                       "production": summary(ma, eval_cfg.task, m), "candidate": summary(mb, eval_cfg.task, m)}
    failed = [c["text"] for c in checks if not c["holds"]]
    notes = [f"{m} not gated: the evaluation yields none"] if m and not any(c["metric"] == m for c in checks) else []
    if not old_files:
        notes.append("no old held-out set: the new data superseded every old held-out row; gated on the new set only")
    note = "; ".join(notes)
    return {"passed": not failed, "checks": checks, "sets": sets, "note": note,
            "reason": "; ".join(failed) if failed else "not worse on the old held-out set, better on the new one"}
