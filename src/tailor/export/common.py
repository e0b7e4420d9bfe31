"""What every export format shares: load MODEL (a model or an adapter directory) and copy its tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tailor.errors import TailorError

_STORED_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_for_export(model_path: str | Path):
    """(model, tokenizer) in float32 on CPU, eval mode; an adapter directory is merged into its base.

    float32 because the exported graphs must reproduce PyTorch's greedy tokens, and merging LoRA
    deltas in full precision loses nothing before a format casts down (f16, q8_0). No runtime speed-up is
    installed (tailor.runtime.enable is never called here): a traced graph holds transformers' own code.
    """
    from tailor.adapters.loading import is_adapter_dir, load_causal_lm, load_with_adapter
    from tailor.models.loading import is_model_dir, load_tokenizer

    path = Path(model_path)
    if not path.exists():
        raise TailorError(f"model not found: {path}", where=str(path), fix="pass a model directory or an adapter directory")
    if is_adapter_dir(path):
        model, tokenizer = load_with_adapter(path, dtype="float32")
        model = model.merge_and_unload()
    elif is_model_dir(path):
        model, tokenizer = load_causal_lm(path, dtype="float32", device="cpu"), load_tokenizer(path)
    else:
        raise TailorError(
            f"{path} is neither a model directory (config.json) nor an adapter directory (adapter_config.json)",
            where=str(path),
            fix="pass a directory saved by `tailor train`, `tailor merge` or `tailor model init`",
        )
    model.to("cpu").eval()
    return model, tokenizer


def stored_dtype(model_path: str | Path) -> torch.dtype:
    """The dtype the checkpoint (or an adapter's base) was saved in; float32 when it does not say."""
    from tailor.adapters.loading import adapter_base, is_adapter_dir

    path = Path(model_path)
    if is_adapter_dir(path):
        path = Path(adapter_base(path))
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return torch.float32
    return _STORED_DTYPES.get(str(raw.get("dtype") or raw.get("torch_dtype")), torch.float32)


def special_ids(tokenizer) -> dict:
    """bos/eos/pad ids for generation configs and file metadata (pad falls back to eos, as in training)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": pad}


def save_tokenizer_and_config(model, tokenizer, out: Path) -> None:
    """Tokenizer (with its chat template), model config and a generation config next to an exported graph."""
    from transformers import GenerationConfig

    tokenizer.save_pretrained(out)
    model.config.save_pretrained(out)
    gen = model.generation_config if model.generation_config is not None else GenerationConfig()
    gen.update(**{k: v for k, v in special_ids(tokenizer).items() if v is not None})
    model.generation_config = gen  # so a later model.save_pretrained writes the same ids
    gen.save_pretrained(out)


def write_manifest(out: Path, **info) -> Path:
    """export.json: what was exported, how, and from where (read by people and by the runtimes here)."""
    path = out / "export.json"
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
