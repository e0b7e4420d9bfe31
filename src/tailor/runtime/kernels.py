"""Run-time kernels for int8 weights, and a decode path for fused MoE experts.

`int8_linear` multiplies by an int8 weight with one scale per output row. On CPU it calls
`torch._weight_int8pack_mm` (the weight-only int8 kernel torchao and gpt-fast use), which reads the int8
weight directly: decoding streams a quarter of the float32 bytes from memory. That kernel is vectorized
for bfloat16 activations only (its float32 path is scalar and ~10x slower than float32 matmul), so the
activation row is rounded to bfloat16 on the way in and the output widened back (accumulation is
float32 inside the kernel); it also needs the input width to be a multiple of 16 (other widths crash it).
Elsewhere (GPUs, other widths) the weight is dequantized for the product.

`Int8WeightLinear` is the int8 nn.Linear replacement built on it. `Int8Experts` replaces a transformers
`*Experts` module whose weights are fused 3-D parameters (`gate_up_proj` [experts, 2*inter, hidden],
`down_proj` [experts, hidden, inter]) with int8 copies. For the few tokens of a decoding step it runs only
the experts the router picked (two int8 kernel calls per routed pair), instead of transformers' grouped
path, which sorts, counts and walks all experts; prefill goes expert by expert (`experts_forward`), and
under torch.compile a gather-and-dequantize path without Python loops runs instead. `use_decode_experts`
installs the same `experts_forward` on a float model, which gives float32 the same expert path, for
comparisons in one runtime (bench/bench_quantize.py) and as a float speed-up in its own right.
`int4_linear` does the same for int4 weights with `torch._weight_int4pack_mm_for_cpu`.
"""

from __future__ import annotations

import torch
from torch import nn

# (tokens x top_k) routed pairs up to which the per-pair loop beats a pass over the hit experts: decode steps
# and small batches; prefill goes expert by expert so each expert's weight is read once.
PAIR_LOOP_MAX = 8


_ALIGN = 64


def own_int8(q: torch.Tensor) -> torch.Tensor:
    """`q` copied into memory of its own: 64-byte aligned, with 64 bytes to spare after it.

    `torch._weight_int8pack_mm` crashed the process (SIGSEGV; torch 2.13, AVX-512 CPU) on an int8 weight as
    safetensors' `load_file` returns it (8 bytes off a 64-byte boundary, exactly the size of its storage)
    and ran on the same values copied into a fresh allocation. The cause was not pinned down, so the copy
    is both aligned and padded, and `int8pack_ok` refuses weights that are not aligned."""
    buf = torch.empty(q.numel() + 2 * _ALIGN, dtype=q.dtype, device=q.device)
    start = (-buf.data_ptr()) % _ALIGN
    out = buf[start:start + q.numel()].view(q.shape)
    out.copy_(q)
    return out


def int8pack_ok(qweight: torch.Tensor) -> bool:
    """Whether `torch._weight_int8pack_mm` can multiply by this [out, in] int8 weight: a CPU tensor, an input
    width that is a multiple of 16 (other widths crash the kernel), contiguous and 64-byte aligned (see
    `own_int8`)."""
    if qweight.device.type != "cpu" or qweight.shape[-1] % 16 or not hasattr(torch, "_weight_int8pack_mm"):
        return False
    # torch.compile cannot trace data_ptr(); the buffers tailor builds are aligned by own_int8.
    return torch.compiler.is_compiling() or (qweight.is_contiguous() and qweight.data_ptr() % _ALIGN == 0)


def int8_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, scale_bf16: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ (qweight * scale[:, None]).T (+ bias) for an int8 [out, in] weight and a float scale [out]."""
    if x.device.type == "cpu" and int8pack_ok(qweight):
        s = scale_bf16 if scale_bf16 is not None else scale.to(torch.bfloat16)
        y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).to(torch.bfloat16), qweight, s)
        y = y.to(x.dtype).reshape(*x.shape[:-1], qweight.shape[0])
    else:
        y = nn.functional.linear(x, qweight.to(x.dtype) * scale.to(x.dtype).unsqueeze(-1))
    return y if bias is None else y + bias


class _KernelReady(nn.Module):
    """A module that keeps kernel-ready views of its buffers (made by `_prepare` at the first forward) in its
    __dict__: checking alignment and slicing per call costs more than the tiny decode products themselves.
    `nn.Module._apply` (model.to(...), .cuda(), .float(), ...) drops them, so they follow the buffers."""

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_ready", None)
        return super()._apply(fn, *args, **kwargs)

    def _kernel(self):
        ready = self.__dict__.get("_ready")
        if ready is None:
            ready = self.__dict__["_ready"] = self._prepare()
        return ready


class Int8WeightLinear(_KernelReady):
    """A Linear whose weight is stored int8 with one scale per output channel (`int8_linear`)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", own_int8(qweight))
        self.register_buffer("scale", scale)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def _prepare(self):
        return (self.qweight, self.scale.to(torch.bfloat16)) if int8pack_ok(self.qweight) else False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ready = False if torch.compiler.is_compiling() else self._kernel()
        if not ready:
            return int8_linear(x, self.qweight, self.scale, bias=self.bias)
        if x.dim() == 2:
            y = torch._weight_int8pack_mm(x.to(torch.bfloat16), *ready).to(x.dtype)
        else:
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).to(torch.bfloat16), *ready)
            y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """MoE experts for transformers' fused layout, same contract as its experts forward:
    hidden [tokens, hidden], top_k_index/weights [tokens, k] -> [tokens, hidden]."""
    original = self.__dict__.get("_transformers_forward")
    if original is not None and torch.is_grad_enabled() and top_k_weights.requires_grad:
        return original(hidden_states, top_k_index, top_k_weights)  # training: .tolist() would cut the gradient
    product = getattr(self, "expert_product", None)
    if product is None:  # a float experts module
        gate_up, down = self.gate_up_proj, self.down_proj
        def product(x, which, e):
            return nn.functional.linear(x, gate_up[e] if which == 0 else down[e])
    tokens, k = top_k_index.shape
    if 0 < tokens * k <= PAIR_LOOP_MAX:
        # Decoding: one small product per routed pair. One .tolist() (a single sync on CPU) replaces the
        # masks, sorts and per-expert walks of the grouped path, which dominate at this size.
        rows = []
        for t, (experts, weights) in enumerate(zip(top_k_index.tolist(), top_k_weights.tolist())):
            x, acc = hidden_states[t:t + 1], None
            for e, w in zip(experts, weights):
                if e >= self.num_experts:  # expert-parallel sentinel
                    continue
                y = product(self._apply_gate(product(x, 0, e)), 1, e) * w
                acc = y if acc is None else acc + y
            rows.append(acc if acc is not None else torch.zeros_like(x))
        return rows[0] if tokens == 1 else torch.cat(rows)
    out = torch.zeros_like(hidden_states)
    hit = torch.unique(top_k_index).tolist()
    for e in hit:
        if e >= self.num_experts:
            continue
        token_idx, pos = torch.where(top_k_index == e)
        y = product(self._apply_gate(product(hidden_states[token_idx], 0, e)), 1, e)
        out.index_add_(0, token_idx, (y * top_k_weights[token_idx, pos, None]).to(out.dtype))
    return out


class Int8Experts(_KernelReady):
    """Fused MoE experts with int8 weights (one scale per expert output row)."""

    def __init__(self, source: nn.Module, gate_up: tuple[torch.Tensor, torch.Tensor],
                 down: tuple[torch.Tensor, torch.Tensor]):
        super().__init__()
        self.num_experts = gate_up[0].shape[0]
        self.act_fn = source.act_fn
        self.register_buffer("gate_up_qweight", own_int8(gate_up[0]))
        self.register_buffer("gate_up_scale", gate_up[1].float().contiguous())
        self.register_buffer("down_qweight", own_int8(down[0]))
        self.register_buffer("down_scale", down[1].float().contiguous())

    def _apply_gate(self, gate_up_out: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up_out.chunk(2, dim=-1)
        return self.act_fn(gate) * up

    def _prepare(self):
        # Per expert: (int8 weight view, bfloat16 scale view) for gate_up and for down.
        if not (int8pack_ok(self.gate_up_qweight[0]) and int8pack_ok(self.down_qweight[0])):
            return False
        gu_s, dn_s = self.gate_up_scale.to(torch.bfloat16), self.down_scale.to(torch.bfloat16)
        return ([(self.gate_up_qweight[e], gu_s[e]) for e in range(self.num_experts)],
                [(self.down_qweight[e], dn_s[e]) for e in range(self.num_experts)])

    def expert_product(self, x: torch.Tensor, which: int, e: int) -> torch.Tensor:
        if which == 0:
            return int8_linear(x, self.gate_up_qweight[e], self.gate_up_scale[e])
        return int8_linear(x, self.down_qweight[e], self.down_scale[e])

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self._gathered(hidden_states, top_k_index, top_k_weights)
        tokens, k = top_k_index.shape
        ready = self._kernel()
        if not ready or tokens == 0:
            return experts_forward(self, hidden_states, top_k_index, top_k_weights)
        # On CPU each expert product is two int8 kernel calls with the gate between them in bfloat16, the
        # kernel's own activation type (no conversion inside an expert). Decoding goes pair by pair, prefill
        # expert by expert; both compute a row the same way, so batching does not change a row's answer.
        gate_up, down = ready
        if tokens * k > PAIR_LOOP_MAX:
            out = torch.zeros_like(hidden_states)
            for e in torch.unique(top_k_index).tolist():
                if e >= self.num_experts:
                    continue
                token_idx, pos = torch.where(top_k_index == e)
                x = hidden_states[token_idx].to(torch.bfloat16)
                h = self._apply_gate(torch._weight_int8pack_mm(x, *gate_up[e]))
                y = torch._weight_int8pack_mm(h, *down[e]).to(out.dtype)
                out.index_add_(0, token_idx, y * top_k_weights[token_idx, pos, None].to(out.dtype))
            return out
        rows = []
        for t, (experts, weights) in enumerate(zip(top_k_index.tolist(), top_k_weights.tolist())):
            x = (hidden_states if tokens == 1 else hidden_states[t:t + 1]).to(torch.bfloat16)
            acc = None
            for e, w in zip(experts, weights):
                if e >= self.num_experts:  # expert-parallel sentinel
                    continue
                h = self._apply_gate(torch._weight_int8pack_mm(x, *gate_up[e]))
                y = torch._weight_int8pack_mm(h, *down[e]).to(hidden_states.dtype) * w
                acc = y if acc is None else acc + y
            rows.append(acc if acc is not None else torch.zeros_like(hidden_states[:1]))
        return rows[0] if tokens == 1 else torch.cat(rows)

    def _gathered(self, hidden_states, top_k_index, top_k_weights):
        # Under torch.compile: no data-dependent Python loop (it would break the graph). Each routed pair
        # gathers its expert's int8 rows and dequantizes them inside the fused kernel, like transformers'
        # batched_mm path does with float weights; meant for decoding, where pairs are few.
        tokens, k = top_k_index.shape
        idx = top_k_index.reshape(-1).clamp(max=self.num_experts - 1)
        keep = (top_k_index.reshape(-1) < self.num_experts).to(hidden_states.dtype)
        x = hidden_states.repeat_interleave(k, dim=0)
        w = self.gate_up_qweight[idx].to(x.dtype) * self.gate_up_scale[idx].to(x.dtype).unsqueeze(-1)
        h = self._apply_gate(torch.bmm(w, x.unsqueeze(-1)).squeeze(-1))
        w = self.down_qweight[idx].to(x.dtype) * self.down_scale[idx].to(x.dtype).unsqueeze(-1)
        y = torch.bmm(w, h.unsqueeze(-1)).squeeze(-1) * (top_k_weights.reshape(-1, 1).to(x.dtype) * keep[:, None])
        return y.view(tokens, k, -1).sum(dim=1)


def is_fused_experts(module: nn.Module) -> bool:
    """A transformers experts module with fused gate_up_proj/down_proj 3-D weights in the [experts, out, in]
    layout, gated, without biases: the layout `experts_forward` runs."""
    return (isinstance(getattr(module, "gate_up_proj", None), torch.Tensor) and module.gate_up_proj.dim() == 3
            and isinstance(getattr(module, "down_proj", None), torch.Tensor) and module.down_proj.dim() == 3
            and getattr(module, "has_gate", True) and not getattr(module, "has_bias", False)
            and not getattr(module, "is_transposed", False) and getattr(module, "is_concatenated", True)
            and hasattr(module, "act_fn") and _default_gate(module))


_INT4_GROUPS = (32, 64, 128, 256)


def int4_linear(module: nn.Module, x: torch.Tensor, dequantize) -> torch.Tensor:
    """x @ W.T (+ bias) for an `Int4WeightLinear`-like module (`qweight` [out, in/2] uint8 holding q+8 for q in
    [-8, 7], two per byte; `scale` [out, in/group]). On CPU, when the shape allows (out a multiple of 16, a group
    of 32-256), it runs `torch._weight_int4pack_mm_for_cpu` (bfloat16 activations inside the kernel, like
    `int8_linear`); the kernel's own weight layout is made at the first such call and kept next to `qweight`
    (both are half a byte per weight; rows are padded with zeros to a multiple of 16, which the kernel
    needs, and the padding is cut from the output). Otherwise the weight is dequantized with `dequantize`."""
    out_f, in_f = module.qweight.shape[0], module.qweight.shape[1] * 2
    group = in_f // module.scale.shape[1]
    if (x.device.type == "cpu" and group in _INT4_GROUPS and hasattr(torch, "_weight_int4pack_mm_for_cpu")
            and not torch.compiler.is_compiling()):
        cache = module.__dict__.get("_int4pack")
        if cache is None or cache[0] != module.qweight.data_ptr():
            pad = -out_f % 16
            q = torch.stack((module.qweight & 0xF, module.qweight >> 4), dim=-1).reshape(out_f, in_f).to(torch.int32)
            q = nn.functional.pad(q, (0, 0, 0, pad), value=8)  # 8 is the int4 zero
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            # The kernel computes (q - 8) * scale + zero per group; symmetric weights have zero 0.
            scale = nn.functional.pad(module.scale.t(), (0, pad)).to(torch.bfloat16)
            cache = module.__dict__["_int4pack"] = (module.qweight.data_ptr(), packed,
                                                    torch.stack([scale, torch.zeros_like(scale)], -1).contiguous())
        y = torch._weight_int4pack_mm_for_cpu(x.reshape(-1, in_f).to(torch.bfloat16), cache[1], group, cache[2])
        y = y[:, :out_f].to(x.dtype).reshape(*x.shape[:-1], out_f)
    else:
        y = nn.functional.linear(x, dequantize(module.qweight, module.scale, x.dtype))
    return y if module.bias is None else y + module.bias


def _default_gate(module: nn.Module) -> bool:
    # Experts with their own gate (clamped, biased, ...) keep transformers' forward.
    try:
        from transformers.integrations.moe import _default_apply_gate
    except ImportError:
        return False
    return getattr(type(module), "_apply_gate", _default_apply_gate) is _default_apply_gate


def use_decode_experts(model: nn.Module) -> int:
    """Run every fused float experts module of `model` with `experts_forward` (transformers' own forward
    still runs when gradients flow to the router); returns how many modules."""
    n = 0
    for module in model.modules():
        if is_fused_experts(module) and "_transformers_forward" not in module.__dict__:
            module.__dict__["_transformers_forward"] = module.forward
            module.forward = experts_forward.__get__(module)
            n += 1
    return n


def use_transformers_experts(model: nn.Module) -> int:
    """Undo `use_decode_experts`: transformers' own experts forward again (benchmarks compare the two)."""
    n = 0
    for module in model.modules():
        original = module.__dict__.pop("_transformers_forward", None)
        if original is not None:
            module.forward = original
            n += 1
    return n
