"""Routed experts for decoding: run only the experts the router picked, instead of transformers' grouped walk.

transformers 5 fuses a MoE layer's experts into one module with 3-D `gate_up_proj` / `down_proj` weights; its
forward sorts, counts and walks every expert, which on CPU dominates a decoding step of a small MoE model.
`use_decode_experts` replaces that forward, per module instance, with `experts_forward`: for the few (token,
expert) pairs of a decoding step it runs one small product per routed pair (one `.tolist()`, a single sync on
CPU), and for prefill one pass per hit expert. It reads the private `_apply_gate` of transformers' experts
modules and `transformers.integrations.moe._default_apply_gate` (experts with a gate of their own keep
transformers' forward). `tailor.runtime.quantized.Int8Experts` runs the same loop on int8 weights.
1.16x decode on the quickstart model, same outputs; training keeps transformers' path (gradients must reach the
router, which `.tolist()` would cut).
"""

from __future__ import annotations

import torch
from torch import nn

from tailor.runtime.instance import install_forward, restore_forward

# (tokens x top_k) routed pairs up to which the per-pair loop beats a pass over the hit experts: decode steps
# and small batches; prefill goes expert by expert so each expert's weight is read once.
PAIR_LOOP_MAX = 8

# The private transformers names this patch reads (checked before it installs).
PRIVATE_NAMES = ("transformers.integrations.moe._default_apply_gate",)
KEY = "_transformers_forward"  # where a patched experts module keeps transformers' forward (instance.py)


def experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """MoE experts for transformers' fused layout, same contract as its experts forward:
    hidden [tokens, hidden], top_k_index/weights [tokens, k] -> [tokens, hidden]."""
    original = self.__dict__.get(KEY)
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


def is_fused_experts(module: nn.Module) -> bool:
    """A transformers experts module with fused gate_up_proj/down_proj 3-D weights in the [experts, out, in]
    layout, gated, without biases: the layout `experts_forward` runs."""
    return (isinstance(getattr(module, "gate_up_proj", None), torch.Tensor) and module.gate_up_proj.dim() == 3
            and isinstance(getattr(module, "down_proj", None), torch.Tensor) and module.down_proj.dim() == 3
            and getattr(module, "has_gate", True) and not getattr(module, "has_bias", False)
            and not getattr(module, "is_transposed", False) and getattr(module, "is_concatenated", True)
            and hasattr(module, "act_fn") and _default_gate(module))


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
        if is_fused_experts(module) and KEY not in module.__dict__:
            install_forward(module, KEY, experts_forward)
            n += 1
    return n


def use_transformers_experts(model: nn.Module) -> int:
    """Undo `use_decode_experts`: transformers' own experts forward again (benchmarks compare the two)."""
    return sum(restore_forward(module, KEY) for module in model.modules())
