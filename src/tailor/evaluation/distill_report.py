"""What a distillation bought: the teacher ("before") against the student ("after") in one table.

The figures are `tailor quantize`'s (tailor.evaluation.measure): size on disk, parameters, peak memory,
CPU decode tokens/s, time to first token, and with evaluation data the perplexity and main metric that
`tailor eval` computes, each model measured in a fresh process on the same data. The table is printed
and written to OUT/distill_report.json with both measurements and the share of the teacher's main metric
the student keeps.
"""

from __future__ import annotations

import json
from pathlib import Path

from tailor.config import MEASURE_MAX_EXAMPLES
from tailor.errors import TailorError


def check_eval_data(paths: list[str] | None, max_examples: int) -> None:
    """Fail before training, not after it, when the evaluation data cannot be read."""
    if max_examples < 1:
        raise TailorError(f"--max-examples {max_examples}: at least 1 example is needed", where="--max-examples")
    for p in paths or []:
        if not Path(p).exists():
            raise TailorError(f"evaluation data not found: {p}", where="--eval-data",
                              fix="pass held-out chat records (.jsonl) or text files that exist")


def report(teacher: str | Path, student: str | Path, out_dir: str | Path, eval_data: list[str] | None = None,
           max_examples: int = MEASURE_MAX_EXAMPLES, console=None) -> dict:
    """Measure teacher and student, print the before/after table, write OUT/distill_report.json; returns it."""
    from tailor.evaluation.measure import before_after_table, measure_isolated

    check_eval_data(eval_data, max_examples)
    before = measure_isolated(teacher, eval_data, max_examples=max_examples)
    after = measure_isolated(student, eval_data, max_examples=max_examples)
    table = before_after_table(before, after, f"distillation: teacher {teacher} (before) -> student {student} (after)",
                               console=console)
    keep = None
    if before.get("main_metric") and after.get("main_metric") is not None:
        keep = after["main_metric"] / before["main_metric"]
    out = {"teacher": str(teacher), "student": str(student), "parameter_ratio": after["parameters"] / before["parameters"],
           "main_metric_name": after.get("main_metric_name"), "teacher_keep": keep, "before": before, "after": after,
           "table": table}
    path = Path(out_dir) / "distill_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    out["path"] = path
    if console is not None:
        line = f"student: {out['parameter_ratio']:.3f}x the teacher's parameters"
        if keep is not None:
            line += f", keeps {keep:.1%} of its {out['main_metric_name']}"
        console.print(line + f"; report: {path}")
    return out
