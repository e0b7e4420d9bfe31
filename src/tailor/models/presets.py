"""Model presets: named, tiny architectures built from config, to train from scratch on a CPU.

A preset is a function `builder(vocab_size, **overrides) -> PretrainedConfig` in `PRESETS`.
The `*-tiny` presets (a few million parameters) are for real runs on a laptop; the `*-micro`
presets (tens of thousands of parameters besides the embeddings) are for tests. Architectures
are transformers' own (DeepseekV3, Llama, Qwen2), so every model built here loads, trains,
exports and serves like any Hugging Face checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path

from tailor.errors import TailorError

# Sizes chosen so that one forward+backward of 16 x 128 tokens (vocab 4096, float32) takes about
# half a second on two CPU cores: measured 0.46 s for deepseek-v3-tiny (5.7M parameters) and
# 0.39 s for llama-tiny / qwen2-tiny on a 2-core AMD EPYC (Zen 4), torch 2.13, transformers 5.23.
_DEEPSEEK_V3_TINY = dict(
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    # Multi-head latent attention: queries and keys/values pass through low-rank latents.
    q_lora_rank=128,
    kv_lora_rank=64,
    qk_nope_head_dim=32,
    qk_rope_head_dim=16,
    v_head_dim=32,
    # Layer 0 is a dense MLP (as in DeepSeek-V3, whose first 3 layers are dense); the rest are MoE.
    first_k_dense_replace=1,
    intermediate_size=512,
    moe_intermediate_size=128,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    # Group-limited routing only pays off with hundreds of experts across devices; with 8 experts a
    # single group makes routing plain top-k. (The router takes the top-2 scores of each group, so
    # every group needs at least 2 experts.)
    n_group=1,
    topk_group=1,
    norm_topk_prob=True,
    # DeepSeek-V3's 2.5 compensates for normalising over 8 of 256 experts; with top-2 of 8 and
    # normalised weights, 1.0 keeps the routed output on the same scale as the shared expert.
    routed_scaling_factor=1.0,
    max_position_embeddings=1024,
    tie_word_embeddings=False,
    # Multi-token-prediction layers are not part of DeepseekV3ForCausalLM's training forward;
    # declaring one would let generate(use_mtp=True) build an untrained module.
    num_mtp_layers=0,
)

_DEEPSEEK_V3_MICRO = dict(
    _DEEPSEEK_V3_TINY,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    q_lora_rank=32,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=8,
    v_head_dim=8,
    intermediate_size=128,
    moe_intermediate_size=32,
    n_routed_experts=4,
    num_experts_per_tok=2,
    max_position_embeddings=256,
)

_LLAMA_TINY = dict(
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    tie_word_embeddings=False,
)
_LLAMA_MICRO = dict(
    _LLAMA_TINY,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
# Qwen2 ties embeddings at small sizes (as Qwen2.5-0.5B does); its q/k/v projections have biases.
_QWEN2_TINY = dict(_LLAMA_TINY, tie_word_embeddings=True)
_QWEN2_MICRO = dict(_LLAMA_MICRO, tie_word_embeddings=True)


def _config_class(model_type: str):
    from transformers import DeepseekV3Config, LlamaConfig, Qwen2Config

    return {"deepseek_v3": DeepseekV3Config, "llama": LlamaConfig, "qwen2": Qwen2Config}[model_type]


def _allowed_keys(cls) -> set[str]:
    keys = {f.name for f in dataclasses.fields(cls)}
    keys |= set(getattr(cls, "attribute_map", {}))
    return keys - {"transformers_version", "architectures"}


def _check_shapes(name: str, model_type: str, values: dict) -> None:
    """Catch shape mistakes here, with the key to change, rather than deep inside a forward pass."""
    problems = []
    if model_type == "deepseek_v3":
        experts, groups = values["n_routed_experts"], values["n_group"]
        if experts % groups:
            problems.append(f"n_routed_experts={experts} must be divisible by n_group={groups}")
        elif experts // groups < 2:
            problems.append(f"each of the n_group={groups} expert groups needs at least 2 experts")
        if not 1 <= values["topk_group"] <= groups:
            problems.append(f"topk_group={values['topk_group']} must be between 1 and n_group={groups}")
        elif values["num_experts_per_tok"] > values["topk_group"] * (experts // max(groups, 1)):
            problems.append(
                f"num_experts_per_tok={values['num_experts_per_tok']} exceeds the experts in the "
                f"topk_group={values['topk_group']} selected groups"
            )
        if values["qk_rope_head_dim"] % 2:
            problems.append(f"qk_rope_head_dim={values['qk_rope_head_dim']} must be even (rotary pairs)")
    else:
        hidden, heads, kv = values["hidden_size"], values["num_attention_heads"], values["num_key_value_heads"]
        if hidden % heads:
            problems.append(f"hidden_size={hidden} must be divisible by num_attention_heads={heads}")
        if heads % kv:
            problems.append(f"num_attention_heads={heads} must be divisible by num_key_value_heads={kv}")
    if problems:
        raise TailorError(
            "invalid model shape: " + "; ".join(problems),
            where=f"preset {name}",
            fix="change the override(s) named above",
        )


def _builder(name: str, model_type: str, defaults: dict) -> Callable:
    def build(vocab_size: int, **overrides):
        cls = _config_class(model_type)
        unknown = sorted(set(overrides) - _allowed_keys(cls))
        if unknown:
            key = unknown[0]
            near = difflib.get_close_matches(key, sorted(_allowed_keys(cls)), n=1)
            raise TailorError(
                f"unknown setting '{key}' for preset {name} ({cls.__name__})",
                where=f"preset {name}",
                fix=(f"did you mean '{near[0]}'? " if near else "")
                + "overrides must be fields of the transformers config class",
            )
        # Aliases (e.g. num_local_experts -> n_routed_experts) are resolved first, so the shape
        # checks below see the value that the config will actually use.
        aliases = getattr(cls, "attribute_map", {})
        values = dict(defaults, vocab_size=vocab_size)
        values.update({aliases.get(k, k): v for k, v in overrides.items()})
        _check_shapes(name, model_type, values)
        try:
            return cls(**values)
        except Exception as e:  # strict dataclass type checks and transformers' own validation
            raise TailorError(
                f"invalid settings for preset {name}: {e}",
                where=f"preset {name}",
                fix="check the types and values of the overrides",
            ) from None

    build.__doc__ = f"{model_type} config for preset '{name}'; keyword overrides replace defaults."
    return build


PRESETS: dict[str, Callable] = {
    "deepseek-v3-tiny": _builder("deepseek-v3-tiny", "deepseek_v3", _DEEPSEEK_V3_TINY),
    "deepseek-v3-micro": _builder("deepseek-v3-micro", "deepseek_v3", _DEEPSEEK_V3_MICRO),
    "llama-tiny": _builder("llama-tiny", "llama", _LLAMA_TINY),
    "llama-micro": _builder("llama-micro", "llama", _LLAMA_MICRO),
    "qwen2-tiny": _builder("qwen2-tiny", "qwen2", _QWEN2_TINY),
    "qwen2-micro": _builder("qwen2-micro", "qwen2", _QWEN2_MICRO),
}


def build_config(preset: str, vocab_size: int, **overrides):
    """Return the transformers config of a named preset, with `overrides` applied."""
    if preset not in PRESETS:
        near = difflib.get_close_matches(preset, list(PRESETS), n=1, cutoff=0.0)
        raise TailorError(
            f"unknown model preset '{preset}'",
            where="model.preset",
            fix=(f"did you mean '{near[0]}'? " if near else "") + "valid presets: " + ", ".join(PRESETS),
        )
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise TailorError(f"vocab_size={vocab_size} must be a positive integer", where=f"preset {preset}")
    return PRESETS[preset](vocab_size, **overrides)


def init_model(preset: str, tokenizer, out_dir: str | Path | None = None, seed: int = 0, **overrides):
    """Build a freshly initialised float32 model of `preset` sized to `tokenizer`.

    With `out_dir`, saves the model (safetensors), the tokenizer and a generation config there, so
    the directory is a complete checkpoint for `load_model` / `from_pretrained`.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        # Same fallback as load_tokenizer: padding positions are masked, so eos is a safe pad.
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }
    config = build_config(preset, len(tokenizer), **{**ids, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(**ids)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return model
