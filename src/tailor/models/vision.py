"""Vision-language models: tiny DeepSeek-VL presets built from config, and any local image-text-to-text checkpoint.

A preset here is transformers' own `DeepseekVLForConditionalGeneration` (a SigLIP vision tower, the two-layer
MLP aligner as projector, a Llama language model) sized from the tailor language presets, with its
`DeepseekVLProcessor` (image processor + the run's tokenizer with an image token added). Saved with
`save_pretrained`, the folder loads with plain `AutoModelForImageTextToText` / `AutoProcessor`.
`load_vision_model` loads any such local checkpoint (DeepSeek-VL, LLaVA, Qwen2-VL, ...) with its processor.
`vision_parts` names the three parts a recipe freezes or trains: vision tower, projector, language model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tailor.errors import TailorError

IMAGE_TOKEN = "<image_placeholder>"  # DeepSeek-VL's own image token

# Vision towers sized for a CPU: a 64x64 image in 8x8 patches is 64 image tokens. Measured on the inspection demo's
# images (supervised 5-way probe, 600 steps of 32): 8x8 patches, width 64, 2 layers reached 87% on held-out images
# where 16x16 patches at width 128, 3 layers reached 57%.
_SIGLIP_MICRO = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                     patch_size=8)
_SIGLIP_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                    patch_size=8)
# preset -> (tailor language preset, its overrides, vision tower)
VISION_PRESETS = {
    "deepseek-vl-micro": ("llama-micro", {}, _SIGLIP_MICRO),
    "deepseek-vl-tiny": ("llama-tiny", {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2}, _SIGLIP_TINY),
}

# Module names of the parts, per family: (vision tower, projector) under the model's `model` attribute.
_TOWERS = ("vision_model", "vision_tower", "visual")
_PROJECTORS = ("aligner", "multi_modal_projector", "visual.merger", "mm_projector")


def is_vision_preset(name: str | None) -> bool:
    return bool(name) and name in VISION_PRESETS


def is_vision_model_dir(path) -> bool:
    """True for a local checkpoint whose config has a vision tower (an image-text-to-text model)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    raw = json.loads(cfg.read_text(encoding="utf-8"))
    return "vision_config" in raw


def is_vision_model(model) -> bool:
    """True for a vision-language model (or a peft wrapper of one)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "vision_config", None) is not None


def add_image_token(tokenizer, token: str = IMAGE_TOKEN):
    """The tokenizer with `token` added as a special token and named its `image_token` (saved with it)."""
    if token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [token]}, replace_extra_special_tokens=False)
    tokenizer._set_model_specific_special_tokens({"image_token": token})
    return tokenizer


def build_vision_config(preset: str, tokenizer, **text_overrides):
    """The DeepseekVLConfig of a vision preset, its language model sized from tailor's language preset."""
    from transformers import DeepseekVLConfig

    from tailor.models.presets import build_config

    if preset not in VISION_PRESETS:
        raise TailorError(f"unknown vision preset '{preset}'", where="model.preset",
                          fix=f"valid vision presets: {', '.join(VISION_PRESETS)}")
    text_preset, text_defaults, vision = VISION_PRESETS[preset]
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
    text = build_config(text_preset, len(tokenizer), **{**ids, **text_defaults, **text_overrides}).to_dict()
    return DeepseekVLConfig(text_config=text, vision_config={"model_type": "siglip_vision_model", **vision},
                            image_token_id=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
                            tie_word_embeddings=False)


def init_vision_model(preset: str, tokenizer, out_dir: str | Path | None = None, seed: int = 0, **text_overrides):
    """(model, processor): a freshly initialised float32 DeepSeek-VL model of `preset` and its processor;
    with `out_dir`, both saved there as a checkpoint `AutoModelForImageTextToText` / `AutoProcessor` load."""
    import torch
    from transformers import (DeepseekVLForConditionalGeneration, DeepseekVLImageProcessorPil, DeepseekVLProcessor,
                              GenerationConfig)

    add_image_token(tokenizer)
    config = build_vision_config(preset, tokenizer, **text_overrides)
    size = config.vision_config.image_size
    patches = (size // config.vision_config.patch_size) ** 2
    # The PIL image processor: same numbers as the torchvision one, without needing torchvision.
    processor = DeepseekVLProcessor(DeepseekVLImageProcessorPil(size={"height": size, "width": size}),
                                    tokenizer, num_image_tokens=patches)
    torch.manual_seed(seed)
    model = DeepseekVLForConditionalGeneration(config).float()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=config.text_config.pad_token_id)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
    return model, processor


def load_processor(path, trust_remote_code: bool = False):
    """The checkpoint's own processor (image processor + tokenizer), refused clearly when it has none."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise TailorError(f"cannot load the image processor of {path}: {exc}", where="model.path",
                          fix="the folder needs the processor's files (preprocessor_config.json, tokenizer files) as "
                              "save_pretrained writes them; Qwen2-VL's processor also needs torchvision") from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "image_token"):
        raise TailorError(f"{path} has no image processor with an image token", where="model.path",
                          fix="point model.path at a vision-language checkpoint")
    return processor


def load_vision_model(path, dtype: str = "auto", for_training: bool = False, trust_remote_code: bool = False):
    """(model, processor) of a local image-text-to-text checkpoint, as `AutoModelForImageTextToText` returns it."""
    import torch
    from transformers import AutoModelForImageTextToText

    from tailor.models.loading import resolve_dtype

    p = Path(path)
    if not is_vision_model_dir(p):
        raise TailorError(f"{p} is not a vision-language checkpoint (no vision_config in config.json)",
                          where="model.path", fix="point model.path at a model folder with a vision tower")
    processor = load_processor(p, trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(
        str(p), dtype=resolve_dtype(dtype, torch.device("cpu"), for_training), trust_remote_code=trust_remote_code)
    return model, processor


def _find(root, names: tuple[str, ...]) -> str | None:
    modules = dict(root.named_modules())
    for name in names:
        for prefix in ("model.", ""):
            if prefix + name in modules:
                return prefix + name
    return None


def vision_parts(model) -> dict[str, str | None]:
    """Module paths of {"tower", "projector", "language"} in `model` (the base model under a peft wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parts = {"tower": _find(base, _TOWERS), "projector": _find(base, _PROJECTORS),
             "language": _find(base, ("language_model",))}
    if parts["tower"] is None or parts["language"] is None:
        raise TailorError(f"cannot find the vision tower and language model of {type(base).__name__}",
                          fix="tailor knows DeepSeek-VL, LLaVA and Qwen2-VL module names; open an issue for this family")
    return parts
