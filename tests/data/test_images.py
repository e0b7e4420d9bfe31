"""Rows with images: LLaMA-Factory's multimodal format and OpenAI image parts load, malformed rows are counted."""

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tailor.config import SourceConfig
from tailor.data.loading import iter_source
from tailor.data.records import StepReport
from tailor.errors import TailorError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "more"


def _png(path: Path, size=(20, 16), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _data_url(size=(8, 8)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (0, 0, 255)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _chat(text: str, images: list | None) -> dict:
    row = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "a part"}]}
    if images is not None:
        row["images"] = images
    return row


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present")
def test_llamafactory_mllm_demo_loads_through_its_registry_as_is():
    report = StepReport("load")
    recs = list(iter_source(SourceConfig(registry=str(SHARED / "dataset_info.json"), name="mllm_demo"), "raise", report))
    assert len(recs) == 6 and report.n_out == 6
    for rec in recs:
        assert sum(m["content"].count("<image>") for m in rec["messages"]) == len(rec["images"]) >= 1
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in rec["images"])
    assert recs[0]["images"][0].endswith("mllm_demo_data/1.jpg")


def test_malformed_image_rows_are_counted_with_file_and_row(tmp_path):
    _png(tmp_path / "img" / "ok.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image at all")
    _png(tmp_path / "img" / "huge.png", size=(4200, 4100))  # 17.2 M pixels > MAX_IMAGE_PIXELS
    rows = [
        _chat("<image>What is this?", ["img/ok.png"]),                        # good, relative to the file
        _chat("<image><image>Compare", ["img/ok.png"]),                       # 2 placeholders, 1 image
        _chat("<image>What is this?", ["img/missing.png"]),                   # missing file
        _chat("<image>What is this?", ["img/broken.png"]),                    # unreadable
        _chat("<image>What is this?", ["img/huge.png"]),                      # oversized
        _chat("<image>Remote?", ["https://example.com/a.png"]),               # remote, refused offline
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Look: "},
                                                   {"type": "image_url", "image_url": {"url": _data_url()}}]},
                      {"role": "assistant", "content": "a part"}]},           # OpenAI parts, data URL: good
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "img/ok.png"}},
                                                   {"type": "text", "text": "and?"}]},
                      {"role": "assistant", "content": "a part"}]},           # OpenAI parts, file path: good
        _chat("plain text row", None),                                        # text-only rows are untouched
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = StepReport("load")
    recs = list(iter_source(SourceConfig(path=str(data)), "skip", report))
    assert report.n_in == 9 and len(recs) == 4
    assert dict(report.dropped) == {"<image> placeholders != images": 1, "image file not found": 1,
                                    "unreadable image": 1, "oversized image": 1, "remote image URL": 1}
    assert report.examples["image file not found"] == f"{data}:3 ({tmp_path / 'img' / 'missing.png'})"
    assert recs[1]["messages"][0]["content"] == "Look: <image>" and recs[1]["images"][0].startswith("data:image/png")
    assert recs[2]["messages"][0]["content"] == "<image>and?" and recs[2]["images"] == [str(tmp_path / "img" / "ok.png")]
    assert "images" not in recs[3]
    with pytest.raises(TailorError) as err:
        list(iter_source(SourceConfig(path=str(data)), "raise", StepReport("load")))
    assert "placeholders != images" in str(err.value) and f"{data}:2" in str(err.value)


def test_image_augmentation_is_train_only_and_seeded(tmp_path, tokenizer_dir):
    import torch

    from tailor.config.data import ImageAugmentConfig
    from tailor.data.images import VisionCollator
    from tailor.models.loading import load_tokenizer
    from tailor.models.vision import init_vision_model

    _, processor = init_vision_model("deepseek-vl-micro", load_tokenizer(tokenizer_dir))
    img = Image.new("RGB", (32, 32), (40, 40, 40))
    img.paste((250, 250, 250), (4, 4, 14, 28))
    img.save(tmp_path / "a.png")
    row = {"input_ids": [1, 2], "labels": [1, 2], "images": [str(tmp_path / "a.png")]}
    cfg = ImageAugmentConfig(rotation=30, scale=0.6, color_jitter=0.3)
    plain = VisionCollator(processor, 0)([row])["pixel_values"]
    assert torch.equal(VisionCollator(processor, 0, cfg)([row])["pixel_values"], plain)  # not a training row
    a = VisionCollator(processor, 0, cfg, seed=1)([{**row, "augment": True}])["pixel_values"]
    b = VisionCollator(processor, 0, cfg, seed=1)([{**row, "augment": True}])["pixel_values"]
    assert torch.equal(a, b) and not torch.equal(a, plain)


def test_cutmix_pastes_a_box_from_a_same_class_image_only(tmp_path):
    """CutMix with a free-text answer: the box comes from another training image with the same answer (class), at
    the same place; an image alone in its class, or a row with several images, is left as it is."""
    from tailor.config.data import ImageAugmentConfig
    from tailor.data.images import ImageAugmenter, same_class_images

    colors = {"red": (250, 0, 0), "blue": (0, 0, 250), "green": (0, 250, 0)}
    for name, rgb in colors.items():
        Image.new("RGB", (32, 32), rgb).save(tmp_path / f"{name}.png")
    ref = {name: str(tmp_path / f"{name}.png") for name in colors}
    donors = same_class_images([("scratch", ref["red"]), ("scratch", ref["blue"]), ("dent", ref["green"])])
    augmenter = ImageAugmenter(ImageAugmentConfig(cutmix=1.0), seed=0, donors=donors)
    mixed_any = False
    for _ in range(20):
        out = augmenter(Image.open(ref["red"]).convert("RGB"), ref["red"], "scratch")
        seen = {rgb for _, rgb in out.getcolors(32 * 32)}
        assert seen <= {colors["red"], colors["blue"]}  # never the other class's green
        if colors["blue"] in seen:
            mixed_any = True
            box = [(x, y) for x in range(32) for y in range(32) if out.getpixel((x, y)) == colors["blue"]]
            xs, ys = {x for x, _ in box}, {y for _, y in box}
            assert len(box) == len(xs) * len(ys)  # one axis-aligned rectangle
    assert mixed_any
    alone = augmenter(Image.open(ref["green"]).convert("RGB"), ref["green"], "dent")
    assert alone.getcolors(32 * 32) == [(32 * 32, colors["green"])]
    off = ImageAugmenter(ImageAugmentConfig(), seed=0, donors=donors)(Image.open(ref["red"]).convert("RGB"),
                                                                     ref["red"], "scratch")
    assert off.getcolors(32 * 32) == [(32 * 32, colors["red"])]

