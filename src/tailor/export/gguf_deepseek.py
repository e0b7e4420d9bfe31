"""DeepSeek-V3 (transformers `deepseek_v3`) to llama.cpp's `deepseek2` GGUF architecture.

Follows llama.cpp's own `DeepseekV2Model` converter (conversion/deepseek.py) and its loader
(src/models/deepseek2.cpp) of the llama.cpp vendored in llama-cpp-python 0.3.36:

- multi-head latent attention is stored for the "absorbed" MLA graph: `kv_b_proj` split per head
  into `attn_k_b` (transposed, [head, kv_lora_rank, qk_nope]) and `attn_v_b`, with
  `head_count_kv` 1 and key/value lengths of the compressed cache (`kv_lora_rank + qk_rope` and
  `kv_lora_rank`); the per-head sizes go in `key_length_mla` / `value_length_mla`;
- llama.cpp rotates adjacent pairs (its "norm" rope), which is DeepSeek's interleaved layout
  (`rope_interleave: true`); with `rope_interleave: false` transformers rotates halves, so the
  rotary rows of `q_b_proj` (or `q_proj`) and `kv_a_proj_with_mqa` are permuted to pairs;
- transformers 5 keeps routed experts fused (`experts.gate_up_proj` [E, 2I, H], gate rows first,
  as its forward's `.chunk(2)`); they are split into `ffn_gate_exps` / `ffn_up_exps`;
- the router is sigmoid-scored with `e_score_correction_bias` as the selection-only bias
  (`exp_probs_b`), group-limited top-k, optional normalisation and `routed_scaling_factor`,
  exactly what transformers' DeepseekV3TopkRouter computes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from tailor.errors import TailorError

ARCH = "deepseek2"
_FIX = ("export --format safetensors and convert that directory with llama.cpp's convert_hf_to_gguf.py, "
        "or use --format onnx")
_NO_GGUF = "serve this model from PyTorch or export it with --format onnx or safetensors instead"
_TRAINED_HERE = ("if the model was trained and evaluated with transformers' DeepseekV3 (as `tailor train` does), "
                 "delete '{key}' from config.json: that code never read it; otherwise " + _NO_GGUF)

# HF per-layer names -> llama.cpp names (the loader's create_tensor names in deepseek2.cpp).
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_a_proj.weight": "attn_q_a.weight",
    "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
    "self_attn.q_b_proj.weight": "attn_q_b.weight",
    "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    "mlp.experts.down_proj": "ffn_down_exps.weight",
    "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
}
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
# Kept in float32 whatever the file type. The router, as llama.cpp's converter does: its logits pick the experts,
# so rounding them can change which experts run. MLA's k_b/v_b: llama.cpp's loader puts an f16 or q8_0/q4 matrix in
# the AMX repacked buffer (CPUs with AMX, the default) when a contiguous test product passes; the deepseek2 graph then
# multiplies k_b/v_b with permuted (non-contiguous) activations, which the AMX buffer type refuses and no other
# backend can read, and llama.cpp aborts (GGML_ASSERT(*cur_backend_id != -1) in ggml_backend_sched_split_graph).
# The AMX buffer type takes no f32 weights, so these small batched matrices stay on the plain CPU buffer.
F32_TENSORS = ("ffn_gate_inp.weight", "attn_k_b.weight", "attn_v_b.weight")


def _refuse(what: str, where: str, fix: str = _NO_GGUF) -> None:
    raise TailorError(what, where=where, fix=fix)


def check_deepseek(config) -> None:
    """Refuse a DeepSeek-V3 config whose computation llama.cpp's deepseek2 graph would not reproduce."""
    where = "config.json"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        _refuse(f"GGUF export of DeepSeek models handles plain rotary embeddings only; this model uses "
                f"rope_type '{rope['rope_type']}' (YaRN scaling is not mapped)", f"{where} rope_parameters", _FIX)
    # transformers' DeepseekV3 always scores with sigmoid and the bias-corrected ("noaux_tc") top-k;
    # a config that declares something else was trained with other router code.
    scoring = getattr(config, "scoring_func", None)
    if scoring not in (None, "sigmoid"):
        _refuse(f"scoring_func '{scoring}' is not what transformers' DeepseekV3 computes (sigmoid)",
                f"{where} scoring_func", _TRAINED_HERE.format(key="scoring_func"))
    topk = getattr(config, "topk_method", None)
    if topk not in (None, "noaux_tc"):
        _refuse(f"topk_method '{topk}' is not what transformers' DeepseekV3 computes (noaux_tc)",
                f"{where} topk_method", _TRAINED_HERE.format(key="topk_method"))
    if config.hidden_act != "silu":
        _refuse(f"llama.cpp's deepseek2 graph uses SiLU, this model has hidden_act '{config.hidden_act}'",
                f"{where} hidden_act")
    if getattr(config, "attention_bias", False):
        _refuse("llama.cpp's deepseek2 graph has no attention biases, this model has attention_bias: true",
                f"{where} attention_bias")
    lite = config.num_hidden_layers in (26, 27) or (config.num_hidden_layers == 48 and config.vocab_size == 128256)
    if lite and config.q_lora_rank:
        # llama.cpp guesses DeepSeek-V2-Lite from these sizes and then skips q_lora_rank, expecting attn_q
        _refuse(f"llama.cpp reads a deepseek2 model of {config.num_hidden_layers} layers as DeepSeek-V2-Lite "
                "(no query latent), but this one has q_lora_rank set", f"{where} num_hidden_layers")
    if config.first_k_dense_replace < config.num_hidden_layers:
        if not config.n_shared_experts:
            _refuse("llama.cpp's deepseek2 graph always adds a shared expert; this model has n_shared_experts 0",
                    f"{where} n_shared_experts")
        if config.n_routed_experts % config.n_group or config.n_routed_experts // config.n_group < 2:
            _refuse(f"{config.n_routed_experts} routed experts do not split into {config.n_group} groups of "
                    "at least 2", f"{where} n_group", fix="set n_group so that each group holds 2 or more experts")
        if not config.routed_scaling_factor or config.routed_scaling_factor < 0:
            # llama.cpp treats a scale of 0 as "no scaling"; transformers would zero the routed experts
            _refuse(f"routed_scaling_factor {config.routed_scaling_factor} must be positive",
                    f"{where} routed_scaling_factor")


def add_deepseek_hparams(writer, config) -> None:
    """Metadata keys llama.cpp reads for deepseek2 (llama_model_deepseek2::load_arch_hparams)."""
    import gguf

    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    # MLA runs as multi-query attention over the compressed cache: one KV "head" of the latent.
    writer.add_head_count_kv(1)
    writer.add_key_length(config.kv_lora_rank + config.qk_rope_head_dim)
    writer.add_value_length(config.kv_lora_rank)
    writer.add_key_length_mla(config.qk_nope_head_dim + config.qk_rope_head_dim)
    writer.add_value_length_mla(config.v_head_dim)
    writer.add_rope_dimension_count(config.qk_rope_head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    # 0 selects the plain q projection (attn_q); llama.cpp requires the key outside its "lite" sizes.
    writer.add_q_lora_rank(config.q_lora_rank or 0)
    writer.add_kv_lora_rank(config.kv_lora_rank)
    writer.add_leading_dense_block_count(min(config.first_k_dense_replace, config.num_hidden_layers))
    writer.add_expert_count(config.n_routed_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_expert_shared_count(config.n_shared_experts or 0)
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    writer.add_expert_group_count(config.n_group)
    writer.add_expert_group_used_count(config.topk_group)
    # Without this key llama.cpp falls back to softmax (DeepSeek-V2 files); V3 is sigmoid.
    writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    writer.add_expert_weights_norm(bool(config.norm_topk_prob))
    writer.add_expert_weights_scale(float(config.routed_scaling_factor))


def _pairs(rows: np.ndarray) -> np.ndarray:
    """Rotate-half rotary rows (i, i + d/2) -> adjacent pairs (2i, 2i + 1), llama.cpp's rope layout."""
    d = rows.shape[0]
    return rows.reshape(2, d // 2, *rows.shape[1:]).swapaxes(0, 1).reshape(rows.shape)


def _rope_rows_to_pairs(w: np.ndarray, head_dim: int, rope_dim: int) -> np.ndarray:
    """Permute the trailing `rope_dim` rows of every `head_dim`-row block (q of each head, or the kv_a latent)."""
    w = w.copy()
    for start in range(0, w.shape[0], head_dim):
        block = slice(start + head_dim - rope_dim, start + head_dim)
        w[block] = _pairs(w[block])
    return w


def deepseek_tensors(state_dict, config) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every tensor, in llama.cpp's layout; unknown tensors are an error."""
    n_head, nope, rope = config.num_attention_heads, config.qk_nope_head_dim, config.qk_rope_head_dim
    v_dim, kv_rank = config.v_head_dim, config.kv_lora_rank
    permute = not getattr(config, "rope_interleave", True)
    for hf_name, tensor in state_dict.items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        data = tensor.detach().float().numpy()
        if hf_name in _GLOBAL:
            yield _GLOBAL[hf_name], data
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
        if m is None or int(m.group(1)) >= config.num_hidden_layers:
            raise TailorError(f"no GGUF name for tensor '{hf_name}' of this deepseek_v3 model "
                              "(multi-token-prediction layers are not exported)", fix=_FIX)
        blk, rest = f"blk.{m.group(1)}.", m.group(2)
        if rest == "self_attn.kv_b_proj.weight":
            kv_b = data.reshape(n_head, nope + v_dim, kv_rank)
            yield blk + "attn_k_b.weight", np.ascontiguousarray(kv_b[:, :nope, :].transpose(0, 2, 1))
            yield blk + "attn_v_b.weight", np.ascontiguousarray(kv_b[:, nope:, :])
        elif rest == "mlp.experts.gate_up_proj":
            inter = config.moe_intermediate_size
            yield blk + "ffn_gate_exps.weight", np.ascontiguousarray(data[:, :inter, :])
            yield blk + "ffn_up_exps.weight", np.ascontiguousarray(data[:, inter:, :])
        elif rest in _LAYER:
            if permute and rest in ("self_attn.q_b_proj.weight", "self_attn.q_proj.weight"):
                data = _rope_rows_to_pairs(data, nope + rope, rope)
            elif permute and rest == "self_attn.kv_a_proj_with_mqa.weight":
                data = _rope_rows_to_pairs(data, kv_rank + rope, rope)
            yield blk + _LAYER[rest], data
        else:
            raise TailorError(f"no GGUF name for tensor '{hf_name}' of this deepseek_v3 model", fix=_FIX)
