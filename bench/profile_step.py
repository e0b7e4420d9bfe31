"""Where a training step's time goes: torch.profiler over real `tailor train` steps, grouped into what a user can act on.

    flock /work/notes/bench.lock .venv/bin/python bench/profile_step.py [--models llama-30m,moe] [--methods lora,full]
        [--precisions fp32,bf16] [--steps 3] [--warmup 2] [--rows 4] [--max-length 512] [--threads 1] [--set KEY=VALUE ...]

Models: `llama-30m` is the ~30M dense Llama of bench_train_mfu.py (hidden 512, 8 layers, vocab 8192); `moe` is the
quickstart model (preset deepseek-v3-tiny, vocab 4096). Each gets a byte-level BPE trained here on the SFT data.
Data: alpaca_en_demo (../shared/datasets) or synthetic conversations, tokenized with tailor's chat template
(loss on answers) and packed (data.packing=true) into rows of --max-length; --rows rows per step.
Methods: `lora` (r 16, all-linear) and `full` fine-tuning, through tailor's SFT recipe: the same model preparation,
collator, packed attention, TrainingArguments, callbacks and telemetry as `tailor train`.

The profiler records --steps optimizer steps after --warmup, from one step's start (on_step_begin) to the next
one's, so the window holds --steps collations, steps, optimizer updates, callback calls and log events
(train.logging_steps = --steps: one log event per window, as at the default 10 it is one per 10 steps).
Self CPU time of every op is put in one group:
  attention          sdpa / flash-attention kernels, forward and backward (tailor_packed_sdpa calls them per sample)
  LoRA matmuls       mm/addmm/bmm with the LoRA rank among the operand dimensions
  frozen matmuls     every other mm/addmm/bmm (frozen base weights for LoRA; all weights for full fine-tuning)
  dtype casts        copy_/to/_to_copy (autocast's bf16 casts of weights and activations)
  elementwise/norm/rotary  the other aten ops of forward and backward (activations, RMSNorm, rotary, residuals)
  loss               log_softmax / nll_loss / cross_entropy and their backward
  MoE routing        topk, sort, index/gather/scatter, histc, where (expert dispatch; ~0 for dense models)
  grad clipping      Trainer._clip_grad_norm
  optimizer          Optimizer.step / zero_grad
  collation          DataLoader __next__ (PackingCollator)
  callbacks: NAME    each TrainerCallback's own time (telemetry, metrics.jsonl, TensorBoard, progress)
  logging            Trainer._maybe_log_save_evaluate besides the callbacks (loss sync, trainer.log)
  host (Python)      wall time no op accounts for: the Trainer loop, autograd bookkeeping, Python between ops
The profiler's own overhead inflates small ops; the unprofiled step time is printed beside each table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transformers import TrainerCallback  # noqa: E402

from bench_packing import DEFAULT_DATA, synthetic_records  # noqa: E402
from bench_train_mfu import MODEL as LLAMA_30M  # noqa: E402
from tailor.config import load_recipe  # noqa: E402
from tailor.data.loading import load_records  # noqa: E402
from tailor.data.records import record_text  # noqa: E402
from tailor.models.presets import init_model  # noqa: E402
from tailor.models.tokenizer import train_tokenizer  # noqa: E402

MODELS = {"llama-30m": ("llama-tiny", 8192, LLAMA_30M), "moe": ("deepseek-v3-tiny", 4096, {})}
RANK = 16
GROUPS = ("attention", "LoRA matmuls", "frozen matmuls", "dtype casts", "elementwise/norm/rotary", "loss", "MoE routing",
          "grad clipping", "optimizer", "collation", "logging", "host (Python)")
_MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_mkldnn_matmul")
_CASTS = ("aten::copy_", "aten::to", "aten::_to_copy")
_LOSS = ("log_softmax", "nll_loss", "cross_entropy")
_ROUTING = ("topk", "sort", "index", "gather", "scatter", "histc", "bincount", "where", "nonzero", "one_hot")


def machine() -> str:
    flags = ""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
        flags = " ".join(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512_bf16", "amx", "avx2", "avx512f")))
        model = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model} ({os.cpu_count()} cores; {flags}); torch {torch.__version__}"


class Window(TrainerCallback):
    """Profiles steps warmup+1 .. warmup+steps (on_step_begin to the next on_step_begin) and times the step
    before and after the window without the profiler."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.prof, self.wall, self.plain, self.mark = None, 0.0, [], None

    def on_step_begin(self, args, state, control, **kw):
        now = time.perf_counter()
        if self.mark is not None and self.prof is None:
            self.plain.append(now - self.mark)  # an unprofiled step, begin to begin
        if state.global_step == self.warmup:
            from torch.profiler import ProfilerActivity, profile

            self.prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
            self.prof.start()
            self.t0 = time.perf_counter()
        elif state.global_step == self.warmup + self.steps and self.prof is not None:
            self.wall = time.perf_counter() - self.t0
            self.prof.stop()
            self.events, self.prof = self.prof.events(), False
            control.should_training_stop = True
        self.mark = time.perf_counter()


def label(trainer) -> None:
    """record_function ranges around the Trainer's phases and each callback (bench instrumentation only)."""
    from torch.profiler import record_function

    def wrap(obj, name, tag):
        fn = getattr(obj, name)

        def wrapped(*a, **k):
            with record_function(tag):
                return fn(*a, **k)
        setattr(obj, name, wrapped)

    wrap(trainer, "training_step", "phase:forward+backward")
    wrap(trainer, "_clip_grad_norm", "phase:grad clipping")
    wrap(trainer, "_maybe_log_save_evaluate", "phase:logging")
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, Window):
            continue
        for name in dir(type(cb)):
            if name.startswith("on_") and getattr(type(cb), name) is not getattr(TrainerCallback, name, None):
                wrap(cb, name, f"callback:{type(cb).__name__}")


def top_label(ev) -> str | None:
    p, found = ev, None
    while p is not None:
        n = p.name
        if n.startswith(("phase:", "callback:")):
            found = n  # the innermost phase/callback range wins for callbacks, the outermost for phases
            if n.startswith("callback:"):
                return n
        elif n.startswith("Optimizer."):
            return "optimizer"
        elif n.startswith("enumerate(DataLoader)"):
            return "collation"
        p = p.cpu_parent
    return found


def group(ev, tag: str | None) -> str:
    if tag in ("optimizer", "collation"):
        return tag
    if tag and tag.startswith("callback:"):
        return tag.replace("callback:", "callbacks: ")
    if tag == "phase:grad clipping":
        return "grad clipping"
    if tag == "phase:logging":
        return "logging"
    n = ev.name
    if "scaled_dot_product" in n or "flash_attention" in n:
        return "attention"
    if n in _MATMUL:
        dims = {d for s in (ev.input_shapes or []) if isinstance(s, (list, tuple)) for d in s if isinstance(d, int)}
        return "LoRA matmuls" if RANK in dims else "frozen matmuls"
    if n in _CASTS:
        return "dtype casts"
    if any(k in n for k in _LOSS):
        return "loss"
    if n.startswith("aten::") and any(k in n.split("::", 1)[1] for k in _ROUTING):
        return "MoE routing"
    if not n.startswith("aten::"):
        return "host (Python)"  # Python inside labelled ranges, autograd nodes (MmBackward0, ...), profiler ranges
    return "elementwise/norm/rotary"


def table(window: Window) -> dict:
    totals = defaultdict(float)
    for ev in window.events:
        tag = top_label(ev)
        totals[group(ev, tag)] += ev.self_cpu_time_total / 1e6
    accounted = sum(totals.values())
    totals["host (Python)"] += max(0.0, window.wall - accounted)
    return {k: v / window.steps for k, v in totals.items()}


def run_one(tmp: Path, name: str, method: str, precision: str, args, data: Path, tokenizer_dir: Path, base: Path) -> dict:
    from tailor.training import train as run

    window = Window(args.warmup, args.steps)
    recipe = load_recipe(None, [
        f"model.path={base}", f"model.tokenizer={tokenizer_dir}", f"data.train=[{data}]",
        f"train.output_dir={tmp / f'{name}-{method}-{precision}'}", "train.objective=sft", f"adapter.method={method}",
        f"adapter.r={RANK}", f"adapter.alpha={2 * RANK}", "data.packing=true", f"data.max_length={args.max_length}",
        f"train.batch_size={args.rows}", f"train.precision={precision}", f"train.max_steps={args.warmup + args.steps + 1}",
        f"train.logging_steps={args.steps}", "train.save_steps=100000", "train.lr=1e-4", "train.seed=0",
        *args.set])

    import tailor.training.phases as phases

    original = phases.build_trainer

    def build_and_label(*a, **k):  # the recipe's own trainer, its phases and callbacks labelled for the profiler
        trainer = original(*a, **k)
        label(trainer)
        return trainer

    phases.build_trainer = build_and_label
    try:
        run(recipe, callbacks=[window])
    finally:
        phases.build_trainer = original
    rows = table(window)
    rows["_wall_profiled"] = window.wall / window.steps
    rows["_plain"] = min(window.plain) if window.plain else float("nan")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-30m,moe")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=3, help="profiled optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="steps before the profiled window")
    ap.add_argument("--rows", type=int, default=4, help="packed rows per step (train.batch_size)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--samples", type=int, default=400, help="SFT samples to pack (enough rows for all steps)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra recipe overrides for every run")
    ap.add_argument("--json", default=None, help="also write the tables here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TAILOR_DEVICE", "cpu")
    load_before = os.getloadavg()
    if DEFAULT_DATA.is_file():
        records, source = [r for r in load_records([str(DEFAULT_DATA)]) if "messages" in r], DEFAULT_DATA.name
    else:
        records, source = synthetic_records(args.samples, 0), "synthetic conversations"
    random.Random(0).shuffle(records)
    records = records[:args.samples]
    tmp = Path(tempfile.mkdtemp(prefix="profile_step_"))
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    results = {}
    try:
        for name in args.models.split(","):
            preset, vocab, shape = MODELS[name]
            tok_dir = tmp / f"tok-{name}"
            tokenizer = train_tokenizer([record_text(r) for r in records], vocab_size=vocab, out_dir=tok_dir)
            init_model(preset, tokenizer, out_dir=tmp / f"base-{name}", seed=0, **shape)
            for method in args.methods.split(","):
                for precision in args.precisions.split(","):
                    results[f"{name} {method} {precision}"] = run_one(tmp, name, method, precision, args, data,
                                                                      tok_dir, tmp / f"base-{name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"machine: {machine()}; threads={args.threads}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"data: {source}, {len(records)} samples packed into rows of {args.max_length}; {args.rows} rows/step; "
          f"{args.steps} profiled steps after {args.warmup}; extra settings: {' '.join(args.set) or 'none'}")
    cols = list(results)
    groups = list(GROUPS) + sorted({g for r in results.values() for g in r if g.startswith("callbacks: ")})
    print("| ms per step | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for g in groups:
        print(f"| {g} | " + " | ".join(f"{1000 * results[c].get(g, 0.0):.1f}" for c in cols) + " |")
    print("| **step, profiled** | " + " | ".join(f"**{1000 * results[c]['_wall_profiled']:.0f}**" for c in cols) + " |")
    print("| step, no profiler | " + " | ".join(f"{1000 * results[c]['_plain']:.0f}" for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
