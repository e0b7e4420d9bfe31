"""Answers from a vision-language model about images: what `tailor chat --image FILE` runs.

The prompt goes through the same code as training (`tailor.data.images.prompt_inputs`: the chat template, each
image's tokens as its processor counts them, pixels by its image processor); images are local files or data: URLs
(remote URLs are refused: nothing is downloaded), checked for size like training images.
"""

from __future__ import annotations

from pathlib import Path

from tailor.errors import TailorError


def is_vision_target(model_dir: str | Path | None, adapter: str | Path | None = None) -> bool:
    """True when `model_dir` (or the adapter's base) is a vision-language model."""
    from tailor.adapters.vision import is_vision_adapter
    from tailor.models.vision import is_vision_model_dir

    if not model_dir:
        return False
    return is_vision_model_dir(model_dir) or is_vision_adapter(model_dir) or bool(adapter and is_vision_adapter(adapter, model_dir))


def load_vision_chat(model_dir: str | Path, adapter: str | Path | None = None):
    """(model, processor) in eval mode: a vision-language checkpoint, an adapter directory, or a checkpoint + adapter."""
    from tailor.adapters.vision import is_vision_adapter, load_vision_with_adapter
    from tailor.models.vision import load_vision_model

    if adapter:
        return load_vision_with_adapter(adapter, base=model_dir)
    if is_vision_adapter(model_dir):
        return load_vision_with_adapter(model_dir)
    model, processor = load_vision_model(model_dir)
    return model.eval(), processor


def image_messages(prompt: str, images: list[str], system: str | None = None) -> list[dict]:
    """A one-turn conversation: the images' placeholders, then the prompt (unless it places them itself)."""
    from tailor.data.images import PLACEHOLDER

    content = prompt if PLACEHOLDER in prompt else PLACEHOLDER * len(images) + prompt
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]


def vision_answer(model, processor, messages: list[dict], images: list[str], max_new_tokens: int = 128,
                  sample: bool = False) -> str:
    """The model's answer to `messages` about `images` (greedy unless `sample`)."""
    import torch

    from tailor.data.images import ImageError, count_placeholders, prompt_inputs

    refs = [i if i.startswith(("data:", "http://", "https://")) else str(Path(i).expanduser().resolve()) for i in images]
    if count_placeholders(messages) != len(refs):
        raise TailorError(f"{count_placeholders(messages)} <image> placeholders for {len(refs)} images",
                          where="messages", fix="put one <image> in the prompt per image, or none to put them first")
    try:
        inputs = prompt_inputs(processor, messages, refs)
    except ImageError as e:
        raise TailorError(f"{e.reason}: {e.image}", where="--image", fix=e.fix) from None
    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=sample, max_new_tokens=max_new_tokens, pad_token_id=pad)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def vision_chat(model_dir, adapter, prompt: str | None, images: list[str], system: str | None = None,
                max_new_tokens: int = 128, sample: bool = False) -> str:
    """`tailor chat MODEL --image FILE --prompt TEXT`: load, answer once."""
    if prompt is None:
        raise TailorError("chat with a vision-language model answers one --prompt", where="tailor chat",
                          fix='tailor chat MODEL --image part.png --prompt "Is this part defective?"')
    model, processor = load_vision_chat(model_dir, adapter)
    return vision_answer(model, processor, image_messages(prompt, images, system), images, max_new_tokens, sample)
