"""The adapter methods themselves (see tailor.adapters.METHODS)."""

from __future__ import annotations

import logging
import re

from tailor.errors import TailorError

log = logging.getLogger("tailor")


def apply_full(model, cfg):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _task_type(model) -> str:
    """peft's task type: SEQ_CLS for a sequence classifier, so its new `score` head trains and is saved with the
    adapter (peft adds it to modules_to_save and keeps it out of all-linear); CAUSAL_LM otherwise."""
    return "SEQ_CLS" if _is_classifier(model) else "CAUSAL_LM"


def _is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def _head(model):
    """The output layer: the LM head, or a sequence classifier's `score` layer (it has no output embeddings)."""
    return getattr(model, "score", None) if _is_classifier(model) else model.get_output_embeddings()


def _check_targets(model, targets) -> None:
    if targets != "all-linear":
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            raise TailorError(f"adapter.target_modules names modules this model does not have: {missing}",
                              where="adapter.target_modules",
                              fix=f"use all-linear or names from: {sorted(_linear_names(model))}")


def apply_lora(model, cfg):
    """LoRA (method=lora), or DoRA when `cfg.method == "dora"`; `cfg.rslora` switches to alpha / sqrt(r) scaling."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules
    _check_targets(model, targets)
    targets, expert_params = _expert_targets(model, targets, cfg.lora_experts)
    dora = cfg.method == "dora"
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      target_parameters=expert_params or None,
                      bias="none", task_type=_task_type(model), use_dora=dora, use_rslora=cfg.rslora)
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        if dora and "ParamWrapper" in str(exc):
            raise TailorError("DoRA cannot wrap this model's fused mixture-of-experts weights (peft has no DoRA for them)",
                              where="adapter.method",
                              fix="use adapter.method=lora, or list non-expert adapter.target_modules "
                                  "(e.g. [q_a_proj, q_b_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj])") from None
        if "does not work with lora_dropout" in str(exc):
            # peft maps MLP targets of transformers-v5 MoE models (DeepSeek-V3, Mixtral, Qwen-MoE) onto the fused
            # 3-D expert weights, and its wrapper for those has no dropout.
            raise TailorError("LoRA on this model's fused mixture-of-experts weights does not support dropout",
                              where="adapter.dropout", fix="set adapter.dropout=0") from None
        raise
    cfg_used = peft_model.peft_config["default"]
    log.info("LoRA targets modules %s and parameters %s", sorted(cfg_used.target_modules or []),
             sorted(cfg_used.target_parameters or []))
    if cfg.lora_experts is not None:
        _check_expert_targets(peft_model, cfg.lora_experts)
    return peft_model


# On transformers-v5 MoE models (DeepSeek-V2/V3, Qwen-MoE, Mixtral, ...) peft 0.21 maps these target names onto
# the fused expert parameters (gate_proj/up_proj -> experts.gate_up_proj, down_proj -> experts.down_proj) and the
# router (gate -> gate.weight), whatever module they name; so they cannot pick the shared experts or dense MLPs.
_PEFT_MOE_NAMES = ("gate_proj", "up_proj", "down_proj", "gate", "w1", "w2", "w3")


def fused_expert_parameters(model) -> list[str]:
    """Leaf names of the fused per-expert weights (3-D parameters over num_experts), e.g. [down_proj, gate_up_proj]."""
    found = set()
    for _, module in model.named_modules():
        n = getattr(module, "num_experts", None)
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(n, int) and p.ndim == 3 and p.shape[0] == n:
                found.add(pname)
    return sorted(found)


def _expert_targets(model, targets, lora_experts: bool | None):
    """(target_modules, target_parameters) for `adapter.lora_experts`: None leaves peft's choice alone, True adds
    the fused expert weights as target_parameters, False keeps every name peft would map onto experts/router out."""
    if lora_experts is None:
        return targets, []
    experts = fused_expert_parameters(model)
    if not experts:
        if lora_experts:
            raise TailorError("adapter.lora_experts=true, but this model has no fused mixture-of-experts weights",
                              where="adapter.lora_experts", fix="leave adapter.lora_experts unset for a dense model")
        log.info("adapter.lora_experts=false: this model has no mixture-of-experts weights, so nothing is skipped")
        return targets, []
    if lora_experts:
        return targets, experts
    if targets == "all-linear":
        head = _head(model)
        head_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head}
        dropped = sorted(_linear_names(model) & set(_PEFT_MOE_NAMES))
        if dropped:
            log.info("adapter.lora_experts=false: %s left out too (shared experts, dense MLPs): peft maps these names "
                     "onto the fused experts of this model", ", ".join(dropped))
        return sorted(_linear_names(model) - head_names - set(_PEFT_MOE_NAMES)), []
    clash = sorted(set(targets) & set(_PEFT_MOE_NAMES))
    if clash:
        raise TailorError(f"adapter.lora_experts=false, but adapter.target_modules names {clash}, which peft maps onto "
                          "this model's fused experts and router", where="adapter.target_modules",
                          fix="remove those names, or set adapter.lora_experts=true")
    return targets, []


def _check_expert_targets(peft_model, lora_experts: bool) -> None:
    """Fail loudly if the adapter does not reach (or does reach) the experts as adapter.lora_experts says."""
    wrapped = {n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n}
    on_experts = any(".experts." in n for n in wrapped)
    on_router = any(".mlp.gate." in n for n in wrapped)
    if (lora_experts and not on_experts) or (not lora_experts and (on_experts or on_router)):
        raise TailorError(f"adapter.lora_experts={str(lora_experts).lower()} was not honoured by peft for this model "
                          f"(LoRA on experts: {on_experts}, on the router: {on_router})", where="adapter.lora_experts",
                          fix="list adapter.target_modules explicitly and leave adapter.lora_experts unset")


def apply_qlora(model, cfg):
    """LoRA on the same base reloaded in 4-bit NF4 (bitsandbytes); CUDA only."""
    import torch

    if not torch.cuda.is_available():
        raise TailorError("adapter.method=qlora needs a CUDA GPU: bitsandbytes 4-bit weights do not train on CPU",
                          where="adapter.method",
                          fix="use adapter.method=lora (or dora) on this machine, or run on a CUDA GPU")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise TailorError("adapter.method=qlora needs the bitsandbytes package", where="adapter.method",
                          fix="pip install bitsandbytes")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    # The run loaded the base in full precision; 4-bit quantization happens at load time, so reload from disk.
    source = model.config._name_or_path
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=compute)
    # A classifier reloads with its own config: it holds the label set and head size.
    auto, head = ((AutoModelForSequenceClassification, {"config": model.config}) if _is_classifier(model)
                  else (AutoModelForCausalLM, {}))
    quantized = auto.from_pretrained(source, quantization_config=bnb, dtype=compute,
                                     device_map={"": torch.cuda.current_device()}, **head)
    quantized = prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False)
    return apply_lora(quantized, cfg)


def apply_virtual_tokens(model, cfg):
    """Prefix tuning (method=prefix: trained key/value prefixes in every layer) or prompt tuning (method=prompt:
    trained input embeddings); both prepend `cfg.num_virtual_tokens` virtual tokens and leave the base frozen."""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    if cfg.method == "prefix":
        _check_prefix_attention(model)
        peft_cfg = PrefixTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type=_task_type(model))
    else:
        peft_cfg = PromptTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type=_task_type(model))
    return get_peft_model(model, peft_cfg)


def _check_prefix_attention(model) -> None:
    c = model.config
    # Prefix tuning stores one key/value shape per layer; multi-head latent attention (DeepSeek-V2/V3) uses
    # keys and values of different widths, which peft's prefix cache cannot hold.
    if getattr(c, "kv_lora_rank", None) or getattr(c, "qk_rope_head_dim", None):
        raise TailorError(f"prefix tuning does not support {c.model_type}'s multi-head latent attention "
                          "(keys and values have different widths)", where="adapter.method",
                          fix="use adapter.method=prompt, lora or ia3 for this model")


# MLP output projections: IA3 scales their input (the feed-forward activations) rather than their output.
_FEEDFORWARD = ("down_proj", "fc2", "w2", "dense_4h_to_h", "c_proj")


def apply_ia3(model, cfg):
    """IA3: learned per-channel scales on the targeted linear layers (all-linear by default)."""
    from peft import IA3Config, get_peft_model

    targets = cfg.target_modules
    _check_targets(model, targets)
    if targets == "all-linear":
        # Resolved to short names here: peft would expand all-linear into full paths, and the saved config
        # (short feed-forward names beside full target paths) then fails its own subset check on reload.
        head = _head(model)
        head_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head}
        targets = sorted(_linear_names(model) - head_names)
    feedforward = sorted(n for n in targets if n in _FEEDFORWARD)
    ia3 = IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type=_task_type(model))
    peft_model = get_peft_model(model, ia3)
    log.info("IA3 targets %s (feed-forward: %s)", sorted(peft_model.peft_config["default"].target_modules), feedforward)
    return peft_model


def _linear_names(model) -> set[str]:
    import torch

    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


_LAYER = re.compile(r"\.layers\.(\d+)\.")


def apply_freeze(model, cfg):
    """Train only the last `freeze_last_n` blocks plus the final norm and the output head."""
    n_layers = model.config.num_hidden_layers
    if cfg.freeze_last_n > n_layers:
        raise TailorError(f"adapter.freeze_last_n={cfg.freeze_last_n} but the model has {n_layers} layers",
                          where="adapter.freeze_last_n", fix=f"use a value from 0 to {n_layers}")
    first = n_layers - cfg.freeze_last_n
    head = _head(model)
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    # A classifier has no LM head, so a tied-embeddings config does not make its embeddings part of the head.
    tied = getattr(model.config, "tie_word_embeddings", False) and not _is_classifier(model)
    for name, p in model.named_parameters():
        m = _LAYER.search(name)
        if m:
            train = int(m.group(1)) >= first
        else:
            # Final norm and head train; with tied embeddings the head *is* the embedding, so it trains too.
            train = id(p) in head_params or name.endswith("norm.weight") and ".layers." not in name
            train = train or (tied and "embed" in name)
        p.requires_grad_(train)
    return model
