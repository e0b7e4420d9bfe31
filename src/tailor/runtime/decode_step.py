"""A lean decoding step for DeepSeek-V3 models: one new token of one sequence with a DynamicCache.

transformers' DeepSeek-V3 code runs ~1,700 small tensor operations per decoded token on the quickstart model
(mask building, output capture, rotary tables, RMSNorm dtype round trips, split/transpose/copy to assemble
MLA keys, the grouped top-k router) around only ~50 matrix products; at this size the small operations take
longer than the products, so they cap what int8 kernels can gain. `use_fast_decode` (installed by
`tailor.runtime.enable`, never by a loader) replaces the forward of each `DeepseekV3Model` instance in a model
with `fast_forward`, which computes the same step with fewer operations
when the call is the common single-stream decoding case (`_fast_case`): batch 1, one new token, a plain
DynamicCache that already holds the prompt, no padding in the attention mask, eval mode, gradients off,
float32 activations, no outputs to record (attentions, hidden states, router logits), no hooks on the layers,
default RoPE, eager/sdpa attention. Every other call runs transformers' forward unchanged.

The step calls the model's own submodules for every product (q/kv projections, kv_b_proj, o_proj, MLPs,
experts), so int8 models (`Int8WeightLinear`, `Int8Experts`), dynamic-quantized Linears and peft LoRA
layers run through it unchanged; only norms, rotary (one product with a per-position rotation matrix),
attention over the cache and the router are inlined. transformers re-expands every cached latent through
kv_b_proj at every step; this step keeps that expansion on the cache layer and adds one row per step
(`_expanded`; it assumes kv_b_proj's weights do not change while a cache is in use, as a decoding loop does).
Float32 logits agree with transformers' within ~1e-5 (different summation orders); int8 models agree
within their bfloat16 activation rounding.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from tailor.runtime.instance import install_forward, restore_forward


def _output_capturing(hook) -> bool:
    # transformers installs these on the layers and the router the first time any output_* is asked for, and
    # keeps them; they do nothing unless a call records outputs, which the fast path never takes.
    return (getattr(hook, "__module__", None) == "transformers.utils.output_capturing"
            and getattr(hook, "__name__", None) == "output_capturing_hook")


# The private names of transformers and torch this step reads (checked before it installs); beyond these it reads
# DeepSeek-V3 module attributes (`_claims` checks them per model) and each cache layer's keys.
PRIVATE_NAMES = ("transformers.utils.output_capturing.install_output_capuring_hook",
                 "transformers.cache_utils.DynamicLayer",
                 "transformers.cache_utils.DynamicCache.get_seq_length",
                 "transformers.configuration_utils.PreTrainedConfig._attn_implementation",
                 "torch.nn.modules.module._global_forward_hooks",
                 "torch.nn.modules.module._global_forward_pre_hooks")
KEY = "_transformers_model_forward"  # where a patched DeepseekV3Model keeps transformers' forward (instance.py)
_RECORD_FLAGS = ("output_attentions", "output_hidden_states", "output_router_logits")
_ROUTER_ATTRS = ("weight", "e_score_correction_bias", "num_group", "topk_group", "top_k", "norm_topk_prob",
                 "routed_scaling_factor")


def _rms(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """DeepseekV3RMSNorm of one float32 row [1, n] (its .to(float32) round trips are no-ops there). The mean
    square is a dot product: on CPU `mean` costs several operations (sum, fill, div, copies)."""
    flat = x.view(-1)
    scale = torch.dot(flat, flat).mul_(1.0 / flat.shape[0]).add_(norm.variance_epsilon).rsqrt_()
    return torch.mul(x, norm.weight).mul_(scale)


def _rotation_patterns(rope: int, interleave: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(Pc, Ps) [rope, rope] with x @ (Pc * cos + Ps * sin) == transformers' RoPE of rows x, for cos/sin laid out
    as its cat(freqs, freqs). Output column j < half is x1*c - x2*s, column half + j is x2*c + x1*s, where
    (x1, x2) are the pairs (2j, 2j+1) with `rope_interleave` (apply_rotary_pos_emb_interleave) and (j, half+j)
    without (rotate_half)."""
    half = rope // 2
    pc, ps = torch.zeros(rope, rope), torch.zeros(rope, rope)
    for j in range(half):
        a, b = (2 * j, 2 * j + 1) if interleave else (j, half + j)
        pc[a, j], ps[b, j] = 1.0, -1.0
        pc[b, half + j], ps[a, half + j] = 1.0, 1.0
    return pc, ps


def _router(gate: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepseekV3TopkRouter for one float32 row: (top-k weights [1, k], top-k expert ids [1, k])."""
    scores = F.linear(x, gate.weight).sigmoid()
    choice = scores + gate.e_score_correction_bias
    if gate.num_group > 1:  # keep only the topk_group groups with the best two-expert sums
        grouped = choice.view(gate.num_group, -1)
        keep = grouped.topk(2, dim=-1)[0].sum(-1).topk(gate.topk_group, sorted=False)[1]
        choice = torch.full_like(grouped, float("-inf")).index_copy_(0, keep, grouped[keep]).view(1, -1)
    idx = choice.topk(gate.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, idx)
    if gate.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    if gate.routed_scaling_factor != 1.0:
        weights = weights * gate.routed_scaling_factor
    return weights, idx


def _attention(attn: nn.Module, x: torch.Tensor, cache, rotation: torch.Tensor) -> torch.Tensor:
    """DeepseekV3Attention for one token of one sequence ([1, hidden] -> [1, hidden]), cache updated; `rotation`
    [rope, rope] applies this position's RoPE as one product (see `_rotation_patterns`)."""
    heads, nope, rope, vdim = attn.num_heads, attn.qk_nope_head_dim, attn.qk_rope_head_dim, attn.v_head_dim
    if attn.q_lora_rank is None:
        q = attn.q_proj(x)
    else:
        q = attn.q_b_proj(_rms(attn.q_a_proj(x), attn.q_a_layernorm))
    q = q.view(heads, nope + rope)
    ckv = attn.kv_a_proj_with_mqa(x)
    rank = attn.kv_lora_rank
    kv_nope = _rms(ckv[:, :rank], attn.kv_a_layernorm)
    q_rot, k_rot = torch.mm(q[:, nope:], rotation), torch.mm(ckv[:, rank:], rotation)
    layer_cache = cache.layers[attn.layer_idx]
    before = layer_cache.keys
    kv_all, k_rot_all = cache.update(kv_nope.view(1, 1, 1, rank), k_rot.view(1, 1, 1, rope), attn.layer_idx)
    kv = _expanded(attn, layer_cache, before, kv_all, kv_nope, len(cache.layers)).view(-1, heads, nope + vdim)
    # scores = q_nope . k_nope + q_rot . k_rot (the rotary key is shared by the heads), for the one query
    scores = torch.bmm(q[:, :nope].unsqueeze(1), kv[..., :nope].permute(1, 2, 0)).view(heads, -1)
    scores = torch.addmm(scores, q_rot, k_rot_all.view(-1, rope).t()).mul_(attn.scaling)
    probs = torch.softmax(scores, dim=-1)
    out = torch.bmm(probs.unsqueeze(1), kv[..., nope:].transpose(0, 1))  # [heads, 1, v]
    return attn.o_proj(out.view(1, heads * vdim))


# The expanded keys/values kept next to a cache (all layers together) stay under this size; past it every step
# expands the whole latent cache again, as transformers does (MLA's point is a small cache on big models).
EXPANDED_KV_BYTES = 64 * 2**20


def _expanded(attn: nn.Module, layer_cache, before: torch.Tensor, latents: torch.Tensor, new: torch.Tensor,
              n_layers: int) -> torch.Tensor:
    """kv_b_proj of every cached latent [L, heads * (nope + v)]. transformers expands the whole cache each step
    (a product over L rows per layer); here the expansion is kept on the cache layer and only the new row is
    expanded, while the layer's latents are exactly the ones it was made from: the same tensor object, not
    modified in place since (crop, reorder, a transformers step and any update replace or bump the tensor)."""
    kept = layer_cache.__dict__.get("_tailor_expanded")
    if kept is not None and kept[0] is before and kept[1] == before._version:
        kv = torch.cat([kept[2], attn.kv_b_proj(new)])
    else:
        kv = attn.kv_b_proj(latents.view(-1, latents.shape[-1]))
    # Inference-mode tensors (torch.inference_mode, the serving engine) have no version counter: not kept.
    if kv.numel() * kv.element_size() * n_layers <= EXPANDED_KV_BYTES and not latents.is_inference():
        layer_cache.__dict__["_tailor_expanded"] = (latents, latents._version, kv)
    else:
        layer_cache.__dict__.pop("_tailor_expanded", None)
    return kv


def _layer(layer: nn.Module, h: torch.Tensor, cache, rotation: torch.Tensor) -> torch.Tensor:
    h = h + _attention(layer.self_attn, _rms(h, layer.input_layernorm), cache, rotation)
    x = _rms(h, layer.post_attention_layernorm)
    mlp = layer.mlp
    if hasattr(mlp, "gate"):  # DeepseekV3MoE
        weights, idx = _router(mlp.gate, x)
        return h + (mlp.experts(x, idx, weights) + mlp.shared_experts(x))
    return h + mlp(x)


def _rope(model: nn.Module) -> tuple | None:
    """(cos/sin per position [max_positions, 2, rope_dim] computed as DeepseekV3RotaryEmbedding computes them,
    Pc, Ps) for default RoPE, else None; made at the first fast step and kept."""
    rotary = model.rotary_emb
    if rotary.rope_type != "default" or rotary.attention_scaling != 1.0:
        return None
    interleave = bool(model.config.rope_interleave)
    rope = model.__dict__.get("_fast_rope")
    inv = rotary.inv_freq
    if rope is None or rope[0].device != inv.device or rope[3] != interleave:
        pos = torch.arange(rotary.max_seq_len_cached, device=inv.device)
        freqs = pos[:, None].float() * inv.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        pc, ps = _rotation_patterns(emb.shape[-1], interleave)
        rope = model.__dict__["_fast_rope"] = (torch.stack([emb.cos(), emb.sin()], dim=1), pc.to(inv.device),
                                               ps.to(inv.device), interleave)
    return rope


@functools.cache
def _transformers_types():
    # imported once: `from transformers import ...` goes through its lazy module on every call
    from transformers.cache_utils import DynamicCache, DynamicLayer
    from transformers.modeling_outputs import MoeModelOutputWithPast

    return DynamicCache, DynamicLayer, MoeModelOutputWithPast


def _fast_case(model, input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, kwargs) -> int | None:
    """The position of the token to decode when this call can take the fast step, else None."""
    DynamicCache, DynamicLayer, _ = _transformers_types()
    if (model.training or torch.is_grad_enabled() or inputs_embeds is not None or input_ids is None
            or type(input_ids) is not torch.Tensor or input_ids.shape != (1, 1)
            or type(past_key_values) is not DynamicCache or torch.jit.is_tracing()
            or torch.compiler.is_compiling() or torch.compiler.is_exporting()):
        # (tracing, compiling and exporting record transformers' graph: this step reads values on the host)
        return None
    for key, value in kwargs.items():  # output_*=False asks for nothing; anything else is transformers' business
        if not (key in _RECORD_FLAGS and value is False or key == "return_dict" and value is not False):
            return None
    config = model.config
    if any(kwargs.get(f, getattr(config, f, False)) for f in _RECORD_FLAGS):
        return None
    if config._attn_implementation not in ("eager", "sdpa"):  # (attention dropout only runs in training mode)
        return None
    layers = past_key_values.layers
    if len(layers) != len(model.layers) or any(type(c) is not DynamicLayer or not getattr(c, "is_initialized", False)
                                               for c in layers):
        return None
    past = past_key_values.get_seq_length()
    if past == 0:
        return None
    if attention_mask is not None and (attention_mask.shape != (1, past + 1) or not bool(attention_mask.all())):
        return None
    pos = past if position_ids is None else (int(position_ids) if position_ids.numel() == 1 else -1)
    if pos < 0:
        return None
    inlined = model.__dict__["_fast_modules"]
    if _inlined(model) != inlined:  # a module it reads was replaced since (peft wraps the router for LoRA on it)
        return None
    for m in inlined:
        if m._forward_pre_hooks or any(not _output_capturing(h) for h in m._forward_hooks.values()):
            return None
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return None
    return pos


def fast_forward(model, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 inputs_embeds=None, use_cache=None, **kwargs):
    """DeepseekV3Model.forward with a lean path for one decoded token of one sequence (see the module doc)."""
    pos = _fast_case(model, input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, kwargs)
    rope = None if pos is None else _rope(model)
    h = None if rope is None or pos >= rope[0].shape[0] else model.embed_tokens(input_ids)
    if h is None or h.dtype != torch.float32:
        original = model.__dict__[KEY]
        return original(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
    table, pc, ps, _ = rope
    cos, sin = table[pos]
    rotation = torch.addcmul(pc * cos, ps, sin)  # this position's RoPE for every layer's q and k
    h = h.view(1, -1)
    for layer in model.layers:
        h = _layer(layer, h, past_key_values, rotation)
    h = _rms(h, model.norm)
    output = _transformers_types()[2]
    return output(last_hidden_state=h.view(1, 1, -1), past_key_values=past_key_values)


def _claims(model: nn.Module) -> bool:
    # The module structure fast_forward reads; anything else keeps transformers' forward.
    config = model.config
    if getattr(config, "model_type", None) != "deepseek_v3" or not hasattr(model, "rotary_emb"):
        return False
    if len(model.layers) != config.num_hidden_layers:
        return False
    for layer in model.layers:
        attn = layer.self_attn
        if not all(hasattr(attn, a) for a in ("kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "scaling")):
            return False
        if config.num_key_value_heads != config.num_attention_heads:
            return False
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None and not (all(hasattr(layer.mlp, a) for a in ("experts", "shared_experts"))
                                     and all(hasattr(gate, a) for a in _ROUTER_ATTRS)):
            return False
    return True


def _inlined(model: nn.Module) -> list[nn.Module]:
    """The modules whose attributes fast_forward reads instead of calling them, in a fixed order."""
    return [model.norm, model.rotary_emb] + [
        m for layer in model.layers for m in (layer, layer.self_attn, getattr(layer.self_attn, "q_a_layernorm", None),
                                              layer.self_attn.kv_a_layernorm, layer.input_layernorm,
                                              layer.post_attention_layernorm, layer.mlp,
                                              getattr(layer.mlp, "gate", None)) if m is not None]


def use_fast_decode(model: nn.Module) -> int:
    """Install `fast_forward` on every DeepseekV3Model inside `model`; returns how many (0 for other models)."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Model

    n = 0
    for module in model.modules():
        if type(module) is DeepseekV3Model and KEY not in module.__dict__ and _claims(module):
            # The modules fast_forward inlines instead of calling: a hook on one of them, or one replaced
            # later (peft wrapping it), means fall back.
            module.__dict__["_fast_modules"] = _inlined(module)
            install_forward(module, KEY, fast_forward)
            n += 1
    return n


def use_transformers_decode(model: nn.Module) -> int:
    """Undo `use_fast_decode`: transformers' own forward again (benchmarks and tests compare the two)."""
    n = 0
    for module in model.modules():
        if restore_forward(module, KEY):
            module.__dict__.pop("_fast_modules", None)
            module.__dict__.pop("_fast_rope", None)
            n += 1
    return n
