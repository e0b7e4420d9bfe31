"""The time model: seconds per optimizer step from the FLOPs each token costs and what this device measures.

Uncalibrated (the matmul probe only):

    step = micro-batches x (linear + attention FLOPs) x tokens / (matmul peak x default efficiency)
           + bytes moved / copy bandwidth

Calibrated (`calibrate`: a few real training steps of this model, method, precision and checkpointing at small
shapes, then scaled to the planned ones by the FLOPs model):

    step = micro-batches x (fixed + linear FLOPs x tokens / (peak x e_linear)
                                   + attention FLOPs x tokens / (peak x e_attention)) + optimizer step

- linear FLOPs per token: the FLOPs model of tailor.plan.flops (6N trainable, 4N frozen but passed through, 2N
  below every trainable weight, MoE experts at top-k / n, LoRA's A/B), plus one more forward with gradient
  checkpointing. Work that is not a matmul but grows with the tokens (norms, activations, peft's per-layer
  scaling and sums, the MoE expert loop's gathers and scatters) is folded into e_linear by the calibration.
- attention FLOPs per token: Q K^T and A V, which grow with the sequence length (the seq^2 term); CPU sdpa's
  math kernel (DeepSeek-V3's differing head sizes) also moves heads x seq probabilities per token: e_attention.
- fixed: per micro-batch work that does not grow with the tokens (kernel launches, the MoE loop over experts,
  autocast's weight copies); optimizer step: measured (AdamW and gradient clipping over the trainable weights).
- bytes moved (uncalibrated only): weights read three times per micro-batch, activations written and read by
  elementwise ops, the optimizer reading and writing parameters, gradients and states.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from dataclasses import replace as dc_replace
from functools import lru_cache

import torch

from tailor.plan.flops import _attention_flops, measure_matmul_peak
from tailor.plan.shape import ModelShape

# Share of the matmul peak a training step's matmuls reach when nothing was calibrated (bench/bench_plan.py).
DEFAULT_EFFICIENCY = {"cpu": 0.55, "cuda": 0.45}
ELEMENTWISE_PASSES = 6  # times the saved activations are written or read by non-matmul ops in a step
CALIBRATION_SEQ = (128, 512)  # the calibration's short and long sequence (capped at the planned one)
MAX_CALIBRATION_SECONDS = 60.0  # predicted wall time above which the calibration cuts the model to a few blocks
MAX_EFFICIENCY = 1.5  # the fitted e_linear's bound, in shares of the matmul probe


@dataclass
class DeviceSpeed:
    """What the time model knows of the device: measured matmul FLOP/s and copy bandwidth, and the efficiencies.

    Calibrated (`calibrate`): `efficiency` and `attention_efficiency` are the shares of the matmul peak that
    reproduce the measured steps, `fixed_seconds` the per-micro-batch time that does not grow with the tokens,
    `optimizer_seconds` the measured optimizer step of `method`, `points` the measured shapes
    (seq, batch, measured and fitted seconds) and `depth` the decoder blocks the calibration ran. `anchor`: the
    run's own micro-batch (sequence length and batch size) timed too; the fit's per-micro-batch time is scaled
    by anchor seconds / fitted seconds, so the run's own shape is predicted as measured and nearby shapes (other
    methods, smaller micro-batches) carry the same correction.
    """

    device: str
    dtype: str
    threads: int
    matmul_flops: float
    bandwidth: float          # bytes/s of a large tensor copy
    efficiency: float
    calibrated: bool          # efficiencies from real steps of the model (else DEFAULT_EFFICIENCY)
    attention_efficiency: float | None = None
    fixed_seconds: float = 0.0
    optimizer_seconds: float | None = None
    method: str | None = None  # the method the calibration ran (its optimizer step fits only that method)
    depth: str = ""
    points: list = field(default_factory=list)
    skipped: str = ""          # why `calibrate` ran nothing (too slow, too large), "" otherwise
    anchor: dict | None = None  # the run's own micro-batch, timed: {"seq", "batch", "seconds", "fitted"}
    anchor_skipped: str = ""   # why the run's own micro-batch was not timed

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
        _sync(device)
        t0 = time.perf_counter()
        y.copy_(x)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return peak, 2 * x.numel() * 4 / max(best, 1e-9)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_device(device: str = "cpu", precision: str = "fp32") -> DeviceSpeed:
    """Matmul peak (in the run's compute dtype) and copy bandwidth of `device`, probed once per process."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16 if precision == "fp16" else torch.float32
    peak, bw = _probe(device, dtype, torch.get_num_threads())
    kind = device.split(":")[0]
    return DeviceSpeed(device, str(dtype).replace("torch.", ""), torch.get_num_threads(), peak, bw,
                       DEFAULT_EFFICIENCY.get(kind, 0.5), False)


def flops_parts(shape: ModelShape, method: str, trainable_layers: int | None, adapter_params: int,
                seq_len: int, head_share: float = 1.0) -> tuple[float, float, float, float]:
    """(linear, linear forward, attention, attention forward) FLOPs per token, per tailor.plan.flops' conventions,
    from the model's linear layers. `trainable_layers`: with freeze, the last N blocks (None: every block);
    `head_share`: the share of the positions the output layer runs at (train.logits: loss)."""
    lowest = 0 if trainable_layers is None else shape.num_layers - trainable_layers
    head = shape.vocab_size * shape.hidden_size * head_share
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
    forward += 2 * adapter_params
    reached = lowest if method == "freeze" else -1
    attn = _attention_flops(shape.config, seq_len, reached) if shape.config is not None else \
        shape.num_layers * shape.num_heads * 2 * 2 * shape.head_dim * seq_len / 2 * 3
    fwd_attn = _attention_flops(shape.config, seq_len, None) if shape.config is not None else attn / 3
    return flops, forward, attn, fwd_attn


def matmul_flops_per_token(shape: ModelShape, method: str, trainable_layers: int | None, adapter_params: int,
                           seq_len: int) -> tuple[float, float]:
    """(model FLOPs of one trained token, extra FLOPs of one recomputed forward): see `flops_parts`."""
    lin, lin_fwd, attn, attn_fwd = flops_parts(shape, method, trainable_layers, adapter_params, seq_len)
    return lin + attn, lin_fwd + attn_fwd


def executed_flops(shape: ModelShape, s, adapter_params: int, seq_len: int | None = None) -> tuple[float, float]:
    """(linear, attention) FLOPs a step of settings `s` executes per token (+ the recomputed forward when
    checkpointing)."""
    lin, lin_fwd, attn, attn_fwd = flops_parts(shape, s.method, s.freeze_last_n if s.method == "freeze" else None,
                                               adapter_params, seq_len or s.seq_len, s.head_share)
    if s.gradient_checkpointing:
        return lin + lin_fwd, attn + attn_fwd
    return lin, attn


def step_seconds(speed: DeviceSpeed, flops: tuple[float, float], s, weight_bytes: float, activation_bytes: float,
                 optimizer_bytes: float) -> float:
    """Seconds of one optimizer step of settings `s` (see the module docstring); `flops` from `executed_flops`."""
    lin, attn = flops
    tokens = s.batch_size * s.seq_len
    if not speed.calibrated:
        compute = (lin + attn) * tokens * s.grad_accum / (speed.matmul_flops * speed.efficiency)
        moved = s.grad_accum * (3 * weight_bytes + ELEMENTWISE_PASSES * activation_bytes) + 2 * optimizer_bytes
        return compute + moved / speed.bandwidth
    e_attn = speed.attention_efficiency or speed.efficiency
    micro = speed.fixed_seconds + tokens * (lin / speed.efficiency + attn / e_attn) / speed.matmul_flops
    if speed.anchor and speed.anchor["fitted"] > 0:
        micro *= speed.anchor["seconds"] / speed.anchor["fitted"]
    optim = speed.optimizer_seconds if speed.method == s.method and speed.optimizer_seconds is not None \
        else 2 * optimizer_bytes / speed.bandwidth
    return s.grad_accum * micro + optim


def calibration_points(seq_len: int) -> list[tuple[int, int]]:
    """(seq, batch) shapes `calibrate` times: two batch sizes at a short sequence (the fixed and per-token time),
    and two at a longer one when the planned sequence is longer (attention's seq^2 term)."""
    lo, hi = min(seq_len, CALIBRATION_SEQ[0]), min(seq_len, CALIBRATION_SEQ[1])
    if hi == lo:
        return [(lo, 1), (lo, 4), (lo, 8)]
    return [(lo, 1), (lo, 4), (hi, 1), (hi, 2)]


def calibration_shape(shape: ModelShape) -> int:
    """Blocks of a cut model `calibrate` runs when the whole one is too slow: 2, or the dense prefix + 1 MoE block."""
    first_dense = getattr(shape.config, "first_k_dense_replace", 0) or 0
    return max(1, min(shape.num_layers, max(2, first_dense + 1)))


def calibrate(shape: ModelShape, s, steps: int = 3, budget: int | None = None, prepare=None,
              anchor: bool = True, clock=time.perf_counter) -> DeviceSpeed:
    """The device's matmul peak and bandwidth, with the time model's terms fitted on a few real training steps.

    The steps run transformers' model of this architecture and sizes (random weights: no checkpoint read) with the
    planned precision and gradient checkpointing, the method applied by `prepare(model)` (tailor's adapters: the
    CLI and the trainer pass it; without it full and freeze train as planned and the adapter methods train the
    embeddings only, so backward crosses every frozen block but peft's own work is not timed), an optimizer step
    (AdamW + gradient clipping) after each. Every shape of `calibration_points` runs one warm-up step, then `steps`
    rounds time each shape once (interleaved, so a burst of load from other processes hits all shapes alike); a
    shape's fastest step counts (on a shared machine the one least slowed by other processes). The whole model
    runs when its predicted calibration time is under MAX_CALIBRATION_SECONDS; else it is cut to
    `calibration_shape` blocks and one more, and the difference (one block) is extrapolated to the model's depth.
    The fixed time, e_linear and e_attention are the non-negative least-squares fit of the small shapes.

    `anchor`: the run's own micro-batch (`trained_view(s)`: paired rows count twice) is timed in the same rounds
    when its steps fit in MAX_CALIBRATION_SECONDS and its memory in `budget`; `step_seconds` then scales the fit by
    its measured / fitted ratio (the fit alone misses what small shapes do not show: attention at long sequences,
    cache effects of large micro-batches). The calibration's steps compute logits at every position, so the fit
    is over the whole output layer and the plan's head_share applies afterwards.
    `clock`: what the steps are timed with (wall time; bench/bench_plan.py passes the process's CPU time, which
    other processes' load does not inflate, for its one-thread runs).
    With `budget` (bytes), a calibration whose own predicted peak is larger is skipped, and so is one predicted to
    take over 4 x MAX_CALIBRATION_SECONDS (the default efficiency stays, `calibrated` False, `skipped` says why).
    """
    from tailor.plan.memory import adapter_parameters, estimate_memory, trained_view
    from tailor.plan.shape import shape_of

    base = measure_device(s.device, s.precision)
    if shape.config is None:
        return base
    s = dc_replace(s, head_share=1.0)  # what the calibration's own steps run
    points = calibration_points(s.seq_len)
    biggest = max(points, key=lambda p: p[0] * p[1])
    adapter_n = adapter_parameters(shape, s)

    def guess(sh: ModelShape, shapes) -> float:  # uncalibrated seconds of the calibration's steps on shape `sh`
        return sum(step_seconds(base, executed_flops(sh, s, adapter_n, q),
                                dc_replace(s, seq_len=q, batch_size=b, grad_accum=1), sh.parameters * 4, 0, 0)
                   for q, b in shapes) * (steps + 1)

    depths, cut = [shape.num_layers], shape
    expected = guess(shape, points)
    if expected > MAX_CALIBRATION_SECONDS and shape.num_layers > calibration_shape(shape) + 1:
        k = calibration_shape(shape)
        depths, cut = [k, k + 1], shape_of(_truncated(shape, k + 1), name=shape.name)
        expected = guess(cut, points) * 2
    if expected > 4 * MAX_CALIBRATION_SECONDS:
        return dc_replace(base, skipped=f"its steps would take about {expected:.0f} s on this device")
    if budget is not None:
        need, _, _ = estimate_memory(cut, dc_replace(s, seq_len=biggest[0], batch_size=biggest[1], grad_accum=1), 0)
        if need.peak > budget:
            return dc_replace(base, skipped="its own steps would need over a quarter of the device memory")
    own, own_skipped = None, "" if anchor else "not asked"
    if anchor:
        tv = trained_view(s)
        own = (tv.seq_len, tv.batch_size)
        extra = guess(cut, [own]) * len(depths)
        if own in points:
            pass  # timed as a calibration shape already
        elif extra > MAX_CALIBRATION_SECONDS:
            own, own_skipped = None, f"its steps would take about {extra:.0f} s"
        elif budget is not None and estimate_memory(cut, dc_replace(tv, grad_accum=1), 0)[0].peak > budget:
            own, own_skipped = None, "it would need over a quarter of the device memory"
    timed = points + ([own] if own and own not in points else [])
    measured: dict[int, dict] = {}
    optim: list[float] = []
    for depth in depths:
        cfg = shape.config if depth == shape.num_layers else _truncated(shape, depth)
        measured[depth] = _time_model(cfg, s, timed, steps, prepare, optim, clock)
    ys = {}
    for p in timed:
        t = measured[depths[0]][p]
        if len(depths) == 2:  # one more block: the time of the model's most common block, measured
            t += (shape.num_layers - depths[0]) * max(measured[depths[1]][p] - t, 0.1 * t / depths[0])
        ys[p] = t

    def row(q: int, b: int) -> list[float]:
        lin, attn = executed_flops(shape, s, adapter_n, q)
        return [1.0, q * b * lin / base.matmul_flops, q * b * attn / base.matmul_flops]

    rows = [row(q, b) for q, b in points]
    coef = _nnls(rows, [ys[p] for p in points], merge=len({q for q, _ in points}) == 1)
    fixed, inv_lin, inv_attn = coef
    fitted = [sum(c * x for c, x in zip(coef, r)) for r in rows]
    pinned = None
    if own:
        fit_own = sum(c * x for c, x in zip(coef, row(*own)))
        pinned = {"seq": own[0], "batch": own[1], "seconds": ys[own], "fitted": fit_own}
    return dc_replace(base, efficiency=1 / inv_lin, attention_efficiency=(1 / inv_attn) if inv_attn > 0 else 1.0,
                      fixed_seconds=fixed, calibrated=True, method=s.method,
                      optimizer_seconds=min(optim) if optim and len(depths) == 1 else None,
                      depth=f"{depths[0]} of {shape.num_layers} blocks" if len(depths) == 1 else
                      f"{depths[0]} and {depths[1]} of {shape.num_layers} blocks, extrapolated",
                      points=[{"seq": q, "batch": b, "seconds": round(ys[(q, b)], 5), "fitted": round(f, 5)}
                              for (q, b), f in zip(points, fitted)],
                      anchor=pinned, anchor_skipped=own_skipped)


def _nnls(rows: list[list[float]], ys: list[float], merge: bool) -> tuple[float, float, float]:
    """(fixed, 1 / e_linear, 1 / e_attention) minimising the squared relative error over the measured shapes, with
    fixed >= 0, 1 / e_attention >= 0 and e_linear <= MAX_EFFICIENCY (a step's matmuls can beat the probe, which is
    one square matmul timed for 0.3 s, on a shared machine by the load at that moment, but not by much). Each combination of terms
    in or out, and of the linear term free or pinned at the peak, is solved by least squares; the best one within
    the bounds wins. `merge`: one sequence length only, so attention shares the linear term's efficiency."""
    import itertools

    a = torch.tensor(rows, dtype=torch.float64)
    y = torch.tensor(ys, dtype=torch.float64)
    if merge:
        a = torch.stack([a[:, 0], a[:, 1] + a[:, 2]], dim=1)
    w = 1 / y.clamp_min(1e-9)  # relative errors: short and long steps count alike
    optional = [i for i in range(a.shape[1]) if i != 1]
    best, best_err = None, float("inf")
    for keep, pinned in itertools.product(itertools.product((False, True), repeat=len(optional)), (False, True)):
        cols = [i for i, k in zip(optional, keep) if k] + ([] if pinned else [1])
        target = y - a[:, 1] / MAX_EFFICIENCY if pinned else y  # pinned: the linear term at the bound
        sol = torch.linalg.lstsq(a[:, cols] * w[:, None], (target * w)[:, None]).solution.squeeze(1) if cols \
            else torch.zeros(0, dtype=torch.float64)
        coef = torch.zeros(a.shape[1], dtype=torch.float64)
        coef[cols] = sol
        coef[1] = 1 / MAX_EFFICIENCY if pinned else coef[1]
        if (coef < 0).any() or coef[1] < 1 / MAX_EFFICIENCY:
            continue
        err = float(((a @ coef - y) * w).pow(2).sum())
        if err < best_err:
            best, best_err = coef, err
    out = best.tolist()  # the pinned linear term alone is always within the bounds
    return (out[0], out[1], out[1]) if merge else (out[0], out[1], out[2])


def _truncated(shape: ModelShape, blocks: int):
    """The model's config cut to its first `blocks` decoder blocks."""
    fields = {**shape.config.to_dict(), "num_hidden_layers": blocks}
    if isinstance(fields.get("layer_types"), list):
        fields["layer_types"] = fields["layer_types"][:blocks]
    return shape.config.__class__.from_dict(fields)


def _mirror_method(model, s):
    """What trains when no `prepare` is given: full everything; freeze the last N blocks and the head; adapter
    methods the embeddings only (backward crosses every frozen block as it does under an adapter)."""
    blocks = model.config.num_hidden_layers
    if s.method == "freeze":
        n = min(s.freeze_last_n, blocks)
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("lm_head") or any(f"layers.{i}." in name for i in range(blocks - n, blocks))
    elif s.method != "full":
        for p in model.parameters():
            p.requires_grad = False
        model.get_input_embeddings().weight.requires_grad = True
    return model


def _time_model(cfg, s, points: list[tuple[int, int]], steps: int, prepare, optim: list[float],
                clock=time.perf_counter) -> dict:
    """Fastest seconds of `steps` forward + backward passes (after a warm-up; in rounds over the shapes) at each
    (seq, batch) of `points`, of transformers' model built from `cfg` with random weights, the method applied by `prepare` (or
    `_mirror_method`); each optimizer step's seconds are appended to `optim`."""
    from transformers import AutoModelForCausalLM

    device = s.device
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32 if s.weight_dtype == "float32" else torch.bfloat16)
    model = prepare(model) if prepare is not None else _mirror_method(model, s)
    model.to(device).train()
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        opt = torch.optim.AdamW(params, lr=1e-6, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(params, lr=1e-6)
    gen = torch.Generator().manual_seed(0)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16 if s.precision == "bf16" else torch.float16,
                              enabled=s.precision in ("bf16", "fp16"))
    vocab = max(cfg.get_text_config().vocab_size if hasattr(cfg, "get_text_config") else cfg.vocab_size, 2)
    ids = {p: torch.randint(0, vocab, (p[1], p[0]), generator=gen).to(device) for p in points}

    def step(p) -> tuple[float, float]:
        _sync(device)
        t0 = clock()
        with autocast:
            loss = model(input_ids=ids[p], labels=ids[p]).loss
        loss.backward()
        _sync(device)
        t1 = clock()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        return t1 - t0, clock() - t1

    for p in sorted(points, key=lambda p: -p[0] * p[1]):  # warm-up, the biggest first: kernels, the allocator
        step(p)
    times: dict = {p: [] for p in points}
    for _ in range(steps):  # rounds over the shapes: a burst of load from other processes hits them alike
        for p in points:
            seconds, optimizer = step(p)
            times[p].append(seconds)
            optim.append(optimizer)
    return {p: min(t) for p, t in times.items()}
