"""Model FLOPs per trained token and the device's measured matmul peak: the two halves of MFU.

MFU (model FLOPs utilisation) = train_flops_per_token(model, seq_len) x tokens/s / measure_matmul_peak().
The numerator counts only the FLOPs the model needs (no recomputation from activation checkpointing,
no optimizer, no elementwise ops), so MFU says how close a run gets to the matmul speed of its device.

Conventions (stated so numbers can be compared):
- A matmul with a weight of N entries costs 2N FLOPs per token forward (multiply + add), 2N more for
  the gradient of its input and 2N more for the gradient of its weight: 6N for a trainable weight,
  4N for a frozen weight that backward still passes through (adapters, frozen blocks above a trainable
  one), 2N for a frozen weight below every trainable parameter (backward stops before it).
- Counted weights: every parameter with 2+ dimensions except embedding lookups (no FLOPs), so linear
  layers, LoRA A/B matrices, MoE routers and the LM head (counted even when tied to the embeddings:
  it is a matmul of vocab x hidden). Biases, norms and elementwise adapters (IA3 vectors) are left out.
- Mixture of experts: expert weights stored per expert count top-k / n_experts of their size (only
  the routed experts a token uses); shared experts and the router are ordinary weights every token uses.
- Attention scores and values: per layer, head and token, 2 x d_qk x ctx (Q K^T) + 2 x d_v x ctx (A V)
  forward and twice that backward, with ctx = seq_len / 2 for causal attention (a query at position i
  sees i + 1 keys; the mean is about seq_len / 2). For d_qk = d_v = head_dim this is
  12 x layers x heads x head_dim x seq_len / 2 per token. Sliding-window layers use min(seq_len, window).
"""

from __future__ import annotations

import re
import time

import torch

from tailor.errors import TailorError

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# Parameters outside the decoder blocks that sit after them in the forward pass.
_AFTER_LAYERS = ("lm_head", "score", "classifier")


def measure_matmul_peak(device=None, dtype: torch.dtype = torch.float32, seconds: float = 0.5, size: int = 1024) -> float:
    """Achievable matmul FLOP/s on `device` with the current torch thread count: a measured peak, not a spec sheet.

    Times `size` x `size` matmuls for about `seconds` in 5 rounds after a warm-up and returns the best
    round (other processes on the machine slow some rounds; the best is closest to what the hardware
    can do). On CUDA every round is bracketed by synchronize. Measure in the same process and with the
    same `torch.set_num_threads` as the run whose MFU it divides.
    """
    if size < 1 or seconds <= 0:
        raise TailorError(f"measure_matmul_peak needs size >= 1 and seconds > 0 (got size={size}, seconds={seconds})")
    device = torch.device(device) if device is not None else torch.device("cpu")
    # A private generator: drawing from the global RNG after the Trainer seeded it would change dropout masks
    # and data order of the first run in a process only (the peak is cached), breaking reproducibility.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(n: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            torch.matmul(a, b, out=out)
        sync()
        return time.perf_counter() - t0

    once = max(timed(1), timed(1), 1e-9)  # the first call also warms up kernels and caches
    rounds = 5
    n = max(1, int(seconds / rounds / once))
    best = min(timed(n) for _ in range(rounds))
    return 2.0 * size ** 3 * n / max(best, 1e-12)


def train_flops_per_token(model, seq_len: int) -> float:
    """Model FLOPs of one trained token (forward + backward) at sequence length `seq_len`; see the module docstring.

    Trainable weights count 6N, frozen weights that backward passes through 4N (adapter training), and
    frozen weights below the lowest trainable parameter 2N. MoE experts count only the active ones.
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise TailorError(f"seq_len must be a positive integer, got {seq_len!r}", where="train_flops_per_token")
    config = getattr(model, "config", None)
    if config is None:
        raise TailorError(f"{type(model).__name__} has no .config: FLOPs are counted for transformers models only")
    lowest = _lowest_trainable_layer(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skip = {id(head.weight)} if head is not None else set()
    experts = _expert_modules(model, config)

    flops = 0.0
    if head is not None:
        flops += _factor(head.weight.requires_grad, _AFTER, lowest) * head.weight.numel()
        skip.add(id(head.weight))
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) or "prompt_encoder" in name:
            continue  # lookups, and virtual-token encoders that run once per batch, not per token
        share = next((frac for prefix, frac in experts.items() if name == prefix or name.startswith(prefix + ".")), 1.0)
        for pname, p in module.named_parameters(recurse=False):
            if p.ndim < 2 or id(p) in skip:
                continue
            skip.add(id(p))
            flops += _factor(p.requires_grad, _position(f"{name}.{pname}"), lowest) * p.numel() * share
    flops += _attention_flops(config, seq_len, lowest)
    return float(flops)


_BEFORE, _AFTER = -1, 1 << 30  # positions of parameters outside the decoder blocks


def _position(name: str) -> int:
    """Where a parameter sits in the forward pass: its decoder layer index, or before/after all layers."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1))
    leaf = name.split(".")
    if any(part in _AFTER_LAYERS for part in leaf) or (len(leaf) >= 2 and leaf[-2] == "norm"):
        return _AFTER
    return _BEFORE


def _lowest_trainable_layer(model) -> int | None:
    """The forward position of the first trainable parameter (None: nothing trains, forward only)."""
    positions = [_position(n) for n, p in model.named_parameters() if p.requires_grad]
    return min(positions) if positions else None


def _factor(trainable: bool, position: int, lowest: int | None) -> int:
    if trainable:
        return 6
    if lowest is None or position < lowest:
        return 2  # backward never reaches it
    return 4


def _expert_modules(model, config) -> dict[str, float]:
    """Module names holding per-expert weights (3-D parameters over num_experts) -> top_k / num_experts."""
    top_k = getattr(config, "num_experts_per_tok", None)
    found = {}
    for name, module in model.named_modules():
        n = getattr(module, "num_experts", None)
        own = list(module.parameters(recurse=False))
        if isinstance(n, int) and n > 0 and top_k and any(p.ndim == 3 and p.shape[0] == n for p in own):
            found[name] = min(top_k, n) / n
    return found


def _attention_flops(config, seq_len: int, lowest: int | None) -> float:
    """Q K^T and A V FLOPs per token over all layers, causal (mean context seq_len / 2); see the module docstring."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(config, "num_hidden_layers", 0) or 0
    heads = getattr(config, "num_attention_heads", 0) or 0
    if not layers or not heads:
        return 0.0
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    d_qk = (getattr(config, "qk_nope_head_dim", 0) or 0) + (getattr(config, "qk_rope_head_dim", 0) or 0) or head_dim
    d_v = getattr(config, "v_head_dim", None) or head_dim
    window = getattr(config, "sliding_window", None)
    kinds = getattr(config, "layer_types", None) or ["full_attention"] * layers
    total = 0.0
    for i in range(layers):
        span = min(seq_len, window) if (window and kinds[i] == "sliding_attention") else seq_len
        fwd = heads * 2 * (d_qk + d_v) * span / 2
        reached = lowest is not None and (lowest == _BEFORE or i >= lowest)
        total += fwd * (3 if reached else 1)
    return total
