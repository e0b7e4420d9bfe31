"""What trains in a vision-language model: the language model (full or LoRA), the vision tower, the projector.

`adapter.method` applies to the language model: full trains all its weights, lora/dora wrap its linear layers
only (never the vision tower's). `adapter.vision_tower` and `adapter.projector` say whether those parts train
(in full); with LoRA, peft saves the trained parts beside the adapter (`modules_to_save`), so the adapter folder
alone restores the tuned model and merging gives the same logits.
"""

from __future__ import annotations

import logging

import torch

from tailor.errors import TailorError
from tailor.models.vision import vision_parts

log = logging.getLogger("tailor")


def _linear_names(model, language: str) -> list[str]:
    """Leaf names of the language model's linear layers (its output head excluded)."""
    lm = model.get_submodule(language)
    return sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear) and n})


def apply_vision(model, cfg):
    """Prepare a vision-language `model` for training as `cfg` (AdapterConfig) says."""
    parts = vision_parts(model)
    trained = [parts["tower"]] if cfg.vision_tower == "train" else []
    if cfg.projector == "train" and parts["projector"]:
        trained.append(parts["projector"])
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        for part, setting in ((parts["tower"], cfg.vision_tower), (parts["projector"], cfg.projector)):
            if part and setting == "frozen":
                for p in model.get_submodule(part).parameters():
                    p.requires_grad_(False)
        return model
    if cfg.method not in ("lora", "dora"):
        raise TailorError(f"adapter.method={cfg.method} is not supported for vision-language models",
                          where="adapter.method", fix="use lora, dora or full")
    from peft import LoraConfig, get_peft_model

    names = cfg.target_modules if cfg.target_modules != "all-linear" else _linear_names(model, parts["language"])
    # A regex on the full module path keeps LoRA inside the language model (the vision tower has q/k/v too).
    targets = rf"^{parts['language']}\..*\.({'|'.join(names)})$"
    for part in trained:
        if part.startswith(parts["tower"] + ".") and parts["tower"] in trained:
            trained.remove(part)  # Qwen2-VL's merger is inside its tower
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      modules_to_save=trained or None, bias="none", use_dora=cfg.method == "dora",
                      use_rslora=cfg.rslora)
    peft_model = get_peft_model(model, lora)
    log.info("LoRA on the language model's %s; trained in full: %s", names, trained or "nothing else")
    return peft_model


def _adapter_base(adapter_dir, base=None):
    from pathlib import Path

    from tailor.adapters.loading import adapter_base

    return Path(base or adapter_base(adapter_dir))


def is_vision_adapter(adapter_dir, base=None) -> bool:
    """True for a peft adapter directory whose base model is a vision-language checkpoint."""
    from tailor.adapters.loading import is_adapter_dir
    from tailor.models.vision import is_vision_model_dir

    return is_adapter_dir(adapter_dir) and is_vision_model_dir(_adapter_base(adapter_dir, base))


def load_vision_with_adapter(adapter_dir, base=None, dtype: str = "auto"):
    """(PeftModel, processor): the adapter on its vision-language base (the trained vision parts restored with it)."""
    from peft import PeftModel

    from tailor.models.vision import load_vision_model

    model, processor = load_vision_model(_adapter_base(adapter_dir, base), dtype)
    return PeftModel.from_pretrained(model, str(adapter_dir)).eval(), processor
