"""What the plan knows about a model without its weights: the config, and the parameters counted per kind on the
meta device.

The model is built by transformers itself (`AutoModelForCausalLM.from_config` under `torch.device("meta")`: shapes
only, no memory, no weights read), so the counts are exact for every architecture transformers knows. A model whose
config needs custom code, or whose architecture transformers does not know, still gets a shape from the config's
standard fields (hidden size, layers, heads, intermediate size, vocabulary); `unknown` then says what was guessed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tailor.errors import TailorError

log = logging.getLogger("tailor")

KINDS = ("embedding", "attention", "mlp", "experts", "router", "norm", "head", "other")


@dataclass
class Linear:
    """A group of identical linear layers: `count` weights of in_features x out_features (x experts when fused)."""

    name: str          # the leaf name (q_proj, gate_up_proj, ...)
    in_features: int
    out_features: int
    count: int         # how many such layers (over all decoder blocks)
    experts: int = 1   # > 1: a fused per-expert weight, one slice per expert
    layer_first: int = 0  # the lowest decoder block holding one (for freeze-last-N)


@dataclass
class ModelShape:
    """A model's architecture as the memory and time models read it.

    `parameters` counts each tensor once (tied embeddings once); `by_kind` splits it into embedding, attention,
    mlp, experts (routed, fused per-expert weights), router, norm, head (untied output layer) and other.
    `per_layer` is the parameters of each decoder block, in order. `unknown` lists what could not be read and
    was estimated or left out (custom code, an unknown architecture).
    """

    name: str
    model_type: str
    parameters: int
    by_kind: dict[str, int]
    per_layer: list[int]
    linears: list[Linear]
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_positions: int | None = None
    tied_embeddings: bool = False
    # Mixture of experts: routed experts per MoE layer, experts each token uses, MoE layers, expert intermediate size
    num_experts: int = 0
    experts_per_token: int = 0
    moe_layers: int = 0
    moe_intermediate_size: int = 0
    shared_experts: int = 0
    # Multi-head latent attention (DeepSeek-V2/V3): query/key and value head sizes differ from hidden / heads
    qk_head_dim: int = 0
    v_head_dim: int = 0
    qk_nope_head_dim: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    unknown: list[str] = field(default_factory=list)
    config: object = field(default=None, repr=False)  # the transformers config (None when unreadable)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("config")
        return d


def read_config(path: str | Path, trust_remote_code: bool = False):
    """(config, raw dict) of a model directory or a config.json file, read with transformers' AutoConfig when it
    knows the architecture; (None, raw) when it does not (the caller estimates from the raw fields)."""
    p = Path(path)
    file = p / "config.json" if p.is_dir() else p
    if not file.is_file():
        raise TailorError(f"no config.json at {p}", where="model.path",
                          fix="point model.path at a Hugging Face model directory, or use --model NAME (tailor plan --help lists the catalog)")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TailorError(f"cannot read {file}: {exc}", where="model.path", fix="check the file is valid JSON") from None
    return config_from_dict(raw, trust_remote_code, folder=file.parent), raw


def config_from_dict(raw: dict, trust_remote_code: bool = False, folder: Path | None = None):
    """A transformers config from config.json's fields; None when transformers does not know the model_type
    (or the model needs its own code and trust_remote_code is off)."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if "auto_map" in raw and trust_remote_code and folder is not None:
        try:
            return AutoConfig.from_pretrained(folder, trust_remote_code=True)
        except Exception as exc:  # custom code that does not import: estimate from the raw fields
            log.warning("custom config code in %s failed (%s): estimating from config.json's fields", folder, exc)
            return None
    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING:
        return None
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "auto_map")}
    return AutoConfig.for_model(model_type, **fields)


def shape_of(config, raw: dict | None = None, name: str = "model") -> ModelShape:
    """Count a model's parameters per kind by building it on the meta device (no memory used, no weights read)."""
    raw = raw if raw is not None else (config.to_dict() if config is not None else {})
    unknown: list[str] = []
    model = None
    if config is not None:
        model = _meta_model(config, unknown)
    elif raw.get("auto_map"):
        unknown.append("the architecture needs the model's own code (trust_remote_code is off): parameters estimated "
                       "from config.json's standard fields as a Llama-like decoder")
    else:
        unknown.append(f"transformers does not know model_type={raw.get('model_type')!r}: parameters estimated from "
                       "config.json's standard fields as a Llama-like decoder")
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    get = (lambda k, d=None: getattr(text, k, d)) if text is not None else (lambda k, d=None: raw.get(k, d))
    hidden = int(get("hidden_size", 0) or get("n_embd", 0) or get("d_model", 0) or 0)
    layers = int(get("num_hidden_layers", 0) or get("n_layer", 0) or get("num_layers", 0) or 0)
    heads = int(get("num_attention_heads", 0) or get("n_head", 0) or 0)
    if not (hidden and layers and heads):
        raise TailorError(f"config.json of {name} has no hidden_size / num_hidden_layers / num_attention_heads",
                          where=f"{name} config.json", fix="a plan needs a decoder's standard config fields")
    kv = int(get("num_key_value_heads", None) or heads)
    head_dim = int(get("head_dim", None) or hidden // heads)
    inter = int(get("intermediate_size", 0) or get("n_inner", 0) or 4 * hidden)
    vocab = int(get("vocab_size", 0) or 0)
    experts = int(get("n_routed_experts", 0) or get("num_experts", 0) or get("num_local_experts", 0) or 0)
    top_k = int(get("num_experts_per_tok", 0) or 0) if experts else 0
    qk = int((get("qk_nope_head_dim", 0) or 0) + (get("qk_rope_head_dim", 0) or 0)) or head_dim
    shape = ModelShape(
        name=name, model_type=str(raw.get("model_type") or getattr(config, "model_type", "?")), parameters=0,
        by_kind={}, per_layer=[], linears=[], hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=kv, head_dim=head_dim, intermediate_size=inter, vocab_size=vocab,
        max_positions=get("max_position_embeddings", None), tied_embeddings=bool(get("tie_word_embeddings", False)),
        num_experts=experts, experts_per_token=top_k, moe_intermediate_size=int(get("moe_intermediate_size", 0) or 0),
        shared_experts=int(get("n_shared_experts", 0) or 0), qk_head_dim=qk,
        v_head_dim=int(get("v_head_dim", 0) or head_dim), qk_nope_head_dim=int(get("qk_nope_head_dim", 0) or 0), kv_lora_rank=int(get("kv_lora_rank", 0) or 0),
        q_lora_rank=int(get("q_lora_rank", 0) or 0), unknown=unknown, config=config)
    if model is not None:
        _count(model, shape)
    else:
        _estimate(shape)
    if not vocab:
        shape.unknown.append("no vocab_size: embeddings and the output layer left out")
    return shape


def _meta_model(config, unknown: list[str]):
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        model.tie_weights()
        return model
    except Exception as exc:  # an architecture with no causal-LM class, or one that does not build on meta
        unknown.append(f"transformers could not build {type(config).__name__} as a causal LM on the meta device "
                       f"({type(exc).__name__}: {str(exc)[:120]}): parameters estimated from config.json's standard fields")
        return None


def _kind(name: str, param: torch.nn.Parameter, module, head_ids: set[int]) -> str:
    if id(param) in head_ids:
        return "head"
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    leaf = name.rsplit(".", 1)[-1]
    if param.ndim == 1 and ("norm" in name or "ln" in leaf):
        return "norm"
    if ".experts." in name or name.endswith(".experts"):
        return "experts"
    if ".mlp.gate." in name or name.endswith(".mlp.gate") or ".router." in name or name.endswith("e_score_correction_bias"):
        return "router"
    if "attn" in name or "attention" in name:
        return "attention"
    if "mlp" in name or "feed_forward" in name or "shared_expert" in name:
        return "mlp"
    return "norm" if param.ndim == 1 else "other"


def _count(model, shape: ModelShape) -> None:
    import re

    layer_re = re.compile(r"(?:^|\.)layers\.(\d+)\.")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head_ids = {id(head.weight)} if head is not None and (embed is None or head.weight is not embed.weight) else set()
    by_kind = dict.fromkeys(KINDS, 0)
    per_layer = [0] * shape.num_layers
    linears: dict[tuple, Linear] = {}
    moe_layers: set[int] = set()
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mname}.{pname}" if mname else pname
            kind = _kind(full, p, module, head_ids)
            by_kind[kind] += p.numel()
            m = layer_re.search(full)
            layer = int(m.group(1)) if m else None
            if layer is not None and layer < len(per_layer):
                per_layer[layer] += p.numel()
            if kind == "experts":
                moe_layers.add(layer)
            if id(p) in head_ids or kind == "embedding":
                continue
            if isinstance(module, torch.nn.Linear) and pname == "weight":
                key = (mname.rsplit(".", 1)[-1], p.shape[1], p.shape[0], 1)
            elif p.ndim == 3 and kind == "experts":
                # fused experts: [experts, out, in] (transformers' layout for gate_up_proj / down_proj)
                key = (pname, p.shape[2], p.shape[1], p.shape[0])
            else:
                continue
            lin = linears.get(key)
            if lin is None:
                linears[key] = Linear(key[0], key[1], key[2], 1, key[3], layer if layer is not None else 0)
            else:
                lin.count += 1
                lin.layer_first = min(lin.layer_first, layer if layer is not None else 0)
    shape.by_kind = {k: v for k, v in by_kind.items() if v}
    shape.parameters = sum(by_kind.values())
    shape.per_layer = per_layer
    shape.linears = list(linears.values())
    shape.moe_layers = len(moe_layers - {None})


def _estimate(shape: ModelShape) -> None:
    """A Llama-like decoder from the standard fields: the fallback when the architecture cannot be built."""
    h, i, L, v = shape.hidden_size, shape.intermediate_size, shape.num_layers, shape.vocab_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    attn = h * q + 2 * h * kv + q * h
    mlp = 3 * h * i
    shape.linears = [Linear("q_proj", h, q, L), Linear("k_proj", h, kv, L), Linear("v_proj", h, kv, L),
                     Linear("o_proj", q, h, L), Linear("gate_proj", h, i, L), Linear("up_proj", h, i, L),
                     Linear("down_proj", i, h, L)]
    shape.by_kind = {"embedding": v * h, "attention": attn * L, "mlp": mlp * L, "norm": (2 * L + 1) * h}
    if not shape.tied_embeddings and v:
        shape.by_kind["head"] = v * h
    shape.per_layer = [attn + mlp + 2 * h] * L
    shape.parameters = sum(shape.by_kind.values())
    if shape.num_experts:
        shape.unknown.append("mixture-of-experts layers counted as dense MLPs (the architecture could not be built)")
