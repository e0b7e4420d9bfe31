"""Hugging Face directory export: merged weights in safetensors, tokenizer, chat template, generation config."""

from __future__ import annotations

from pathlib import Path

from tailor.export.common import load_for_export, save_tokenizer_and_config, stored_dtype, write_manifest


def export_safetensors(model_path: str | Path, out_dir: str | Path) -> Path:
    """Write a standalone HF checkpoint that loads with plain `AutoModelForCausalLM.from_pretrained(out_dir)`.

    An adapter directory is merged into its base first. Weights go back to the dtype the checkpoint
    was stored in (merging happens in float32), so a bf16 model stays bf16 on disk.
    """
    model, tokenizer = load_for_export(model_path)
    model.to(stored_dtype(model_path))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer_and_config(model, tokenizer, out)
    model.save_pretrained(out, safe_serialization=True)
    write_manifest(out, format="safetensors", source=str(Path(model_path).resolve()),
                   dtype=str(model.dtype).removeprefix("torch."))
    return out
