"""Load whatever a tailor command is pointed at: a model, a tailor-quantized model, an adapter (on its base or a
given one) or a sequence classifier (or an adapter trained on one): `load_any(path, adapter=None)`.

This is the earliest stage that knows all four kinds (models/ loads checkpoints untouched, runtime/ rebuilds
quantized layers, adapters/ attaches peft adapters). Nothing here installs a speed-up: inference paths call
`tailor.runtime.enable(model)` themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

from tailor.errors import TailorError


def is_adapter_dir(path: str | Path) -> bool:
    """True when `path` holds a peft adapter (adapter_config.json)."""
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


def load_causal_lm(path: str | Path, dtype: str = "auto", trust_remote_code: bool = False, device: str | None = None):
    """A causal LM from a model directory, float (`models.loading.load_model`, untouched) or quantized by
    `tailor quantize` (`runtime.quantized.load_quantized`), in eval mode."""
    from tailor.models.loading import load_model, resolve_device, resolve_dtype, tailor_quantized

    if not tailor_quantized(path):
        return load_model(path, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
    from transformers import AutoConfig

    from tailor.runtime.quantized import load_quantized, read_manifest

    p = Path(path)
    manifest = read_manifest(p)
    target = resolve_device(device)
    if device in (None, "", "auto") and manifest["method"] == "int8-dynamic" and target.type != "cpu":
        target = resolve_device("cpu")  # its kernels are CPU-only; an explicit GPU request still errors
    torch_dtype = resolve_dtype(dtype, target)  # auto: float32 on the CPU, not a GPU's bf16
    config = AutoConfig.from_pretrained(p, trust_remote_code=trust_remote_code, local_files_only=True)
    model = load_quantized(p, manifest, config, torch_dtype, target)
    return model.train(False)


def load_with_adapter(adapter_dir: str | Path, base: str | Path | None = None, dtype: str = "auto",
                      trust_remote_code: bool = False, allow_classifier: bool = False, device: str | None = None):
    """Base model with the adapter attached (not merged) and the adapter's tokenizer when it has one.

    A classifier adapter (peft task_type SEQ_CLS) is refused unless `allow_classifier`: loaded onto the
    causal LM it would silently lose its trained head.
    """
    from peft import PeftModel

    from tailor.models.loading import is_sequence_classifier, load_tokenizer

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
    model = load_causal_lm(base, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
    tokenizer = load_tokenizer(tokenizer_dir(adapter_dir, base), trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(model, str(adapter_dir)), tokenizer


def load_any(model_dir: str | Path, adapter: str | Path | None = None, dtype: str = "auto",
             trust_remote_code: bool = False, device: str | None = None):
    """(model, tokenizer) for a model dir (float or tailor-quantized), an adapter dir, or a base plus an adapter; a
    sequence classifier (or an adapter trained on one) loads as AutoModelForSequenceClassification. Eval mode, no
    speed-ups installed."""
    from tailor.models.loading import is_sequence_classifier, load_classifier, load_tokenizer

    head = adapter or model_dir
    if is_sequence_classifier(head):
        model = load_classifier(head, base=model_dir if adapter else None, dtype=dtype,
                                trust_remote_code=trust_remote_code, device=device)
        tok_dir = tokenizer_dir(head, model_dir if adapter else None) if is_adapter_dir(head) else head
        return model, load_tokenizer(tok_dir, trust_remote_code=trust_remote_code)
    if adapter or is_adapter_dir(model_dir):
        return load_with_adapter(head, base=model_dir if adapter else None, dtype=dtype,
                                 trust_remote_code=trust_remote_code, device=device)
    model = load_causal_lm(model_dir, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
    return model, load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
