"""What trains: full fine-tuning, LoRA through peft, or freezing all but the last blocks.

Methods are chosen by name through `METHODS`; each takes (model, AdapterConfig) and returns the
model to train.
"""

from __future__ import annotations

from typing import Callable

from tailor.adapters.methods import apply_freeze, apply_full, apply_lora

METHODS: dict[str, Callable] = {"full": apply_full, "lora": apply_lora, "freeze": apply_freeze}


def apply_adapter(model, cfg):
    """Prepare `model` for training with the method named by `cfg.method`."""
    return METHODS[cfg.method](model, cfg)
