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


def apply_lora(model, cfg):
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules
    if targets != "all-linear":
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            raise TailorError(f"adapter.target_modules names modules this model does not have: {missing}",
                              where="adapter.target_modules",
                              fix=f"use all-linear or names from: {sorted(_linear_names(model))}")
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        if "does not work with lora_dropout" in str(exc):
            # peft maps MLP targets of transformers-v5 MoE models (DeepSeek-V3, Mixtral, Qwen-MoE) onto the fused
            # 3-D expert weights, and its wrapper for those has no dropout.
            raise TailorError("LoRA on this model's fused mixture-of-experts weights does not support dropout",
                              where="adapter.dropout", fix="set adapter.dropout=0") from None
        raise
    cfg_used = peft_model.peft_config["default"]
    log.info("LoRA targets modules %s and parameters %s", sorted(cfg_used.target_modules or []),
             sorted(cfg_used.target_parameters or []))
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
    head = model.get_output_embeddings()
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    tied = getattr(model.config, "tie_word_embeddings", False)
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
