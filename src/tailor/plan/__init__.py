"""Memory and time prediction: know before a run whether it fits and how long it takes.

    from tailor.plan import plan_run, compare_methods, catalog, catalog_config
    plan = plan_run(recipe, device="cuda", memory_gb=24)          # or plan_run(recipe, model="qwen2.5-7b")
    plan.verdict, plan.peak_bytes, plan.memory.to_dict(), plan.tokens_per_second, plan.run_seconds
    plans = compare_methods(recipe, device="cuda", memory_gb=24)  # full, freeze, lora, dora, qlora; .recommended, .fixes

The model is read from config.json and built on the meta device (no weights, nothing downloaded), so it works for
any architecture transformers knows and for the catalog of popular models shipped with tailor (`catalog()`).
shape.py counts parameters per kind; memory.py is the memory model; flops.py and speed.py the time model
(FLOPs per token over a measured matmul peak); planner.py puts them together. The stage sits after models and
before runtime: `tailor train` runs the plan as a pre-flight (tailor.training.phases.preflight).
"""

from tailor.plan.catalog import catalog, catalog_config
from tailor.plan.flops import measure_matmul_peak, train_flops_per_token
from tailor.plan.memory import GIB, MemoryBreakdown, RunSettings, estimate_memory
from tailor.plan.planner import (FITS, METHODS, TIGHT, Fix, Plan, compare_methods, find_fixes, model_shape, plan_run,
                                 settings_from_recipe, verdict)
from tailor.plan.shape import ModelShape, read_config, shape_of
from tailor.plan.speed import DeviceSpeed, measure_device

__all__ = ["FITS", "GIB", "METHODS", "TIGHT", "DeviceSpeed", "Fix", "MemoryBreakdown", "ModelShape", "Plan",
           "RunSettings", "catalog", "catalog_config", "compare_methods", "estimate_memory", "find_fixes",
           "measure_device", "measure_matmul_peak", "model_shape", "plan_run", "read_config", "settings_from_recipe",
           "shape_of", "train_flops_per_token", "verdict"]
