"""What trains: full fine-tuning, a peft method (LoRA, DoRA, QLoRA, prefix, prompt, IA3), or the last blocks only.

Methods are chosen by name through `METHODS`; each takes (model, AdapterConfig) and returns the
model to train.
"""

from __future__ import annotations

from typing import Callable

from tailor.adapters.methods import apply_freeze, apply_full, apply_ia3, apply_lora, apply_qlora, apply_virtual_tokens

METHODS: dict[str, Callable] = {"full": apply_full, "lora": apply_lora, "dora": apply_lora, "qlora": apply_qlora,
                                "prefix": apply_virtual_tokens, "prompt": apply_virtual_tokens, "ia3": apply_ia3,
                                "freeze": apply_freeze}
# Methods whose result is a peft adapter directory (saved small, loaded onto the base) rather than a full model.
PEFT_METHODS = frozenset({"lora", "dora", "qlora", "prefix", "prompt", "ia3"})


def apply_adapter(model, cfg):
    """Prepare `model` for training with the method named by `cfg.method` (a vision-language model: on its
    language model, the vision tower and projector as adapter.vision_tower / adapter.projector say)."""
    from tailor.models.vision import is_vision_model

    if is_vision_model(model):
        from tailor.adapters.vision import apply_vision

        return apply_vision(model, cfg)
    return METHODS[cfg.method](model, cfg)


def is_peft_method(method: str) -> bool:
    """True when `method` trains a peft adapter (final/ holds adapter weights that point at the base model)."""
    return method in PEFT_METHODS
