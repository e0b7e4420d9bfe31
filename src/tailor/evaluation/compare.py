"""A/B comparison of two models, adapters or saved evaluation runs on the same examples.

Each side is either evaluated here (a model or adapter directory, through `tailor.evaluation.run.run`)
or read from an earlier `tailor eval --out` folder (its examples.jsonl), so saved runs compare without
generating again. Examples pair by index, or by an `id` field when every example carries one. For
every numeric per-example score the comparison reports both means, the difference B−A with a paired
bootstrap confidence interval (example indices resampled jointly for both sides), and win/tie/loss
counts; corpus-level metrics that are not per-example means (perplexity) get A, B and B−A only.
`--require` expressions (see `parse_requirement`) turn the result into a pass/fail gate.
"""

from __future__ import annotations

import difflib
import json
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailor.errors import TailorError

# Per-example fields that hold numbers but are not scores (identifiers, class labels).
NON_SCORE_KEYS = {"id", "idx", "index", "label", "labels", "gold", "target", "pred", "predicted", "predicted_label",
                  "class", "seed"}
# The score that ranks examples when none is named: the first of these present, else the first score.
SCORE_PREFERENCE = ("fact_accuracy", "fact_correct", "accuracy", "correct", "token_f1", "f1",
                    "normalized_exact_match", "exact_match", "exact", "chrf", "bleu", "rouge_l")
_LOWER_IS_BETTER = ("nll", "loss", "perplexity", "ppl", "empty", "refusal", "latency", "ttft", "seconds", "time",
                    "error", "ece", "drop", "rank")
_NO_DIRECTION = ("tokens", "length", "chars", "len")
TEXT_FIELDS = {"input": ("prompt", "input", "question", "query"),
               "reference": ("reference", "target_text", "expected", "answer"),
               "output": ("prediction", "output", "completion", "generated")}


def text_field(example: dict, kind: str) -> str:
    """The example's input, reference or output text, whichever name the evaluation used for it."""
    for key in TEXT_FIELDS[kind]:
        value = example.get(key)
        if isinstance(value, str):
            return value
    return ""


# Scores whose names contain a lower-is-better word but are not (a higher reciprocal rank is better).
_HIGHER_IS_BETTER = {"reciprocal_rank", "mrr"}


def direction(key: str) -> int:
    """+1 when a higher score is better, -1 when lower is better, 0 for sizes (lengths, token counts)."""
    base = key.split("/")[0].lower()
    if base in _HIGHER_IS_BETTER:
        return 1
    if any(w in base for w in _LOWER_IS_BETTER):
        return -1
    if any(base == w or base.endswith("_" + w) or base.startswith(w + "_") for w in _NO_DIRECTION):
        return 0
    return 1


def _number(v) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return None if math.isnan(v) else float(v)
    return None


def score_keys(*example_sets: list[dict]) -> list[str]:
    """Numeric per-example fields present in every set, in first-seen order (identifiers left out)."""
    per_set = []
    for examples in example_sets:
        numeric, other = {}, set()
        for ex in examples:
            for k, v in ex.items():
                if isinstance(v, (bool, int, float)):
                    numeric.setdefault(k, None)
                elif v is not None:
                    other.add(k)
        per_set.append([k for k in numeric if k not in other and k.lower() not in NON_SCORE_KEYS
                        and not k.lower().endswith(("_id", "_idx", "_index"))])
    common = set.intersection(*(set(s) for s in per_set)) if per_set else set()
    return [k for k in (per_set[0] if per_set else []) if k in common]


def primary_key(keys: list[str]) -> str | None:
    """The score that ranks examples: a preferred accuracy-like score, else the first one found."""
    for k in SCORE_PREFERENCE:
        if k in keys:
            return k
    return next((k for k in keys if direction(k) == 1), keys[0] if keys else None)


# ---------------------------------------------------------------------------------------------
# Reading the two sides


def is_eval_dir(path: str | Path) -> bool:
    """A folder written by `tailor eval --out` (it holds examples.jsonl)."""
    return (Path(path) / "examples.jsonl").is_file()


def read_eval_dir(path: str | Path) -> tuple[dict, list[dict]]:
    """(metrics from eval_results.json or {}, examples from examples.jsonl) of a saved evaluation."""
    path = Path(path)
    examples_path = path / "examples.jsonl"
    if not examples_path.is_file():
        raise TailorError(f"{path} holds no examples.jsonl", where=str(path),
                          fix="pass a folder written by `tailor eval --out DIR`, or a model/adapter directory")
    examples = []
    for n, line in enumerate(examples_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TailorError(f"invalid JSON: {exc.msg}", where=f"{examples_path}:{n}",
                              fix="re-run `tailor eval --out` to write the file again") from None
        if not isinstance(row, dict):
            raise TailorError("an example line is not a JSON object", where=f"{examples_path}:{n}")
        examples.append(row)
    results_path = path / "eval_results.json"
    metrics = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else {}
    return metrics, examples


def pair_examples(a: list[dict], b: list[dict], id_key: str | None = None) -> list[tuple[dict, dict]]:
    """Pairs (A example, B example): by `id_key` (default `id` when every example has one), else by index.

    Two evaluations of different example sets are an error: different counts or ids, or (by index)
    different reference/input texts at the same position.
    """
    if not a or not b:
        raise TailorError("one side has no examples to compare", where="A" if not a else "B")
    auto = id_key is None
    key = id_key or "id"
    if all(key in ex for ex in a + b):
        ids_a, ids_b = [ex[key] for ex in a], [ex[key] for ex in b]
        for side, ids in (("A", ids_a), ("B", ids_b)):
            if len(set(map(str, ids))) != len(ids):
                dup = next(i for i in ids if list(map(str, ids)).count(str(i)) > 1)
                raise TailorError(f"{side} has the example id {dup!r} more than once", where=f"examples.jsonl `{key}`",
                                  fix="give every example a unique id, or compare by position")
        by_id = {str(ex[key]): ex for ex in b}
        missing_b = [i for i in ids_a if str(i) not in by_id]
        missing_a = sorted(set(map(str, ids_b)) - set(map(str, ids_a)))
        if missing_a or missing_b:
            raise TailorError(f"the example sets differ: {len(missing_b)} ids only in A (e.g. {missing_b[:3]}), "
                              f"{len(missing_a)} only in B (e.g. {missing_a[:3]})", where=f"`{key}` field",
                              fix="evaluate both sides on the same data")
        return [(ex, by_id[str(ex[key])]) for ex in a]
    if not auto:
        raise TailorError(f"not every example has the id field `{key}`", where="--id-key",
                          fix="name a field every example carries, or leave --id-key out to pair by position")
    if len(a) != len(b):
        raise TailorError(f"the example sets differ: A has {len(a)} examples, B has {len(b)}",
                          fix="evaluate both sides on the same data (and the same eval.max_examples)")
    for i, (ea, eb) in enumerate(zip(a, b)):
        for kind in ("reference", "input"):
            ta, tb = text_field(ea, kind), text_field(eb, kind)
            if ta and tb and ta != tb:
                raise TailorError(f"the example sets differ: example {i} has a different {kind} in A and B "
                                  f"({ta[:60]!r} vs {tb[:60]!r})", fix="evaluate both sides on the same data file(s)")
    return list(zip(a, b))


# ---------------------------------------------------------------------------------------------
# Statistics


def paired_bootstrap(a, b, resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean of B−A, CI low, CI high): percentile bootstrap over examples, resampling the pairs jointly."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = len(d)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bounds memory to ~16 MB of indices at a time
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start:start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(d.mean()), float(low), float(high)


def win_tie_loss(a, b, higher_is_better: bool = True, tol: float = 1e-9) -> tuple[int, int, int]:
    """Examples where B scores better, the same (within tol), or worse than A."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if not higher_is_better:
        d = -d
    return int((d > tol).sum()), int((np.abs(d) <= tol).sum()), int((d < -tol).sum())


def _score_row(name: str, pairs: list[tuple[dict, dict]], key: str, resamples: int, seed: int, confidence: float) -> dict:
    a_vals, b_vals = [], []
    for ea, eb in pairs:
        va, vb = _number(ea.get(key)), _number(eb.get(key))
        if va is not None and vb is not None:
            a_vals.append(va)
            b_vals.append(vb)
    diff, low, high = paired_bootstrap(a_vals, b_vals, resamples, seed, confidence)
    sign = direction(key)
    w, t, l = win_tie_loss(a_vals, b_vals, higher_is_better=sign >= 0)
    return {"name": name, "key": key, "n": len(a_vals), "n_missing": len(pairs) - len(a_vals),
            "mean_a": float(np.mean(a_vals)) if a_vals else None, "mean_b": float(np.mean(b_vals)) if b_vals else None,
            "diff": diff, "ci_low": low, "ci_high": high, "wins": w, "ties": t, "losses": l,
            "better": {1: "higher", -1: "lower", 0: "n/a"}[sign]}


def _same(x: float, y: float) -> bool:
    """Equal up to the rounding of a mean summed in another order."""
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)


def _corpus_rows(metrics_a: dict, metrics_b: dict, scores: list[dict]) -> tuple[list[dict], dict]:
    """Corpus metrics that are not per-example means, and aliases (e.g. empty_rate -> empty) for those that are."""
    by_name = {r["name"]: r for r in scores}
    rows, aliases = [], {}
    for name, va in metrics_a.items():
        va, vb = _number(va), _number(metrics_b.get(name))
        if va is None or vb is None or name in by_name or name == "n":
            continue
        base, _, group = name.partition("/")
        match = None
        for r in scores:
            rbase, _, rgroup = r["name"].partition("/")
            if rgroup == group and (base.startswith(rbase) or rbase.startswith(base)) and r["n"] and \
                    _same(r["mean_a"], va) and _same(r["mean_b"], vb):
                match = r["name"]
                break
        if match:
            aliases[name] = match
        else:
            rows.append({"name": name, "a": va, "b": vb, "diff": vb - va, "better": {1: "higher", -1: "lower", 0: "n/a"}[direction(name)]})
    return rows, aliases


def _top_differences(pairs: list[tuple[dict, dict]], keys: list[str], key: str | None, top: int, id_key: str | None) -> list[dict]:
    ranked = []
    for i, (ea, eb) in enumerate(pairs):
        va, vb = _number(ea.get(key)) if key else None, _number(eb.get(key)) if key else None
        dscore = (vb - va) if va is not None and vb is not None else 0.0
        oa, ob = text_field(ea, "output"), text_field(eb, "output")
        dtext = 1.0 - difflib.SequenceMatcher(None, oa, ob, autojunk=False).ratio() if oa != ob else 0.0
        if dscore or dtext:
            ranked.append((-abs(dscore), -dtext, i, dscore, dtext))
    ranked.sort()
    out = []
    for _, _, i, dscore, dtext in ranked[:top]:
        ea, eb = pairs[i]
        out.append({"index": i, "id": ea.get(id_key or "id"), "input": text_field(ea, "input"),
                    "reference": text_field(ea, "reference"), "output_a": text_field(ea, "output"),
                    "output_b": text_field(eb, "output"), "score_diff": dscore, "output_difference": round(dtext, 4),
                    "scores_a": {k: ea.get(k) for k in keys if k in ea}, "scores_b": {k: eb.get(k) for k in keys if k in eb}})
    return out


def compare_examples(metrics_a: dict, examples_a: list[dict], metrics_b: dict, examples_b: list[dict], *,
                     keys: list[str] | None = None, id_key: str | None = None, group_key: str = "lang",
                     resamples: int = 2000, seed: int = 0, confidence: float = 0.95, top: int = 10) -> dict:
    """The comparison of two evaluated example sets (no models needed): score rows, corpus rows, top differences."""
    if resamples < 100:
        raise TailorError(f"{resamples} bootstrap resamples are too few for a stable interval", where="--resamples",
                          fix="use 1000 or more")
    pairs = pair_examples(examples_a, examples_b, id_key)
    found = score_keys(examples_a, examples_b)
    if keys:
        unknown = [k for k in keys if k not in found]
        if unknown:
            raise TailorError(f"no per-example score named {unknown[0]!r}", where="--scores",
                              fix=f"choose from: {', '.join(found) or '(none found)'}")
        found = list(keys)
    scores = [_score_row(k, pairs, k, resamples, seed, confidence) for k in found]
    groups = sorted({str(ea.get(group_key, eb.get(group_key))) for ea, eb in pairs
                     if group_key in ea or group_key in eb})
    for g in groups:
        sub = [(ea, eb) for ea, eb in pairs if str(ea.get(group_key, eb.get(group_key))) == g]
        scores += [_score_row(f"{k}/{g}", sub, k, resamples, seed, confidence) for k in found]
    for row in scores:
        # A corpus metric of the same name that is not this mean (corpus BLEU vs sentence BLEU) keeps the name.
        va, vb = _number(metrics_a.get(row["name"])), _number(metrics_b.get(row["name"]))
        if va is not None and vb is not None and row["n"] and not (_same(va, row["mean_a"]) and _same(vb, row["mean_b"])):
            row["name"] = "mean_" + row["name"]
    corpus, aliases = _corpus_rows(metrics_a, metrics_b, scores)
    primary = primary_key(found)
    return {"n": len(pairs), "pairing": "id" if all((id_key or "id") in ex for ex in examples_a + examples_b) else "index",
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": confidence},
            "primary": primary, "scores": scores, "corpus": corpus, "aliases": aliases,
            "top_differences": _top_differences(pairs, found, primary, top, id_key)}


# ---------------------------------------------------------------------------------------------
# The gate


@dataclass
class Requirement:
    """One gate condition. `quantity` is diff (B−A), b, a, ci_low or ci_high of the metric."""

    text: str
    metric: str
    quantity: str
    op: str
    value: float


_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_REQ = re.compile(r"^\s*(?:(?P<func>ci_low|ci_high|diff|a|b)\s*\(\s*(?P<fmetric>[^()\s<>=]+)\s*\)|(?P<metric>[^()\s<>=!]+))"
                  r"\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*$")
GRAMMAR = ("METRIC OP NUMBER, where OP is >=, >, <=, < or ==; a signed number (+0.02, -0.01) bounds the difference "
           "B−A, an unsigned one (0.8) bounds B's own value; or FUNC(METRIC) OP NUMBER with FUNC one of "
           "diff, a, b, ci_low, ci_high (the confidence interval of B−A)")


def parse_requirement(text: str) -> Requirement:
    """Parse `fact_accuracy>=+0.02`, `fact_accuracy>=0.8`, `exact_match>-0.01` or `ci_low(fact_accuracy)>0`."""
    m = _REQ.match(text)
    if not m:
        raise TailorError(f"cannot read the requirement {text!r}", where="--require", fix=f"write {GRAMMAR}")
    value = m["value"]
    if m["func"]:
        quantity, metric = m["func"], m["fmetric"]
    else:
        quantity, metric = ("diff" if value[0] in "+-" else "b"), m["metric"]
    return Requirement(text.strip(), metric, quantity, m["op"], float(value))


def check_requirements(result: dict, requirements: list[Requirement]) -> list[dict]:
    """Each requirement with the measured value and whether it holds; unknown metrics are a TailorError."""
    scores = {r["name"]: r for r in result["scores"]}
    corpus = {r["name"]: r for r in result["corpus"]}
    checked = []
    for req in requirements:
        name = result.get("aliases", {}).get(req.metric, req.metric)
        if name in scores:
            row = scores[name]
            values = {"diff": row["diff"], "a": row["mean_a"], "b": row["mean_b"], "ci_low": row["ci_low"], "ci_high": row["ci_high"]}
        elif name in corpus:
            row = corpus[name]
            if req.quantity in ("ci_low", "ci_high"):
                raise TailorError(f"{req.metric} has no confidence interval: it is a corpus metric, not a mean of "
                                  "per-example scores", where=f"--require {req.text!r}",
                                  fix=f"bound its difference instead, e.g. {req.metric}{req.op}{req.value:+g}")
            values = {"diff": row["diff"], "a": row["a"], "b": row["b"]}
        else:
            names = list(scores) + list(corpus) + list(result.get("aliases", {}))
            near = difflib.get_close_matches(req.metric, names, n=1, cutoff=0.5)
            raise TailorError(f"no metric named {req.metric!r} in this comparison", where=f"--require {req.text!r}",
                              fix=(f"did you mean {near[0]!r}? " if near else "") + f"available: {', '.join(names)}")
        measured = values[req.quantity]
        holds = measured is not None and not math.isnan(measured) and _OPS[req.op](measured, req.value)
        checked.append({"requirement": req.text, "metric": name, "quantity": req.quantity, "value": measured, "holds": bool(holds)})
    return checked


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class CompareResult:
    result: dict
    gate: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    report: Path | None = None

    @property
    def passed(self) -> bool:
        return all(g["holds"] for g in self.gate)


def _side(target: str | Path, data, cfg, out_dir: Path | None, label: str) -> tuple[dict, list[dict], str]:
    """A side's (metrics, examples, description): read a saved evaluation, or evaluate a model/adapter now."""
    from tailor.evaluation.run import run as evaluate

    target = Path(target)
    if is_eval_dir(target):
        metrics, examples = read_eval_dir(target)
        return metrics, examples, f"saved evaluation {target}"
    if not target.exists():
        raise TailorError(f"{label} does not exist: {target}", where=label,
                          fix="pass a model directory, an adapter directory, or a `tailor eval --out` folder")
    if not data and not (cfg and cfg.data):
        raise TailorError(f"{label} ({target}) is a model to evaluate, and no data was given", where="--data",
                          fix="pass --data FILE.jsonl (or compare two saved `tailor eval --out` folders)")
    res = evaluate(target, data, cfg, out_dir=out_dir / label.lower() if out_dir else None)
    return res.metrics, res.examples, f"model {target}"


def run(a: str | Path, b: str | Path, data: list[str] | None = None, cfg=None, out_dir: str | Path | None = None,
        requirements: list[str] | None = None, *, keys: list[str] | None = None, id_key: str | None = None,
        resamples: int = 2000, seed: int = 0, top: int = 10, report: bool = True) -> CompareResult:
    """Compare B against A; with out_dir write compare.json, a/ and b/ evaluations and report.html/report.md."""
    reqs = [parse_requirement(r) for r in requirements or []]  # bad expressions fail before any generation
    if data and is_eval_dir(a) and is_eval_dir(b):
        raise TailorError("--data is given, but A and B are both saved evaluations (nothing is evaluated)",
                          where="--data", fix="leave --data out to compare the saved runs, or pass model directories")
    if cfg is not None and cfg.model_fields_set and is_eval_dir(a) and is_eval_dir(b):
        raise TailorError("eval settings are given, but A and B are both saved evaluations (nothing is evaluated)",
                          where="eval.* overrides", fix="leave them out, or pass model directories to evaluate")
    out = Path(out_dir) if out_dir else None
    ma, ea, da = _side(a, data, cfg, out, "A")
    mb, eb, db = _side(b, data, cfg, out, "B")
    result = compare_examples(ma, ea, mb, eb, keys=keys, id_key=id_key, resamples=resamples, seed=seed, top=top)
    result = {"a": {"source": da, "metrics": ma}, "b": {"source": db, "metrics": mb}, **result}
    try:
        gate = check_requirements(result, reqs)
    except TailorError as exc:
        if not out or (is_eval_dir(a) and is_eval_dir(b)):
            raise
        saved = [str(x if is_eval_dir(x) else out / side) for x, side in ((a, "a"), (b, "b"))]
        raise TailorError(exc.what, where=exc.where, fix=f"{exc.fix}; the evaluations are saved, so "
                          f"`tailor compare {' '.join(saved)} --require ...` skips generating again") from None
    result["gate"] = gate
    res = CompareResult(result, gate, out)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(_clean(result), indent=2, ensure_ascii=False), encoding="utf-8")
        if report:
            from tailor.evaluation.report import write_report

            res.report = write_report(out)
    return res


def _clean(obj):
    """JSON without NaN (not valid JSON): NaN becomes null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def print_comparison(res: CompareResult, console) -> None:
    """The score table (with CIs and win/tie/loss), corpus metrics and the gate, for the terminal."""
    from rich.table import Table

    r = res.result
    conf = int(round(100 * r["bootstrap"]["confidence"]))
    table = Table(title=f"B vs A on {r['n']} paired examples")
    for col in ("metric", "A", "B", f"B − A [{conf}% CI]", "win/tie/loss"):
        table.add_column(col, justify="left" if col == "metric" else "right", overflow="fold", no_wrap=col != "metric")
    for row in r["scores"]:
        if "/" in row["name"] and row["key"] != r["primary"]:
            continue  # other per-language rows are in compare.json and the report
        table.add_row(row["name"], _f(row["mean_a"], digits=3), _f(row["mean_b"], digits=3),
                      f"{_f(row['diff'], True, 3)} [{_f(row['ci_low'], True, 3)}, {_f(row['ci_high'], True, 3)}]",
                      f"{row['wins']}/{row['ties']}/{row['losses']}")
    for row in r["corpus"]:
        table.add_row(row["name"], _f(row["a"], digits=3), _f(row["b"], digits=3), _f(row["diff"], True, 3), "-")
    console.print(f"A: {r['a']['source']}\nB: {r['b']['source']}")
    console.print(table)
    for g in res.gate:
        mark = "[bold green]pass[/]" if g["holds"] else "[bold red]FAIL[/]"
        console.print(f"{mark}  {g['requirement']}  ({g['quantity']} of {g['metric']} = {_f(g['value'], signed=g['quantity'] != 'b')})")


def _f(v, signed: bool = False, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
