"""Predicted vs measured peak memory and step time of real training runs: the accuracy of `tailor plan`.

    flock /work/notes/bench.lock .venv/bin/python bench/bench_plan.py [--steps 4] [--only N,M] [--json OUT]

Each configuration trains in a fresh subprocess: a model built from tailor's presets (Llama, Qwen2, DeepSeek-V3
MoE with multi-head latent attention; sizes scaled per configuration), the adapter applied by tailor
(`tailor.adapters.apply_adapter`), tailor's TrainingArguments (`tailor.training.args.training_arguments`: fused
AdamW, bf16 autocast, gradient checkpointing as the recipe says) and TailorTrainer, on fixed-length synthetic token
rows (every token loss-bearing, no padding: what pretraining and packed SFT feed).

Memory: the child imports everything, then records its resident set (the baseline: interpreter, torch,
transformers, tailor) and resets the kernel's high-water mark (/proc/self/clear_refs); the measured peak is VmHWM
after training minus that baseline. The plan's prediction is compared above the same line: its peak minus its
framework overhead (the resident set a planning process measures of itself), so what the Trainer, autograd and the
allocator add on top (CPU_RUNTIME, CPU_HEAP_RETENTION in tailor.plan.memory) is part of what the plan must predict.

Time: the fastest optimizer step of steps 2..N (on_step_begin to on_step_end; the machine is shared, and the
fastest step is the one least slowed by other processes; the median is printed beside it), in the process's CPU
time when it runs one thread (`--clock`: what other processes' load does not inflate, so the calibration and the
training, minutes apart, see the same machine; on an idle box it equals the elapsed time), against the plan's step
time after `tailor.plan.speed.calibrate`: a few real steps of the same model, method (applied by tailor's adapters),
precision and checkpointing at short sequences and small batches (128 x 1, 128 x 4, 512 x 1, 512 x 2, capped at the
row's sequence), run in the parent just before the row trains, plus the row's own micro-batch (the calibration's
anchor, as `tailor plan` and the pre-flight time it: the fit is scaled by its measured / fitted ratio). "pred s" is
that plan; "fit s" the fit of the small shapes alone (no anchor: how well the FLOPs model extrapolates), "uncal s"
the matmul probe with the default efficiency. A row whose own shape is one of the small calibration shapes is marked
"(shape calibrated on)".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

VOCAB = 8192
SCALE = {  # model overrides on top of the preset (the *-tiny presets are hidden 256, 4 layers)
    "small": {},
    "medium": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=6,
                   num_key_value_heads=2, max_position_embeddings=4096),
}
GRID = [  # preset, scale, method, seq, batch, gradient checkpointing, precision
    ("llama-tiny", "small", "full", 128, 1, False, "fp32"),
    ("llama-tiny", "medium", "full", 512, 8, False, "fp32"),
    ("llama-tiny", "medium", "lora", 1024, 4, False, "fp32"),
    ("llama-tiny", "medium", "lora", 2048, 2, True, "fp32"),
    ("llama-tiny", "small", "freeze", 256, 16, False, "fp32"),
    ("llama-tiny", "medium", "full", 1024, 4, False, "bf16"),
    ("llama-tiny", "medium", "full", 1024, 4, True, "fp32"),
    ("qwen2-tiny", "small", "full", 256, 16, False, "fp32"),
    ("qwen2-tiny", "medium", "lora", 2048, 2, False, "fp32"),
    ("qwen2-tiny", "medium", "freeze", 512, 8, False, "bf16"),
    ("qwen2-tiny", "small", "lora", 128, 16, True, "bf16"),
    ("deepseek-v3-tiny", "small", "full", 256, 8, False, "fp32"),
    ("deepseek-v3-tiny", "small", "lora", 512, 4, True, "fp32"),
    ("deepseek-v3-tiny", "small", "freeze", 1024, 2, False, "fp32"),
    ("deepseek-v3-tiny", "small", "full", 2048, 1, False, "bf16"),
    # held out: added after every memory constant was set (rows 1-15 set CPU_HEAP_RETENTION / CPU_RUNTIME, rows
    # 3, 4 and 9 the LoRA term), so nothing in the memory or time model was fitted on them
    ("qwen2-tiny", "medium", "full", 1024, 2, True, "bf16"),
    ("llama-tiny", "medium", "lora", 512, 8, False, "bf16"),
    ("deepseek-v3-tiny", "small", "lora", 1024, 4, False, "bf16"),
    ("llama-tiny", "small", "freeze", 2048, 1, True, "fp32"),
]
HELD_OUT = range(16, len(GRID) + 1)
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def config_of(preset: str, scale: str):
    from tailor.models.presets import build_config

    over = dict(SCALE[scale])
    if preset.startswith("deepseek") and scale != "small":
        over = {k: v for k, v in over.items() if k in ("hidden_size", "num_hidden_layers", "max_position_embeddings")}
    if preset.startswith("deepseek"):
        over.setdefault("max_position_embeddings", 4096)
    return build_config(preset, VOCAB, **over)


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(spec: dict) -> dict:
    """One training run; returns measured peak above the baseline and step times."""
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback

    from tailor.adapters import apply_adapter
    from tailor.config import AdapterConfig, TrainConfig
    from tailor.training.args import training_arguments
    from tailor.training.trainer import TailorTrainer

    torch.set_num_threads(spec["threads"])
    config = config_of(spec["preset"], spec["scale"])
    seq, batch, steps = spec["seq"], spec["batch"], spec["steps"]

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return batch * steps

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            ids = torch.randint(0, VOCAB, (seq,), generator=g)
            return {"input_ids": ids, "labels": ids.clone()}

    times: list[float] = []
    walls: list[float] = []
    clock = CLOCKS[spec["clock"]]

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0, self.w0 = clock(), time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(clock() - self.t0)
            walls.append(time.perf_counter() - self.w0)

    t = TrainConfig(max_steps=steps, batch_size=batch, grad_accum=1, gradient_checkpointing=spec["gc"],
                    precision=spec["precision"], output_dir=spec["out"], save_steps=10_000, logging_steps=10_000,
                    mfu_probe_seconds=0, warmup_ratio=0.0)
    args = training_arguments(t, spec["out"], torch.device("cpu"), spec["precision"], has_validation=False)
    args.save_strategy = "no"
    baseline = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = apply_adapter(model, AdapterConfig(method=spec["method"], freeze_last_n=2))
    trainer = TailorTrainer(model=model, args=args, train_dataset=Rows(), callbacks=[Timer()])
    trainer.train()
    peak = rss_kib("VmHWM")
    timed = times[1:] or times  # the first step is the warm-up
    return {"baseline_mib": baseline / 1024, "peak_above_mib": (peak - baseline) / 1024,
            "step_seconds": min(timed), "median_step_seconds": statistics.median(timed), "steps": len(times),
            "wall_step_seconds": min(walls[1:] or walls)}


def machine() -> str:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    keep = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    return f"{name}, {os.cpu_count()} CPUs ({' '.join(keep)}), load {os.getloadavg()[0]:.2f}, {platform.python_version()}"


def predict(spec: dict, calibrated: bool):
    """(the plan with the calibrated time model or, when `calibrated` is False, the uncalibrated one; the
    uncalibrated step seconds; the step seconds of the fit of the small shapes alone, without the run's own
    micro-batch: None uncalibrated)."""
    from tailor.adapters import apply_adapter
    from tailor.config import AdapterConfig
    from tailor.plan import RunSettings, shape_of
    from tailor.plan.planner import plan_run
    from tailor.plan.speed import calibrate

    config = config_of(spec["preset"], spec["scale"])
    shape = shape_of(config, config.to_dict(), name=spec["preset"])
    s = RunSettings(method=spec["method"], freeze_last_n=2, precision=spec["precision"], seq_len=spec["seq"],
                    batch_size=spec["batch"], gradient_checkpointing=spec["gc"], device="cpu")
    plan = plan_run(None, "cpu", settings=s, shape=shape, calibrate=False)
    uncalibrated, fit_only = plan.step_seconds, None
    if calibrated:
        speed = calibrate(shape, s, prepare=lambda m: apply_adapter(m, AdapterConfig(method=spec["method"], freeze_last_n=2)),
                          clock=CLOCKS[spec["clock"]])
        plan = plan_run(None, "cpu", settings=s, shape=shape, speed=speed)
        fit_only = plan_run(None, "cpu", settings=s, shape=shape, speed=replace(speed, anchor=None)).step_seconds
    return plan, uncalibrated, fit_only


def _span(part: str) -> range:
    lo, _, hi = part.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the calibration and the training (1: on a shared, oversubscribed machine 2 OpenMP threads wait on each other at every op)")
    ap.add_argument("--only", default=None, help="comma-separated row numbers (1-based) or ranges (16-19)")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--no-calibrate", action="store_true", help="default efficiency instead of calibrated steps")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                    help="cpu: the process's CPU time (other processes' load does not enter; one thread only), "
                         "wall: elapsed time (default: cpu with --threads 1, else wall)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(json.loads(a.child))))
        return 0
    import torch

    torch.set_num_threads(a.threads)
    rows = []
    picked = [n for part in a.only.split(",") for n in _span(part)] if a.only else range(1, len(GRID) + 1)
    clock = a.clock or ("cpu" if a.threads == 1 else "wall")
    print(f"machine: {machine()}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{a.threads} thread(s), steps timed in {clock} time")
    header = f"{'#':>2} {'model':17} {'scale':6} {'method':6} {'seq':>5} {'bs':>3} {'gc':3} {'prec':4} " \
             f"{'pred MiB':>9} {'meas MiB':>9} {'err':>7} {'pred s':>7} {'meas s':>7} {'err':>7} {'median s':>8} " \
             f"{'uncal s':>7} {'err':>7} {'fit s':>7} {'err':>7}"
    print(header)
    for n in picked:
        preset, scale, method, seq, batch, gc, prec = GRID[n - 1]
        spec = dict(preset=preset, scale=scale, method=method, seq=seq, batch=batch, gc=gc, precision=prec,
                    steps=a.steps, threads=a.threads, out=f"/tmp/bench_plan_{os.getpid()}_{n}",
                    clock=clock)
        plan, uncalibrated, fit_only = predict(spec, not a.no_calibrate)
        mem = plan.memory
        pred_mib = (plan.peak_bytes - plan.memory.overhead) / 2**20
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{n:>2} failed: {proc.stderr[-2000:]}")
            continue
        m = json.loads(line[7:])
        err_m = pred_mib / m["peak_above_mib"] - 1
        err_t = plan.step_seconds / m["step_seconds"] - 1
        cal = plan.speed.to_dict() if plan.speed else {}
        in_sample = any(pt["seq"] == seq and pt["batch"] == batch for pt in cal.get("points", []))  # in the fit
        rows.append(dict(n=n, preset=preset, scale=scale, method=method, seq=seq, batch=batch, gc=gc, precision=prec,
                         predicted_mib=round(pred_mib, 1), measured_mib=round(m["peak_above_mib"], 1),
                         memory_error=round(err_m, 4), predicted_s=round(plan.step_seconds, 4),
                         measured_s=round(m["step_seconds"], 4), time_error=round(err_t, 4),
                         measured_median_s=round(m["median_step_seconds"], 4),
                         measured_wall_s=round(m["wall_step_seconds"], 4), clock=clock,
                         uncalibrated_s=round(uncalibrated, 4), uncalibrated_error=round(uncalibrated / m["step_seconds"] - 1, 4),
                         fit_only_s=fit_only and round(fit_only, 4),
                         fit_only_error=fit_only and round(fit_only / m["step_seconds"] - 1, 4),
                         breakdown_mib={k: round(v / 2**20, 1) for k, v in mem.to_dict().items()},
                         baseline_mib=round(m["baseline_mib"], 1), time_in_sample=in_sample,
                         memory_held_out=n in HELD_OUT,
                         calibration={k: cal.get(k) for k in ("efficiency", "attention_efficiency", "fixed_seconds",
                                                              "optimizer_seconds", "depth", "points", "anchor",
                                                              "anchor_skipped")}))
        print(f"{n:>2} {preset:17} {scale:6} {method:6} {seq:>5} {batch:>3} {'yes' if gc else 'no':3} {prec:4} "
              f"{pred_mib:9.0f} {m['peak_above_mib']:9.0f} {err_m:+7.1%} {plan.step_seconds:7.3f} "
              f"{m['step_seconds']:7.3f} {err_t:+7.1%} {m['median_step_seconds']:8.3f} {uncalibrated:7.3f} "
              f"{uncalibrated / m['step_seconds'] - 1:+7.1%}"
              + (f" {fit_only:7.3f} {fit_only / m['step_seconds'] - 1:+7.1%}" if fit_only else "")
              + f"{' (shape calibrated on)' if in_sample else ''}{' (held out)' if n in HELD_OUT else ''}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    if rows:
        within = sum(abs(r["time_error"]) <= 0.25 for r in rows)
        fit_within = sum(r["fit_only_error"] is not None and abs(r["fit_only_error"]) <= 0.25 for r in rows)
        print(f"time within 25%: {within} of {len(rows)} (the fit of the small shapes alone: {fit_within}); "
              f"memory within 15%: {sum(abs(r['memory_error']) <= 0.15 for r in rows)} of {len(rows)}")
        print(f"max |memory error| {max(abs(r['memory_error']) for r in rows):.1%}; "
              f"max |time error| {max(abs(r['time_error']) for r in rows):.1%} over {len(rows)} configurations; "
              f"load {os.getloadavg()[0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
