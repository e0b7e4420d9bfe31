"""The time model: seconds per optimizer step from the FLOPs each token costs and what this device measures.

    step seconds = executed FLOPs / (matmul peak x efficiency) + bytes moved / memory bandwidth

- executed FLOPs: the FLOPs model of tailor.plan.flops (6N trainable, 4N frozen but passed through, 2N below every
  trainable weight, attention scores, MoE experts at top-k / n) x tokens, plus one more forward with gradient
  checkpointing.
- matmul peak: `measure_matmul_peak` on this device, dtype and thread count (a measurement, not a spec sheet).
- efficiency: the share of that peak a training step's matmuls reach. Measured by `calibrate`: a few real
  forward + backward steps of the model's own blocks (1 and 2 blocks of the same architecture and sizes, random
  weights, the planned micro-batch), whose difference is one block's time; without it a default per device kind.
- bytes moved: weights read three times per micro-batch (forward, input and weight gradients), activations
  written and read by elementwise ops, and the optimizer step reading and writing parameters, gradients and states,
  over the bandwidth a large copy reaches on this device.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from tailor.plan.flops import _attention_flops, measure_matmul_peak
from tailor.plan.shape import ModelShape

# Share of the matmul peak a training step's matmuls reach when nothing was calibrated (bench/bench_plan.py).
DEFAULT_EFFICIENCY = {"cpu": 0.55, "cuda": 0.45}
ELEMENTWISE_PASSES = 6  # times the saved activations are written or read by non-matmul ops in a step


@dataclass
class DeviceSpeed:
    """What the time model knows of the device: measured matmul FLOP/s and copy bandwidth, and the efficiency used."""

    device: str
    dtype: str
    threads: int
    matmul_flops: float
    bandwidth: float          # bytes/s of a large tensor copy
    efficiency: float
    calibrated: bool          # efficiency from real steps of the model's blocks (else DEFAULT_EFFICIENCY)

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=8)
def _probe(device: str, dtype: torch.dtype, threads: int) -> tuple[float, float]:
    peak = measure_matmul_peak(device, dtype, seconds=0.3)
    x = torch.empty(16 * 2 ** 20, device=device)  # 64 MiB
    y = torch.empty_like(x)
    y.copy_(x)
    best = float("inf")
    for _ in range(5):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        y.copy_(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return peak, 2 * x.numel() * 4 / max(best, 1e-9)


def measure_device(device: str = "cpu", precision: str = "fp32") -> DeviceSpeed:
    """Matmul peak (in the run's compute dtype) and copy bandwidth of `device`, probed once per process."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16 if precision == "fp16" else torch.float32
    peak, bw = _probe(device, dtype, torch.get_num_threads())
    kind = device.split(":")[0]
    return DeviceSpeed(device, str(dtype).replace("torch.", ""), torch.get_num_threads(), peak, bw,
                       DEFAULT_EFFICIENCY.get(kind, 0.5), False)


def matmul_flops_per_token(shape: ModelShape, method: str, trainable_layers: int | None, adapter_params: int,
                           seq_len: int) -> tuple[float, float]:
    """(model FLOPs of one trained token, extra FLOPs of one recomputed forward) per tailor.plan.flops' conventions,
    from the model's linear layers. `trainable_layers`: with freeze, the last N blocks (None: every block)."""
    lowest = 0 if trainable_layers is None else shape.num_layers - trainable_layers
    head = shape.vocab_size * shape.hidden_size
    flops = 6 * head if method in ("full", "freeze") else 4 * head
    forward = 2 * head
    for lin in shape.linears:
        n = lin.in_features * lin.out_features * lin.count
        if lin.experts > 1:
            n = n * min(shape.experts_per_token or lin.experts, lin.experts)
        if method == "full":
            factor = 6
        elif method == "freeze":
            # blocks at or above the lowest trainable one: 6N in it; below: forward only
            share_trained = max(0.0, min(1.0, (shape.num_layers - lowest) / max(shape.num_layers, 1)))
            factor = 6 * share_trained + 2 * (1 - share_trained)
        else:
            factor = 4
        flops += factor * n
        forward += 2 * n
    flops += 6 * adapter_params
    reached = lowest if method == "freeze" else -1
    attn = _attention_flops(shape.config, seq_len, reached) if shape.config is not None else \
        shape.num_layers * shape.num_heads * 2 * 2 * shape.head_dim * seq_len / 2 * 3
    fwd_attn = _attention_flops(shape.config, seq_len, None) if shape.config is not None else attn / 3
    return flops + attn, forward + fwd_attn


def step_seconds(speed: DeviceSpeed, flops_per_token: float, recompute_per_token: float, tokens: int,
                 weight_bytes: float, activation_bytes: float, optimizer_bytes: float, micro_batches: int) -> float:
    """Seconds of one optimizer step (see the module docstring)."""
    compute = (flops_per_token + recompute_per_token) * tokens / (speed.matmul_flops * speed.efficiency)
    moved = micro_batches * (3 * weight_bytes + ELEMENTWISE_PASSES * activation_bytes) + 2 * optimizer_bytes
    return compute + moved / speed.bandwidth


def calibration_shape(shape: ModelShape) -> int:
    """Blocks of the truncated model `calibrate` runs: 2, or the dense prefix + 1 MoE block for a MoE model."""
    first_dense = getattr(shape.config, "first_k_dense_replace", 0) or 0
    return max(1, min(shape.num_layers, max(2, first_dense + 1)))


def calibrate(shape: ModelShape, s, steps: int = 2, max_tokens: int = 4096, budget: int | None = None) -> DeviceSpeed:
    """The device's matmul peak and bandwidth, with the efficiency measured by a few real training steps.

    The steps run transformers' own model of the same architecture and sizes, cut to `calibration_shape` blocks and
    to one block more (their difference is the time of one more block, extrapolated to the model's depth), with
    random weights (so no checkpoint is needed), on the planned micro-batch (fewer rows when it holds more than
    `max_tokens` tokens), with the planned precision and gradient checkpointing; what trains mirrors the method
    (full: everything; freeze: the last blocks and head; lora and the rest: the embeddings only, so backward crosses
    every frozen block as it does under an adapter). The efficiency is the share of the matmul peak that makes the
    time model reproduce the fastest step. With `budget` (bytes), a calibration whose own predicted peak is larger
    is skipped (the default efficiency stays, `calibrated` False).
    """
    from dataclasses import replace as dc_replace

    from tailor.plan.shape import shape_of

    base = measure_device(s.device, s.precision)
    if shape.config is None:
        return base
    blocks = calibration_shape(shape)
    batch = max(1, min(s.batch_size, max_tokens // max(s.seq_len, 1)))
    seq = min(s.seq_len, max_tokens) if batch == 1 else s.seq_len
    if budget is not None:
        from tailor.plan.memory import estimate_memory

        small = shape_of(_truncated(shape, blocks + 1), name=shape.name)
        need, _, _ = estimate_memory(small, dc_replace(s, method="full", batch_size=batch, seq_len=seq, optimizer="sgd"), 0)
        if need.peak > budget:
            return base
    t_a = _time_blocks(_truncated(shape, blocks), s, batch, seq, steps)
    t_full = t_a
    if shape.num_layers > blocks:
        # one block more: the time of the model's most common block, measured (MoE blocks cost more than FLOPs say)
        t_b = _time_blocks(_truncated(shape, blocks + 1), s, batch, seq, steps)
        per_block = max(t_b - t_a, 0.3 * t_a / blocks)
        t_full = t_a + (shape.num_layers - blocks) * per_block
    method = "full" if s.method == "full" else "freeze" if s.method == "freeze" else "lora"
    fpt, recompute = matmul_flops_per_token(shape, method, s.freeze_last_n if method == "freeze" else None, 0, seq)
    from tailor.plan.memory import activation_bytes

    act, _ = activation_bytes(shape, dc_replace(s, batch_size=batch, seq_len=seq, method=method))
    wbytes = shape.parameters * (4 if s.weight_dtype == "float32" else 2)
    moved = (3 * wbytes + ELEMENTWISE_PASSES * act) / base.bandwidth
    compute = max(t_full - moved, t_full * 0.2)
    flops = (fpt + (recompute if s.gradient_checkpointing else 0.0)) * batch * seq
    eff = min(1.0, flops / (compute * base.matmul_flops))
    return dc_replace(base, efficiency=eff, calibrated=True)


def _truncated(shape: ModelShape, blocks: int):
    """The model's config cut to its first `blocks` decoder blocks."""
    fields = {**shape.config.to_dict(), "num_hidden_layers": blocks}
    if isinstance(fields.get("layer_types"), list):
        fields["layer_types"] = fields["layer_types"][:blocks]
    return shape.config.__class__.from_dict(fields)


def _time_blocks(cfg, s, batch: int, seq: int, steps: int) -> float:
    """Fastest of `steps` forward + backward passes (after a warm-up) of transformers' model built from `cfg`, random
    weights, what trains mirroring s.method (see `calibrate`)."""
    from transformers import AutoModelForCausalLM

    device = s.device
    blocks = cfg.num_hidden_layers
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32 if s.weight_dtype == "float32" else torch.bfloat16)
    model.to(device).train()
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if s.method == "freeze":
        n = min(s.freeze_last_n, blocks)
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("lm_head") or any(f"layers.{i}." in name for i in range(blocks - n, blocks))
    elif s.method != "full":
        for p in model.parameters():
            p.requires_grad = False
        model.get_input_embeddings().weight.requires_grad = True
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, max(cfg.vocab_size, 2), (batch, seq), generator=gen).to(device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16 if s.precision == "bf16" else torch.float16,
                              enabled=s.precision in ("bf16", "fp16"))

    def one() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    one()  # warm-up: kernels, allocator
    return min(one() for _ in range(steps))
