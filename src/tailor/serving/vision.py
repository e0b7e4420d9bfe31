"""Answers from a vision-language model about images: what `tailor chat --image FILE` and `tailor serve` run.

The prompt goes through the same code as training (`tailor.data.images.prompt_inputs`: the chat template, each
image's tokens as its processor counts them, pixels by its image processor); images are local files or data: URLs
(remote URLs are refused: nothing is downloaded), checked for size like training images. The server takes only
data: URLs (it reads no files a client names), within serve.max_images / max_image_bytes / max_image_pixels, and
queues the prompt's token ids with its pixel values on the batched engine (`vision_prompt`).
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


def check_placeholders(messages: list[dict], images: int) -> None:
    """One <image> placeholder per image (a literal "<image>" in the text counts as one)."""
    from tailor.data.images import count_placeholders

    if count_placeholders(messages) != images:
        raise TailorError(f"{count_placeholders(messages)} <image> placeholders for {images} images",
                          where="messages", fix="put one <image> in the prompt per image, or none to put them first "
                                                "(the server places one per image_url part)")


def vision_answer(model, processor, messages: list[dict], images: list[str], max_new_tokens: int = 128,
                  sample: bool = False) -> str:
    """The model's answer to `messages` about `images` (greedy unless `sample`)."""
    import torch

    from tailor.data.images import ImageError, prompt_inputs

    refs = [i if i.startswith(("data:", "http://", "https://")) else str(Path(i).expanduser().resolve()) for i in images]
    check_placeholders(messages, len(refs))
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


# ---------------------------------------------------------------------------------------------
# Serving


def load_vision_for_serving(model_dir: str | Path, cfg, base: str | Path | None = None):
    """(model, processor) for `tailor serve`: a vision-language checkpoint, or an adapter folded into its base, with
    serve.model's dtype and trust_remote_code, serve.device and serve.chat_template. Refused clearly: LoRA adapters
    by name (one vision model per server), serve.engine=vllm, and models whose rotary positions follow the image
    grid (Qwen2-VL's M-RoPE; the batched engine counts positions token by token)."""
    from tailor.adapters.loading import adapter_base
    from tailor.adapters.vision import is_vision_adapter
    from tailor.models.loading import resolve_device
    from tailor.models.vision import load_vision_model

    if cfg.adapters:
        raise TailorError("serve.adapters (--adapter NAME=DIR) are not supported for a vision-language model",
                          where="serve.adapters / --adapter",
                          fix="serve the adapter directory itself as MODEL_DIR, or merge it (tailor merge) first")
    if cfg.engine == "vllm":
        raise TailorError("serve.engine=vllm does not serve tailor's vision-language models", where="serve.engine",
                          fix="use engine=auto or engine=tailor (the built-in batched engine takes images)")
    adapter = Path(model_dir) if is_vision_adapter(model_dir, base) else None
    base_dir = Path(base or adapter_base(adapter)) if adapter else Path(model_dir)
    model, processor = load_vision_model(base_dir, cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    if "mm_token_type_ids" in getattr(processor, "model_input_names", []):
        raise TailorError(f"{base_dir}: its rotary positions follow the image grid (Qwen2-VL-style M-RoPE), which the "
                          "batched engine does not compute", where="tailor serve",
                          fix="answer about images with `tailor chat MODEL --image FILE` or `tailor eval`")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()  # the base name serves base + adapter
    if cfg.chat_template:
        from tailor.data.templates import set_chat_template

        set_chat_template(processor.tokenizer, cfg.chat_template)
    return model.to(resolve_device(cfg.device)).eval(), processor


def request_images(messages) -> list[tuple[str, str]]:
    """(field, url) of every image_url part of a chat request's messages, in prompt order."""
    return [(f"messages[{i}].content[{j}].image_url.url", part.image_url.url)
            for i, m in enumerate(messages) if isinstance(m.content, list)
            for j, part in enumerate(m.content) if part.type == "image_url"]


def load_request_images(parts: list[tuple[str, str]], cfg) -> list:
    """The request's images as PIL images, checked against the serve limits; BadRequest naming the field."""
    from tailor.data.images import ImageError, load_image
    from tailor.serving.structured import BadRequest

    if len(parts) > cfg.max_images:
        raise BadRequest(f"the messages hold {len(parts)} images; this server accepts at most {cfg.max_images} per "
                         "request (serve.max_images)", "messages")
    images = []
    for field, url in parts:
        if url.startswith(("http://", "https://")):
            raise BadRequest(f"{field}: remote image URLs are not fetched (the server works offline); send the image "
                             "inline as a data:image/png;base64,... URL", field)
        if not url.startswith("data:"):
            raise BadRequest(f"{field}: the server takes images only as data:image/...;base64 URLs (it reads no "
                             "files a request names)", field)
        try:
            images.append(load_image(url, cfg.max_image_bytes, cfg.max_image_pixels))
        except ImageError as e:
            limit = {"oversized image": " (serve.max_image_bytes / serve.max_image_pixels)"}.get(e.reason, "")
            raise BadRequest(f"{field}: {e.reason}{limit}: {e.fix}", field) from None
    return images


def vision_prompt(processor, messages: list[dict], images: list) -> tuple[list[int], dict]:
    """(prompt token ids, image inputs for the engine's prefill) of canonical messages with their images."""
    from tailor.data.images import prompt_inputs

    check_placeholders(messages, len(images))
    inputs = prompt_inputs(processor, messages, images)
    ids = inputs.pop("input_ids")[0].tolist()
    inputs.pop("attention_mask")
    return ids, inputs
