"""Attention for packed rows that runs each sample's causal attention on its own, skipping the masked blocks.

With `data.packing=true` a row holds several samples and sdpa gets a block-diagonal causal mask: it still
computes every query-key pair of the row (seq_len^2) and throws most away. This implementation, registered
with transformers' `AttentionInterface` / `AttentionMaskInterface` as "tailor_packed_sdpa", reads the
samples' boundaries from `position_ids` (restarts at 0, as `tailor.data.packing` builds them) and calls
`scaled_dot_product_attention(is_causal=True)` per sample: the same result with sum(len_i^2) work
(bench/bench_lora_sft.py). Every other case (a padding mask, a KV cache, decoding) goes to transformers'
own sdpa unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tailor.errors import TailorError
from tailor.runtime import guard

NAME = "tailor_packed_sdpa"
# The libraries whose internals this reads (guard.TESTED ranges) and the private names it needs.
LIBRARIES = ("transformers",)
PRIVATE_NAMES = ("transformers.integrations.sdpa_attention.sdpa_attention_forward",
                 "transformers.integrations.sdpa_attention.repeat_kv", "transformers.masking_utils.sdpa_mask",
                 "transformers.masking_utils.AttentionMaskInterface", "transformers.AttentionInterface",
                 "transformers.configuration_utils.PreTrainedConfig._attn_implementation")
_registered = False


def _segments(position_ids: torch.Tensor, rows: int, length: int) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) spans of consecutive positions (a new span wherever a position is not previous + 1)."""
    pos = position_ids.expand(rows, -1) if position_ids.shape[0] == 1 else position_ids
    if pos.shape != (rows, length):
        raise TailorError(f"position_ids of shape {tuple(position_ids.shape)} do not match {rows} rows of {length} tokens",
                          where="packed attention")
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    out = []
    for row in starts.tolist():
        cuts = [i for i, s in enumerate(row) if s] + [length]
        out.append(list(zip(cuts[:-1], cuts[1:])))
    return out


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          is_causal=None, **kwargs):
    """transformers attention function: per-sample causal sdpa when the mask was left to it (see _mask), else sdpa."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    rows, _, length, _ = query.shape
    if attention_mask is not None or key.shape[2] != length or length == 1 or is_causal is False:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        # The mask function dropped the mask on the promise that positions mark the samples: fail loudly, never leak.
        raise TailorError(f"{type(module).__name__} does not pass position_ids to its attention function",
                          where="packed attention", fix="train this model with data.packing=false")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    out_rows = []
    for b, spans in enumerate(_segments(position_ids, rows, length)):
        parts = [F.scaled_dot_product_attention(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e],
                                                dropout_p=dropout, is_causal=True, scale=scaling) for s, e in spans]
        out_rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    out = torch.cat(out_rows, dim=0) if rows > 1 else out_rows[0]
    return out.transpose(1, 2).contiguous(), None


def _mask(*, attention_mask=None, q_length=None, kv_length=None, q_offset=0, **kwargs):
    """No mask (the attention function isolates samples by position_ids) when there is no padding mask and no cache."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and q_length == kv_length and not q_offset:
        return None
    if attention_mask is not None:
        # sdpa would drop an all-ones padding mask and run plain causal attention; keep that meaning explicit here,
        # since a missing mask means "samples by position_ids" to packed_sdpa_attention.
        kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(attention_mask=attention_mask, q_length=q_length, kv_length=kv_length, q_offset=q_offset, **kwargs)


def register() -> None:
    """Make "tailor_packed_sdpa" known to transformers (idempotent)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, packed_sdpa_attention)
        AttentionMaskInterface.register(NAME, _mask)
        _registered = True


def use_packed_attention(model) -> bool:
    """Switch a model that uses sdpa to per-sample packed attention; returns whether it did.

    Models with sliding-window layers keep sdpa (their window lives in the mask this implementation drops), and so
    does every model outside the tested transformers range (with one warning per process, `guard.warn_once`).
    """
    why = guard.refusal(LIBRARIES, PRIVATE_NAMES)
    if why:
        guard.warn_once(f"tailor.runtime: packed attention is off, sdpa with a block-diagonal mask runs ({why})")
        return False
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    kinds = getattr(text, "layer_types", None) or []
    if any(k != "full_attention" for k in kinds) or (getattr(text, "use_sliding_window", False) and getattr(text, "sliding_window", None)):
        return False
    register()
    model.set_attn_implementation(NAME)
    return True
