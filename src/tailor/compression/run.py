"""The compression stage's entry points: quantize or prune a model and report what it cost.

Each measures the model before, compresses it, measures the saved result after loading it again
(so the after figures prove the directory works), prints the before/after table and writes
`compression_report.json` (both measurements, the table and the method's own report) into the
output directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tailor.config import MEASURE_MAX_EXAMPLES


@dataclass
class CompressionResult:
    out_dir: Path
    details: dict                    # the quantization manifest or the pruning report
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    table: list[dict] = field(default_factory=list)
    report: Path | None = None


def _finish(out: Path, title: str, details: dict, before: dict | None, after: dict | None, console) -> CompressionResult:
    from tailor.evaluation.measure import before_after_table

    result = CompressionResult(out, details)
    report = out / "compression_report.json"
    if before is not None and after is not None:
        result.before, result.after = before, after
        result.table = before_after_table(before, after, title, console=console)
    report.write_text(json.dumps({"title": title, "details": details, "before": before, "after": after,
                                  "table": result.table}, indent=2, default=str), encoding="utf-8")
    result.report = report
    return result


def quantize(model_dir, method: str, out_dir, eval_data: list[str] | None = None, group_size: int = 32,
             measure: bool = True, max_examples: int = MEASURE_MAX_EXAMPLES, console=None) -> CompressionResult:
    """Quantize `model_dir` into `out_dir` with `method`; measure before and after unless measure=False."""
    from tailor.evaluation import measure as M
    from tailor.compression.quantize import check_method
    from tailor.compression.quantize import quantize as do_quantize

    check_method(method)  # fail before the (slow) baseline measurement
    before = M.measure_isolated(model_dir, eval_data, max_examples=max_examples) if measure else None
    manifest = do_quantize(model_dir, method, out_dir, group_size=group_size)
    after = M.measure_isolated(out_dir, eval_data, max_examples=max_examples) if measure else None
    return _finish(Path(out_dir), f"{method} quantization of {model_dir}", manifest, before, after, console)


def prune(model_dir, method: str, out_dir, amount: float = 0.2, scope: str = "global",
          calibration_data: list[str] | None = None, recover_steps: int = 0, recover_data: list[str] | None = None,
          eval_data: list[str] | None = None, measure: bool = True, max_examples: int = MEASURE_MAX_EXAMPLES,
          console=None) -> CompressionResult:
    """Prune `model_dir` into `out_dir`; optional recovery fine-tuning; measure before and after."""
    from tailor.evaluation import measure as M
    from tailor.compression.prune import check_args
    from tailor.compression.prune import prune as do_prune

    check_args(method, amount, scope, recover_steps, recover_data)
    before = M.measure_isolated(model_dir, eval_data, max_examples=max_examples) if measure else None
    report = do_prune(model_dir, method, out_dir, amount=amount, scope=scope, calibration_data=calibration_data,
                      recover_steps=recover_steps, recover_data=recover_data)
    after = M.measure_isolated(out_dir, eval_data, max_examples=max_examples) if measure else None
    return _finish(Path(out_dir), f"{method} pruning ({amount:.0%}) of {model_dir}", report, before, after, console)
