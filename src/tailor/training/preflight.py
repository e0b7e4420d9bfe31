"""The pre-flight of every training run: the plan (tailor.plan) of the recipe, before any weight is loaded.

`start` calls `preflight`: it predicts the run's peak memory from the model's config.json (or preset), writes it as
plan.json in the run folder, and with train.preflight=stop (the default) refuses a run that will not fit on this
device, naming the smallest change that makes it fit; warn logs the same and trains anyway; off skips it.
It also predicts the step time: from the matmul probe with a default efficiency, or with
train.preflight_calibrate from a few real steps of the model (tailor.plan.speed.calibrate, the method applied by
tailor's adapters). `finish` puts the predictions beside the measured peak and step time in train_summary.json
(`plan_check`), so every run adds a data point to the memory and time models' accuracy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from tailor.errors import TailorError
from tailor.training.distributed import is_main_process, world_size

log = logging.getLogger("tailor")


def preflight(recipe, device: torch.device, out: Path, precision: str):
    """The run's Plan (None with train.preflight=off or when the model cannot be planned); raises TailorError for a
    run predicted not to fit under train.preflight=stop."""
    from tailor.plan import find_fixes, model_shape, plan_run, settings_from_recipe
    from tailor.plan.report import gib, one_line

    t = recipe.train
    if t.preflight == "off":
        return None
    kind = device.type
    try:
        shape = model_shape(recipe)
        settings = replace(settings_from_recipe(recipe, kind, world_size()), precision=precision)
        plan = plan_run(recipe, kind, t.preflight_memory_gb, world_size(), settings=settings, shape=shape,
                        calibrate=t.preflight_calibrate, prepare=_prepare(recipe))
    except TailorError as exc:  # a model the plan cannot read must not stop a run that may well work
        log.warning("pre-flight: no plan (%s)", exc.what)
        return None
    if plan.verdict == "does not fit":
        plan.fixes = find_fixes(plan, shape, recipe, t.preflight_memory_gb)
    if is_main_process():
        (out / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2, default=str), encoding="utf-8")
    if plan.verdict != "does not fit":
        log.info("pre-flight: %s", one_line(plan))
        return plan
    fixes = "; ".join(f"{f.change} ({' '.join(f.overrides)}: peak {gib(f.peak_bytes)} GiB)" for f in plan.fixes)
    what = f"this run will not fit in memory: predicted {one_line(plan)}"
    if t.preflight == "warn":
        log.warning("pre-flight (train.preflight=warn, training anyway): %s", what)
        return plan
    raise TailorError(what, where=f"train.preflight (the plan is in {out / 'plan.json'})",
                      fix=(fixes + "; " if fixes else "") + "or set train.preflight=warn to train anyway")


def _prepare(recipe):
    """The calibration's model gets the recipe's method the way training applies it."""
    from tailor.adapters import apply_adapter

    return lambda model: apply_adapter(model, recipe.adapter)


def as_trained(recipe, device: str | None):
    """For `tailor plan`: set train.precision=auto to what `tailor train` resolves on this device (on a CPU with
    bf16 instructions a matmul probe decides), and return the calibration's `prepare` (the recipe's method)."""
    if recipe.train.precision == "auto":
        from tailor.training.precision import resolve_precision

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu" or torch.cuda.is_available():
            recipe.train.precision = resolve_precision("auto", torch.device(device),
                                                       measure=recipe.train.tensor_parallel == 1).name
    return _prepare(recipe)


def plan_check(plan, measured_peak_mb: float | None, device: torch.device, metrics: dict | None = None) -> dict:
    """Predicted vs measured peak and step time for train_summary.json. Peak on CPU: both the process's resident
    peak (the prediction includes the process's own footprint before the model); CUDA: max_memory_allocated, so
    the prediction leaves out the context overhead it adds for the verdict. Step time: the mean optimizer step of
    the run after the first (its warm-up), from the telemetry's `step_seconds`, `timed_steps` and
    `first_step_seconds` in `metrics`."""
    if plan is None:
        return {}
    predicted = plan.peak_bytes - (plan.memory.overhead if device.type == "cuda" else 0)
    out = {"predicted_peak_mb": round(predicted / 2**20, 1), "measured_peak_mb": measured_peak_mb,
           "verdict": plan.verdict}
    if measured_peak_mb:
        out["error"] = round(predicted / 2**20 / measured_peak_mb - 1, 4)
    if plan.step_seconds:
        out["predicted_step_seconds"] = round(plan.step_seconds, 4)
        out["step_time_calibrated"] = bool(plan.speed and plan.speed.calibrated)
        m = metrics or {}
        steps, total, first = m.get("timed_steps") or 0, m.get("step_seconds"), m.get("first_step_seconds") or 0.0
        if steps > 1 and total:
            measured = (total - first) / (steps - 1)
            out["measured_step_seconds"] = round(measured, 4)
            out["step_time_error"] = round(plan.step_seconds / measured - 1, 4)
    return {"plan_check": out}
