"""Pick the training precision from what the device does, measured, never assumed.

`train.precision=auto` on a CPU:

1. candidate: bf16 only when the CPU's own flags list AMX-BF16 or AVX512-BF16 (`cpu_flags()`, /proc/cpuinfo);
   without them torch emulates bf16 and every matmul is many times slower than fp32.
2. probe: the measured bf16 matmul peak must be at least MIN_PROBE_SPEEDUP x the fp32 one (the MFU probe of
   tailor.training.telemetry, so the run's MFU reuses the numbers). A flag alone says nothing about speed: some
   CPUs decode bf16 instructions at half rate.
3. the first batch (`confirm_on_first_batch`, called by tailor.training.phases.build_trainer once the model and
   data exist): the loss of a bf16-autocast forward must be within LOSS_TOLERANCE (relative) of the fp32 forward's,
   and a forward+backward of its first row must be at least MIN_STEP_SPEEDUP x faster in bf16 than in fp32, at
   this model's own shapes (small or routed matrices can be slower in bf16 while a square matmul is faster).

bf16 here is autocast with fp32 master weights (the Trainer's `bf16=True`): matmuls run in bf16, the optimizer
updates fp32 weights, so small updates are not lost. Each step that says no gives fp32 and one line saying why;
the choice and its reason go to train_summary.json and metrics.jsonl. GPUs: bf16 where supported, else fp16.
TAILOR_PRECISION=fp32|bf16|fp16 replaces `auto` for every run (the test suite pins fp32 this way); an explicit
train.precision still wins.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from tailor.errors import TailorError

log = logging.getLogger("tailor")

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bf16 matmul instructions
MIN_PROBE_SPEEDUP = 1.3  # bf16 matmul peak / fp32 peak below this: bf16 autocast's casts eat the gain
LOSS_TOLERANCE = 0.01    # |loss_bf16 - loss_fp32| / loss_fp32 on the first batch
MIN_STEP_SPEEDUP = 1.1   # fp32 / bf16 forward+backward time of the first batch's first row
PROBE_SECONDS = 0.25     # per dtype
_CHOICES = ("fp32", "bf16", "fp16")


@dataclass
class Precision:
    """The run's precision ('fp32' | 'bf16' | 'fp16'), why, and whether the first batch must still confirm bf16."""

    name: str
    reason: str
    confirm: bool = False  # first-batch checks still to run (confirm_on_first_batch)


def resolve_precision(requested: str, device: torch.device, flags: Iterable[str] | None = None,
                      probe: Callable[[], float] | None = None, measure: bool = True) -> Precision:
    """The precision to train in on `device`. `flags` (the CPU's flags; default `cpu_flags()`) and `probe`
    (returns bf16 / fp32 matmul speed; default a measurement) are parameters so tests can fake a CPU.
    `measure=False` (tensor parallelism): auto on a CPU is fp32 without a measurement, which each process would
    make on its own and could decide differently, while their forward passes exchange activations."""
    from tailor.models.loading import cpu_flags

    device = torch.device(device)
    env = os.environ.get("TAILOR_PRECISION", "auto")
    if requested == "auto" and env not in ("", "auto"):
        if env not in _CHOICES:
            raise TailorError(f"TAILOR_PRECISION={env} is not a precision", where="environment variable TAILOR_PRECISION",
                              fix="use auto, fp32, bf16 or fp16 (or unset it)")
        chosen = _explicit(env, device, flags, "environment variable TAILOR_PRECISION")
        return Precision(chosen, f"{chosen}: set by the environment variable TAILOR_PRECISION")
    if requested != "auto":
        return Precision(_explicit(requested, device, flags, "train.precision"), f"{requested}: set by train.precision")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "bf16 autocast: this GPU supports bf16")
        return Precision("fp16", "fp16 autocast with dynamic loss scaling: this GPU has no bf16")
    if device.type != "cpu":
        return Precision("fp32", f"fp32: no mixed precision is used on {device.type}")
    if not measure:
        return Precision("fp32", "fp32: auto does not measure under tensor parallelism (every process must choose "
                                 "alike); set train.precision=bf16 to use it")
    have = sorted(set(cpu_flags() if flags is None else flags) & set(BF16_FLAGS))
    if not have:
        return Precision("fp32", "fp32: this CPU has no native bf16 instructions (no amx_bf16 or avx512_bf16 in its flags)")
    speedup = (probe or (lambda: bf16_speedup(device)))()
    if speedup < MIN_PROBE_SPEEDUP:
        return Precision("fp32", f"fp32: this CPU has {'/'.join(have)} but bf16 matmuls measured only {speedup:.2f}x "
                                 f"fp32 (bf16 needs >= {MIN_PROBE_SPEEDUP}x)")
    return Precision("bf16", f"bf16 autocast (fp32 master weights): this CPU has {'/'.join(have)} and bf16 matmuls "
                             f"measured {speedup:.2f}x fp32", confirm=True)


def _explicit(requested: str, device: torch.device, flags, where: str) -> str:
    from tailor.models.loading import cpu_supports_bf16

    if device.type == "cuda":
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise TailorError(f"{where}=bf16 but this GPU does not support bf16", where=where,
                              fix="use train.precision=fp16 or auto")
        return requested
    if requested == "fp16":
        raise TailorError(f"{where}=fp16 needs a CUDA GPU; this run is on {device.type}", where=where,
                          fix="use train.precision=auto or fp32")
    has_bf16 = bool(set(flags) & set(BF16_FLAGS)) if flags is not None else cpu_supports_bf16()
    if requested == "bf16" and device.type == "cpu" and not has_bf16:
        raise TailorError(f"{where}=bf16 on a CPU without bf16 instructions would run about 100x slower",
                          where=where, fix="use train.precision=auto or fp32")
    return requested


def bf16_speedup(device: torch.device) -> float:
    """Measured bf16 / fp32 matmul FLOP/s on `device` with the current thread count (cached per process, shared
    with the MFU telemetry)."""
    from tailor.training.telemetry import matmul_peak

    return matmul_peak(device, torch.bfloat16, PROBE_SECONDS) / matmul_peak(device, torch.float32, PROBE_SECONDS)


@dataclass
class FirstBatch:
    """What the first batch measured: the loss of an fp32 and a bf16-autocast forward over the whole batch, and the
    best time of a forward+backward of its first row in each."""

    fp32_loss: float
    bf16_loss: float
    fp32_seconds: float
    bf16_seconds: float


def measure_first_batch(model, batch: dict) -> FirstBatch:
    """Losses (whole batch, no gradients) and forward+backward times (first row, fp32/bf16 alternated twice, the best
    of each) of `model` without dropout; gradients are cleared after, so the first step starts clean. A matmul probe
    says what a square product does; the step at this model's own shapes is what the choice is about (measured: the
    quickstart MoE model, 256 wide with 128-wide experts, trains 1.7x slower in bf16 on a CPU whose bf16 matmuls are
    2x faster)."""
    was_training = model.training
    model.eval()
    row = {k: v[:1] if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in batch.items()}
    times = {False: float("inf"), True: float("inf")}
    try:
        with torch.no_grad():
            fp32 = model(**batch).loss
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = model(**batch).loss
        if fp32 is None or bf16 is None:
            raise TailorError("the model returned no loss for the first batch, so bf16 cannot be checked",
                              where="train.precision", fix="set train.precision=fp32 or bf16 explicitly")
        for use_bf16 in (False, True, False, True):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**row).loss
            loss.backward()
            times[use_bf16] = min(times[use_bf16], time.perf_counter() - started)
            model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return FirstBatch(float(fp32), float(bf16), times[False], times[True])


def confirm_on_first_batch(choice: Precision, model, batch: dict,
                           measure: Callable[[object, dict], FirstBatch] = measure_first_batch) -> Precision:
    """Keep auto's bf16 only when, on the first batch, its loss is within LOSS_TOLERANCE of fp32's and its
    forward+backward is at least MIN_STEP_SPEEDUP x faster; else fp32, with the numbers in the reason (and logged)."""
    if not choice.confirm:
        return choice
    m = measure(model, batch)
    gap = abs(m.bf16_loss - m.fp32_loss) / max(abs(m.fp32_loss), 1e-12)
    speedup = m.fp32_seconds / max(m.bf16_seconds, 1e-12)
    numbers = (f"first-batch loss bf16 {m.bf16_loss:.4f} vs fp32 {m.fp32_loss:.4f} ({gap:.2%}, tolerance "
               f"{LOSS_TOLERANCE:.0%}); forward+backward bf16 {speedup:.2f}x fp32 (needs >= {MIN_STEP_SPEEDUP}x)")
    candidate = choice.reason.split(": ", 1)[-1]
    if not (gap <= LOSS_TOLERANCE):  # NaN fails too
        kept = Precision("fp32", f"fp32: bf16 was a candidate ({candidate}) but its {numbers}")
    elif speedup < MIN_STEP_SPEEDUP:
        kept = Precision("fp32", f"fp32: bf16 was a candidate ({candidate}) but this model is not faster in it: {numbers}")
    else:
        kept = Precision("bf16", f"{choice.reason}; {numbers}")
    log.info("precision: %s", kept.reason)
    return kept
