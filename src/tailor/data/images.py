"""Images in the data: references checked at load time, tokens placed by the model's own processor, pixels per batch.

A multimodal record is a chat record with an `images` list; each `<image>` placeholder in its messages stands for
the next image, in order (LLaMA-Factory's convention). OpenAI content parts (`{"type": "image_url", "image_url":
{"url": "data:..." | path}}`) become the same placeholders and list (`tailor.data.formats`). An image reference
is an absolute file path (relative paths are resolved against the data file's folder at load time) or a
`data:image/...;base64,` URL. Remote URLs are refused: nothing is downloaded.

`check_images` runs on every loaded row: placeholder count = image count, every file present, readable and within
MAX_IMAGE_BYTES / MAX_IMAGE_PIXELS; a failing row raises or is counted with its reason like any malformed row.
`encode_multimodal` turns a record into tokens: the conversation through the chat template (the ONE path,
`tailor.data.templates`), each placeholder replaced by the processor's image token repeated as many times as the
processor says that image takes (loss never on image tokens). `VisionCollator` pads a batch and runs the
processor's image processor on its images (pixel_values, and image_grid_thw for Qwen2-VL).
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path

PLACEHOLDER = "<image>"
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # per image file or data URL
MAX_IMAGE_PIXELS = 4096 * 4096      # width x height
IGNORE = -100
NO_PROCESSOR = "images in a row, but the model has no image processor (a text-only model)"
IMAGE_TOKENS_CUT = "image tokens cut by data.max_length"


class ImageError(Exception):
    """A row whose images cannot be used: a short stable reason and the image at fault."""

    def __init__(self, reason: str, image: str, fix: str):
        super().__init__(reason)
        self.reason, self.image, self.fix = reason, image, fix


def _decode_data_url(url: str) -> bytes:
    head, _, payload = url.partition(",")
    if not head.startswith("data:image/") or ";base64" not in head:
        raise ImageError("unreadable image", url[:40], "a data URL must look like data:image/png;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("unreadable image", url[:40], "the data URL's base64 payload is corrupt") from None


def image_bytes(ref: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The encoded bytes of an image reference (a file path or a data: URL); ImageError when absent or over
    `max_bytes`."""
    if ref.startswith("data:"):
        data = _decode_data_url(ref)
    elif ref.startswith(("http://", "https://")):
        raise ImageError("remote image URL", ref, "tailor works offline: download the image and give its path, "
                                                  "or send it inline as a data:image/...;base64 URL")
    else:
        p = Path(ref)
        if not p.is_file():
            raise ImageError("image file not found", ref, f"put the image at {ref}, or fix the path (relative paths "
                                                          "are read from the data file's folder)")
        if p.stat().st_size > max_bytes:
            raise ImageError("oversized image", ref, f"images may be at most {max_bytes:,} bytes; shrink it")
        data = p.read_bytes()
    if len(data) > max_bytes:
        raise ImageError("oversized image", ref[:60], f"images may be at most {max_bytes:,} bytes "
                                                      f"({len(data):,} given); shrink it")
    return data


def load_image(ref: str, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS):
    """The image as an RGB PIL image (checked for size before decoding its pixels)."""
    from PIL import Image, UnidentifiedImageError

    data = image_bytes(ref, max_bytes)
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels:
            raise ImageError("oversized image", ref[:60], f"images may have at most {max_pixels:,} pixels "
                                                          f"({img.width}x{img.height} given); resize it")
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise ImageError("unreadable image", ref[:60], "the file is not an image PIL can decode (JPEG, PNG, ...)") from None


def count_placeholders(messages: list[dict]) -> int:
    return sum(m["content"].count(PLACEHOLDER) for m in messages)


def check_images(rec: dict, base: Path | None) -> None:
    """Resolve `rec["images"]` against `base` (in place) and check every image; raises ImageError."""
    refs = rec.get("images")
    if not isinstance(refs, list) or not all(isinstance(x, str) and x for x in refs):
        raise ImageError("images is not a list of paths", str(refs)[:60], "give `images` as a list of file paths")
    n = count_placeholders(rec.get("messages") or [])
    if n != len(refs):
        raise ImageError("<image> placeholders != images", f"{n} placeholders, {len(refs)} images",
                         "put one <image> in the messages for each entry of `images`, in order")
    resolved = []
    for ref in refs:
        if not ref.startswith(("data:", "http://", "https://")) and not Path(ref).is_absolute() and base is not None:
            ref = str((base / ref).resolve())
        load_image(ref)  # decodes the header and checks size; the pixels are read per batch
        resolved.append(ref)
    rec["images"] = resolved


# ---------------------------------------------------------------------------------------------
# Tokens and pixels, by the model's processor


def image_token(processor) -> str:
    """What one image's placeholder becomes in the rendered text: the processor's image token, framed by its
    vision start/end tokens where the model has them (Qwen2-VL finds images by them)."""
    tok = processor.image_token
    start, end = getattr(processor, "vision_start_token", None), getattr(processor, "vision_end_token", None)
    return f"{start}{tok}{end}" if start and end else tok


def image_token_counts(processor, images: list) -> list[int]:
    """How many image tokens each image takes in the model's input, as the processor itself computes it."""
    inputs = processor.image_processor(images, return_tensors="pt")
    return [processor.replace_image_token(inputs, i).count(processor.image_token) for i in range(len(images))]


def expand_image_tokens(ids: list[int], labels: list[int], image_id: int, counts: list[int]) -> tuple[list, list]:
    """Each occurrence of `image_id` repeated counts[i] times (label IGNORE)."""
    out_ids, out_labels, k = [], [], 0
    for t, lab in zip(ids, labels):
        if t == image_id:
            out_ids += [t] * counts[k]
            out_labels += [IGNORE] * counts[k]
            k += 1
        else:
            out_ids.append(t)
            out_labels.append(lab)
    if k != len(counts):
        raise ValueError(f"{k} image tokens in the rendered text for {len(counts)} images")
    return out_ids, out_labels


def with_image_tokens(messages: list[dict], processor) -> list[dict]:
    token = image_token(processor)
    return [{**m, "content": m["content"].replace(PLACEHOLDER, token)} for m in messages]


def encode_multimodal(messages: list[dict], images: list[str], processor) -> dict | str:
    """{"input_ids", "labels", "chat", "images"} for a conversation with images, or why it has no tokens."""
    from tailor.data.templates import encode_conversation

    if processor is None or not hasattr(processor, "image_processor"):
        return NO_PROCESSOR
    enc = encode_conversation(processor.tokenizer, with_image_tokens(messages, processor), None)
    if enc is None:
        return "no assistant token in the conversation"
    counts = image_token_counts(processor, [load_image(r) for r in images])
    ids, labels = expand_image_tokens(enc["input_ids"], enc["labels"], processor.image_token_id, counts)
    return {"input_ids": ids, "labels": labels, "chat": True, "images": list(images)}


def token_types(processor, ids) -> dict:
    """{"mm_token_type_ids": ...} for processors whose models locate images by it (Qwen2-VL's M-RoPE), else {}."""
    import torch

    if "mm_token_type_ids" not in getattr(processor, "model_input_names", []):
        return {}
    return {"mm_token_type_ids": torch.tensor(processor.create_mm_token_type_ids(ids.tolist()))}


def prompt_inputs(processor, messages: list[dict], images: list) -> dict:
    """Model inputs (batch of one) for a prompt with images (references, or PIL images already loaded): what chat,
    eval and serving generate from."""
    import torch

    from tailor.data.templates import render

    text = render(processor.tokenizer, with_image_tokens(messages, processor), add_generation_prompt=True)
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    pixels = [load_image(r) if isinstance(r, str) else r for r in images]
    if pixels:
        ids, _ = expand_image_tokens(ids, ids, processor.image_token_id, image_token_counts(processor, pixels))
    out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    if pixels:
        out.update(processor.image_processor(pixels, return_tensors="pt"))
    return {**out, **token_types(processor, out["input_ids"])}


def augment_image(img, cfg, rng, donor=None):
    """`img` cut-mixed with `donor` (when given), rotated, cropped and colour-jittered as `cfg` (data.augment.image)
    says, with draws from `rng`."""
    from PIL import Image, ImageEnhance

    if donor is not None:
        img = cutmix(img, donor, rng)
    if cfg.rotation:
        img = img.rotate(rng.uniform(-cfg.rotation, cfg.rotation), resample=Image.BILINEAR, fillcolor=img.getpixel((0, 0)))
    if cfg.scale < 1:
        share = rng.uniform(cfg.scale, 1.0) ** 0.5
        w, h = max(1, int(img.width * share)), max(1, int(img.height * share))
        x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
        img = img.crop((x, y, x + w, y + h)).resize(img.size, Image.BILINEAR)
    if cfg.color_jitter:
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(rng.uniform(1 - cfg.color_jitter, 1 + cfg.color_jitter))
    return img


def cutmix(img, donor, rng):
    """CutMix's box: a rectangle whose share of the area is drawn uniformly (Beta(1, 1), as in the paper), cut from
    `donor` (resized to `img`'s size) and pasted at the same place in a copy of `img`."""
    from PIL import Image

    donor = donor if donor.size == img.size else donor.resize(img.size, Image.BILINEAR)
    side = rng.random() ** 0.5
    w, h = max(1, round(img.width * side)), max(1, round(img.height * side))
    x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    out = img.copy()
    out.paste(donor.crop((x, y, x + w, y + h)), (x, y))
    return out


def answer_key(labels) -> tuple:
    """A training row's class for same-class CutMix: its answer tokens (the label ids that carry loss)."""
    return tuple(t for t in labels if t != IGNORE)


def same_class_images(rows) -> dict:
    """{class key: [image reference, ...]} from (key, reference) pairs: the partners same-class CutMix draws from."""
    out: dict = {}
    for key, ref in rows:
        out.setdefault(key, []).append(ref)
    return out


def augments(cfg) -> bool:
    return cfg is not None and bool(cfg.rotation or cfg.scale < 1 or cfg.color_jitter or cfg.cutmix)


class ImageAugmenter:
    """data.augment.image on one training image, with draws from one seeded generator. CutMix (probability
    cfg.cutmix) takes its partner among `donors[key]`, the training images of the same class, so the answer stays
    true of the mixed image; an image without a partner in its class is left unmixed."""

    def __init__(self, cfg, seed: int = 0, donors: dict | None = None):
        import random

        self.cfg, self.rng, self.donors = cfg, random.Random(seed), donors or {}

    def __call__(self, img, ref: str, key):
        donor = None
        if self.cfg.cutmix and self.rng.random() < self.cfg.cutmix:
            others = [r for r in self.donors.get(key, ()) if r != ref]
            donor = load_image(self.rng.choice(others)) if others else None
        return augment_image(img, self.cfg, self.rng, donor)


@dataclass
class VisionCollator:
    """Right-pad input_ids/labels (as PadCollator) and add the batch's images as the processor prepares them.
    Rows marked `augment` (the training split's) get `augment` (data.augment.image) by an ImageAugmenter; its
    CutMix partners are `donors` (same_class_images of the training rows with one image, keyed by answer_key)."""

    processor: object
    pad_id: int
    augment: object = None
    seed: int = 0
    donors: dict | None = None

    def __post_init__(self):
        self.augmenter = ImageAugmenter(self.augment, self.seed, self.donors) if augments(self.augment) else None

    def __call__(self, features: list[dict]) -> dict:
        from tailor.data.packing import PadCollator

        batch = PadCollator(self.pad_id)(features)
        images = [self._augmented(load_image(r), r, f) for f in features for r in (f.get("images") or [])]
        if images:
            batch.update(self.processor.image_processor(images, return_tensors="pt"))
        return {**batch, **token_types(self.processor, batch["input_ids"])}

    def _augmented(self, img, ref: str, row: dict):
        if not (row.get("augment") and self.augmenter):
            return img
        key = answer_key(row["labels"]) if len(row["images"]) == 1 else None  # CutMix: one-image rows only
        return self.augmenter(img, ref, key)
