"""Fold a trained adapter into its base model and save a standalone model directory."""

from __future__ import annotations

import json
from pathlib import Path

from tailor.errors import TailorError


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model directory recorded in an adapter's config."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    return cfg.get("base_model_name_or_path") or ""


def tokenizer_dir(adapter_dir: str | Path, base: str | Path | None = None) -> Path:
    """Where an adapter's tokenizer is: the adapter directory when training saved one there, else the base
    (`base`, or the base recorded in the adapter's config)."""
    adapter_dir = Path(adapter_dir)
    if any((adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return adapter_dir
    return Path(base or adapter_base(adapter_dir))


def load_with_adapter(adapter_dir: str | Path, base: str | Path | None = None, dtype: str = "auto",
                      trust_remote_code: bool = False, allow_classifier: bool = False):
    """Base model with the adapter attached (not merged) and the adapter's tokenizer when it has one.

    A classifier adapter (peft task_type SEQ_CLS) is refused unless `allow_classifier`: loaded onto the
    causal LM it would silently lose its trained head.
    """
    from peft import PeftModel

    from tailor.models.loading import is_sequence_classifier, load_model, load_tokenizer

    adapter_dir = Path(adapter_dir)
    if not is_adapter_dir(adapter_dir):
        raise TailorError(f"not an adapter directory (no adapter_config.json): {adapter_dir}",
                          fix="pass the final/ folder of a training run with a peft adapter.method (lora, dora, qlora, prefix, prompt, ia3)")
    if is_sequence_classifier(adapter_dir) and not allow_classifier:
        raise TailorError(f"{adapter_dir} is a sequence-classification adapter: it predicts labels, it does not generate text",
                          where=str(adapter_dir / "adapter_config.json"),
                          fix="score it with `tailor eval MODEL --task classification`, or fold it in with `tailor merge`")
    base = Path(base or adapter_base(adapter_dir))
    if not base.is_dir():
        raise TailorError(f"the adapter's base model is not on disk: {base}", where=str(adapter_dir / "adapter_config.json"),
                          fix="pass --base DIR with the base model directory")
    model = load_model(base, dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(tokenizer_dir(adapter_dir, base), trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(model, str(adapter_dir)), tokenizer


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
    from tailor.models.loading import is_sequence_classifier, load_classifier, load_tokenizer

    if is_sequence_classifier(adapter_dir) and is_adapter_dir(adapter_dir):
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
