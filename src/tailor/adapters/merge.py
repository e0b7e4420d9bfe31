"""Fold a trained adapter into its base model and save a standalone model directory."""

from __future__ import annotations

import json
from pathlib import Path

from tailor.adapters.loading import is_adapter_dir, load_with_adapter, tokenizer_dir
from tailor.errors import TailorError


# peft types whose weights fold into the base linear layers (DoRA is LoRA with use_dora; QLoRA saves a LoRA adapter).
MERGEABLE = frozenset({"LORA", "IA3"})


def merge(adapter_dir: str | Path, out_dir: str | Path, base: str | Path | None = None, dtype: str = "auto") -> Path:
    """Merge LoRA/DoRA/QLoRA/IA3 weights into the base and save safetensors + tokenizer + generation config to out_dir.

    Prefix and prompt tuning add virtual tokens rather than weight deltas, so they cannot be merged.
    """
    if is_adapter_dir(adapter_dir):
        peft_type = json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("peft_type")
        if peft_type and peft_type not in MERGEABLE:
            raise TailorError(f"a {peft_type} adapter cannot be merged: it adds virtual tokens, not weight changes",
                              where=str(Path(adapter_dir) / "adapter_config.json"),
                              fix="use the adapter directory as it is (tailor eval/chat load it onto the base), "
                                  "or train with adapter.method=lora, dora or ia3 to get a mergeable adapter")
    from tailor.adapters.vision import is_vision_adapter, load_vision_with_adapter
    from tailor.models.loading import is_sequence_classifier, load_classifier, load_tokenizer

    if is_vision_adapter(adapter_dir, base):
        # The processor (image processor + tokenizer) is saved with it: AutoModelForImageTextToText and
        # AutoProcessor load the merged folder.
        model, tokenizer = load_vision_with_adapter(adapter_dir, base, dtype=dtype)
    elif is_sequence_classifier(adapter_dir) and is_adapter_dir(adapter_dir):
        # The head (peft modules_to_save) and the label map come with the classifier loader; the merged
        # directory is then a plain AutoModelForSequenceClassification checkpoint.
        model = load_classifier(adapter_dir, base, dtype=dtype)
        tokenizer = load_tokenizer(tokenizer_dir(adapter_dir, base))
    else:
        model, tokenizer = load_with_adapter(adapter_dir, base, dtype=dtype)
    merged = model.merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
