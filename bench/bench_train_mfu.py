"""Full fine-tuning MFU of a ~30M-parameter Llama-style model at sequence length 512, through `tailor.training.train`.

    .venv/bin/python bench/bench_train_mfu.py [--steps 10] [--warmup 2] [--batch-size 4] [--threads 2] [--min-mfu 0.6]

MFU = train_flops_per_token(model, seq_len) x tokens/s / measured matmul peak (tailor.plan.flops). The peak
is measured in this process with the same thread count, by a short matmul probe before training and after every
optimizer step (outside the timed intervals): other processes on a shared machine slow the probe and the training
alike, and each step is compared with the probes on either side of it. A step's interval runs from one
`on_step_end` to the next, so it holds everything the Trainer does per step (data loading, forward, backward,
clipping, optimizer, scheduler, callbacks, logging); the first --warmup steps are left out.

The model (hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 8192, tied embeddings: 29.5M parameters)
and a byte-level BPE tokenizer are built here; the data is synthetic text of pseudo-words, packed into full
512-token blocks by tailor's pretraining path, so every token is loss-bearing. The recipe is tailor's own
defaults except what a benchmark needs (steps, batch size, no checkpoints during timing); pass recipe keys
after `--set` to compare settings, e.g. `--set train.optimizer=sgd`. `--profile` prints torch.profiler's
per-op CPU time of one training step instead of the MFU run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transformers import TrainerCallback  # noqa: E402

from tailor.config import load_recipe  # noqa: E402
from tailor.models.presets import init_model  # noqa: E402
from tailor.models.tokenizer import train_tokenizer  # noqa: E402
from tailor.plan.flops import measure_matmul_peak, train_flops_per_token  # noqa: E402
from tailor.training import train as run  # noqa: E402

MODEL = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
             max_position_embeddings=1024, tie_word_embeddings=True)


def pseudo_text(n_words: int, seed: int, lexicon: int = 20000) -> list[str]:
    """Documents of Zipf-distributed pseudo-words: a BPE trained on them reaches a realistic vocabulary size."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(lexicon)]
    cum = list(itertools.accumulate(1 / (i + 1) for i in range(lexicon)))
    docs, left = [], n_words
    while left > 0:
        n = min(left, rng.randint(50, 800))
        docs.append(" ".join(rng.choices(words, cum_weights=cum, k=n)) + ".")
        left -= n
    return docs


class StepClock(TrainerCallback):
    """Wall time of each optimizer step (on_step_end to on_step_end) and a matmul probe between steps."""

    def __init__(self, probe_seconds: float, device: torch.device, dtype: torch.dtype, size: int):
        self.probe_seconds = probe_seconds
        self.probe = dict(device=device, dtype=dtype, size=size)
        self.intervals: list[float] = []
        self.probes: list[float] = []
        self.model = None

    def _probe_and_mark(self):
        if self.probe_seconds:
            self.probes.append(measure_matmul_peak(seconds=self.probe_seconds, **self.probe))
        self.mark = time.perf_counter()

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model
        self._probe_and_mark()

    def on_step_end(self, args, state, control, **kw):
        self.intervals.append(time.perf_counter() - self.mark)
        self._probe_and_mark()


def profile_one_step(model, batch_size: int, seq_len: int) -> None:
    """torch.profiler per-op CPU time of forward + backward + clipping + fused AdamW on one batch, as the Trainer runs it."""
    from torch.profiler import ProfilerActivity, profile

    model.train()
    ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    for _ in range(2):  # warm-up
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    ap.add_argument("--batch-size", type=int, default=4, help="sequences per optimizer step (train.batch_size)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training and the probe")
    ap.add_argument("--probe-seconds", type=float, default=0.5, help="length of each matmul probe")
    ap.add_argument("--min-mfu", type=float, default=0.60, help="exit 1 when the MFU is below this")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra recipe overrides")
    ap.add_argument("--profile", action="store_true", help="print per-op CPU time of one step instead")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where training and the probe run (auto: cuda when a GPU is visible); on cuda the probe "
                         "multiplies 8192^2 matrices in the run's precision (bf16/fp16 autocast or fp32)")
    ap.add_argument("--hidden", type=int, default=MODEL["hidden_size"])
    ap.add_argument("--layers", type=int, default=MODEL["num_hidden_layers"])
    ap.add_argument("--heads", type=int, default=MODEL["num_attention_heads"])
    ap.add_argument("--intermediate", type=int, default=MODEL["intermediate_size"])
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU is visible")
    shape = dict(MODEL, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                 num_key_value_heads=args.heads, intermediate_size=args.intermediate,
                 max_position_embeddings=max(1024, args.seq_len))
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_mfu_"))
    tokens_needed = (args.steps + args.warmup) * args.batch_size * args.seq_len
    docs = pseudo_text(max(tokens_needed, 200_000), seed=0)  # ~1.1 tokens per word
    tokenizer = train_tokenizer(docs, vocab_size=args.vocab, out_dir=tmp / "tok")
    model = init_model("llama-tiny", tokenizer, out_dir=tmp / "base", seed=0, **shape)
    if args.profile:
        model.config.use_cache = False
        profile_one_step(model, args.batch_size, args.seq_len)
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    del model
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    recipe = load_recipe(None, [
        f"model.path={tmp / 'base'}", f"data.train=[{data}]", f"train.output_dir={tmp / 'run'}",
        "train.objective=pretrain", "adapter.method=full", f"data.max_length={args.seq_len}",
        f"train.batch_size={args.batch_size}", f"train.max_steps={args.steps + args.warmup}",
        "train.lr=1e-4", "train.warmup_ratio=0", f"train.logging_steps={args.steps + args.warmup}",
        "train.save_steps=100000", *args.set])
    from tailor.training.precision import resolve_precision

    recipe.train.device = device.type
    precision = resolve_precision(recipe.train.precision, device).name
    probe_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    clock = StepClock(args.probe_seconds, device, probe_dtype, 8192 if device.type == "cuda" else 1024)
    started = time.perf_counter()
    result = run(recipe, callbacks=[clock])
    wall = time.perf_counter() - started

    fpt = train_flops_per_token(clock.model, args.seq_len)
    tokens = args.batch_size * args.seq_len
    timed = clock.intervals[args.warmup:]
    # Probe i ran just before step i's interval began, probe i + 1 just after it ended.
    near = [(clock.probes[i] + clock.probes[i + 1]) / 2 for i in range(args.warmup, len(clock.intervals))]
    per_step = [fpt * tokens / t / p for t, p in zip(timed, near)]
    seconds = sum(timed)
    peak = statistics.mean(near)
    mfu = fpt * tokens * len(timed) / seconds / peak
    params = result.metrics["total_parameters"]
    load_after = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | cpu_count={os.cpu_count()} | "
          f"torch {torch.__version__} threads={torch.get_num_threads()} | load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after (1-min)")
    gpu = f" | {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"device: {device}{gpu}")
    print(f"model: llama {params / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} layers, vocab {len(tokenizer)}, tied), "
          f"{fpt / 1e6:.1f} MFLOP per trained token at seq_len {args.seq_len} (6N + causal attention)")
    print(f"run: tailor.training.train, full fine-tuning, {result.metrics['precision']}, batch {args.batch_size} x "
          f"{args.seq_len}, {len(timed)} timed steps after {args.warmup} warm-up; overrides: {' '.join(args.set) or '-'}")
    print(f"matmul probe ({len(clock.probes)} x {args.probe_seconds}s, {clock.probe['size']}^3 {probe_dtype}): median {statistics.median(clock.probes) / 1e9:.1f} "
          f"GFLOP/s, range {min(clock.probes) / 1e9:.1f}-{max(clock.probes) / 1e9:.1f}")
    print(f"step time: median {statistics.median(timed):.2f} s, range {min(timed):.2f}-{max(timed):.2f}; "
          f"{tokens * len(timed) / seconds:.0f} tokens/s = {fpt * tokens * len(timed) / seconds / 1e9:.1f} GFLOP/s; total wall {wall:.0f} s")
    print(f"per-step MFU against the probes beside it: median {statistics.median(per_step):.1%}, "
          f"best {max(per_step):.1%}, worst {min(per_step):.1%}")
    verdict = "met" if mfu >= args.min_mfu else "NOT met"
    print(f"MFU: {mfu:.1%} (all timed steps against the mean of their probes; target >= {args.min_mfu:.0%}: {verdict})")
    return 0 if mfu >= args.min_mfu else 1


if __name__ == "__main__":
    sys.exit(main())
