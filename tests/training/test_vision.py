"""Vision-language training: tiny DeepSeek-VL (preset), LLaVA and Qwen2-VL (built from config) train a few steps
and their loss falls; the LoRA adapter leaves the vision tower alone; contrastive alignment lowers its loss."""

import json
from pathlib import Path

import pytest
from PIL import Image

from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.models.loading import load_tokenizer
from tailor.training import train
from tailor.training.callbacks import read_metrics

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


@pytest.fixture(scope="module")
def color_data(tmp_path_factory) -> Path:
    """8 rows: an image of one colour and the question what colour it is (images relative to the file)."""
    d = tmp_path_factory.mktemp("colors")
    rows = []
    for i in range(8):
        name = list(COLORS)[i % 2]
        (d / "img").mkdir(exist_ok=True)
        Image.new("RGB", (40 + i, 30), COLORS[name]).save(d / "img" / f"{i}.png")
        rows.append({"messages": [{"role": "user", "content": "<image>What color is it?"},
                                  {"role": "assistant", "content": f"It is {name}."}], "images": [f"img/{i}.png"]})
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return d / "train.jsonl"


def _losses(run: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(run / "metrics.jsonl") if "loss" in m]


def _train(tmp_path, data, model: list[str], *extra: str):
    recipe = load_recipe(None, [*model, f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                                "train.max_steps=10", "train.batch_size=4", "train.lr=1e-2", "train.warmup_ratio=0",
                                "train.logging_steps=1", "train.precision=fp32", *extra])
    return train(recipe)


def _tokenizer(tokenizer_dir, tokens: list[str]):
    tok = load_tokenizer(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
    return tok


def test_deepseek_vl_preset_lora_trains_language_model_and_projector_only(tmp_path, color_data, tokenizer_dir):
    from safetensors import safe_open

    result = _train(tmp_path, color_data, ["model.preset=deepseek-vl-micro", f"model.tokenizer={tokenizer_dir}"],
                    "adapter.method=lora", "adapter.r=8", "adapter.alpha=16")
    losses = _losses(tmp_path / "run")
    assert losses[-1] < losses[0] - 0.5
    with safe_open(str(result.final_dir / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("language_model" in k and "lora_A" in k for k in keys)
    assert any(".aligner." in k for k in keys)                      # projector trained in full, saved with the adapter
    assert not any("vision_model" in k for k in keys)               # vision tower frozen by default
    assert (result.final_dir / "processor_config.json").is_file()

    # merged (plain AutoModelForImageTextToText) logits = base + adapter logits
    import torch
    from transformers import AutoModelForImageTextToText

    from tailor.adapters.merge import merge
    from tailor.adapters.vision import load_vision_with_adapter
    from tailor.data.images import prompt_inputs

    merged = merge(result.final_dir, tmp_path / "merged", dtype="float32")
    with_adapter, processor = load_vision_with_adapter(result.final_dir, dtype="float32")
    inputs = prompt_inputs(processor, [{"role": "user", "content": "<image>What color is it?"}],
                           [str(color_data.parent / "img" / "0.png")])
    with torch.no_grad():
        a = with_adapter(**inputs).logits
        b = AutoModelForImageTextToText.from_pretrained(merged).eval()(**inputs).logits
        with with_adapter.disable_adapter():
            base = with_adapter(**inputs).logits
    assert (a - b).abs().max() < 1e-4 and (a - base).abs().max() > 1e-3


def test_packing_is_refused_for_images(tmp_path, color_data, tokenizer_dir):
    with pytest.raises(TailorError, match="packing"):
        _train(tmp_path, color_data, ["model.preset=deepseek-vl-micro", f"model.tokenizer={tokenizer_dir}"],
               "data.packing=true")


def test_llava_from_config_full_finetune_loss_falls(tmp_path, color_data, tokenizer_dir):
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _tokenizer(tokenizer_dir, ["<image>"])
    processor = LlavaProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                               tok, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default")
    LlavaForConditionalGeneration(config).save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    _train(tmp_path, color_data, [f"model.path={tmp_path / 'llava'}"], "adapter.method=full")
    losses = _losses(tmp_path / "run")
    assert losses[-1] < losses[0] - 0.5


def test_qwen2_vl_from_config_lora_loss_falls(tmp_path, color_data, tokenizer_dir, monkeypatch):
    from transformers import ProcessorMixin, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, \
        Qwen2VLProcessor

    # Without torchvision, transformers 5.23 cannot check the (unused) video processor's class of a Qwen2-VL
    # processor; images go through the PIL image processor either way.
    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: type(arg))
    tok = _tokenizer(tokenizer_dir, ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"])
    processor = Qwen2VLProcessor(Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56), tok)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in (("image_token_id", "<|image_pad|>"),
                                                        ("video_token_id", "<|video_pad|>"),
                                                        ("vision_start_token_id", "<|vision_start|>"),
                                                        ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2VLConfig(
        text_config=dict(model_type="qwen2_vl_text", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2), **ids)
    Qwen2VLForConditionalGeneration(config).save_pretrained(tmp_path / "qwen2vl")
    # Nor can it save or load such a processor (its video processor is None): hand the run this one.
    monkeypatch.setattr("tailor.models.vision.load_processor", lambda path, trust_remote_code=False: processor)
    monkeypatch.setattr(processor, "save_pretrained",
                        lambda d, **kw: (tok.save_pretrained(d), processor.image_processor.save_pretrained(d)))
    _train(tmp_path, color_data, [f"model.path={tmp_path / 'qwen2vl'}"], "adapter.method=lora", "adapter.r=8", "train.lr=2e-2", "train.max_steps=20",
           "adapter.alpha=16")
    losses = _losses(tmp_path / "run")
    assert losses[-1] < losses[0] - 0.25  # LoRA rank 8 on a 32-wide model learns slowly


def test_contrastive_alignment_loss_falls_and_final_loads_plainly(tmp_path, color_data, tokenizer_dir):
    from transformers import AutoModelForImageTextToText

    result = _train(tmp_path, color_data, ["model.preset=deepseek-vl-micro", f"model.tokenizer={tokenizer_dir}"],
                    "train.objective=contrastive", "adapter.method=full", "adapter.vision_tower=train",
                    "data.augment.image.cutmix=0.5", "data.augment.image.rotation=10")
    losses = _losses(tmp_path / "run")
    assert losses[-1] < losses[0]
    AutoModelForImageTextToText.from_pretrained(result.final_dir)  # no extra parameter left in the checkpoint


def test_cutmix_reaches_the_collator_from_the_recipe(tmp_path, tokenizer_dir):
    """data.augment.image.cutmix in a recipe: the SFT collator's partners are the training images grouped by answer,
    and a training row's pixels change only when its class has a partner."""
    import torch

    from tailor.training.recipes.vision import load_vision, vision_data

    rows = []
    for i, (color, answer) in enumerate([((250, 0, 0), "scratch"), ((0, 0, 250), "scratch"), ((0, 250, 0), "dent")]):
        Image.new("RGB", (32, 32), color).save(tmp_path / f"{i}.png")
        rows.append({"messages": [{"role": "user", "content": "<image>What is wrong?"},
                                  {"role": "assistant", "content": answer}], "images": [f"{i}.png"]})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = load_recipe(None, ["model.preset=deepseek-vl-micro", f"model.tokenizer={tokenizer_dir}",
                                f"data.train=[{tmp_path / 'train.jsonl'}]", f"train.output_dir={tmp_path / 'run'}",
                                "data.augment.image.cutmix=1.0"])
    _, processor, _ = load_vision(recipe, tmp_path / "run")
    data = vision_data(recipe, processor)
    groups = sorted(sorted(Path(r).name for r in refs) for refs in data.collator.donors.values())
    assert groups == [["0.png", "1.png"], ["2.png"]]
    by_image = {Path(r["images"][0]).name: r for r in data.train}
    plain = {name: data.collator([{**row, "augment": False}])["pixel_values"] for name, row in by_image.items()}
    assert not torch.equal(data.collator([by_image["0.png"]])["pixel_values"], plain["0.png"])  # mixed with 1.png
    assert torch.equal(data.collator([by_image["2.png"]])["pixel_values"], plain["2.png"])  # alone in its class
    # contrastive: partners share the caption
    from tailor.training.recipes.contrastive import PairCollator

    refs = [str(tmp_path / f"{i}.png") for i in range(2)]
    pairs = PairCollator(processor, recipe.data.augment.image, 0, {(5, 6): refs})
    row = {"image": refs[0], "caption_ids": [5, 6]}
    assert not torch.equal(pairs([{**row, "augment": True}])["pixel_values"], pairs([row])["pixel_values"])
    assert torch.equal(pairs([{**row, "caption_ids": [7], "augment": True}])["pixel_values"], pairs([row])["pixel_values"])


SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "more"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present")
def test_llamafactory_mllm_demo_trains_through_its_registry(tmp_path, tokenizer_dir):
    recipe = load_recipe(None, ["model.preset=deepseek-vl-micro", f"model.tokenizer={tokenizer_dir}",
                                f"data.sources=[{{registry: {SHARED / 'dataset_info.json'}, name: mllm_demo}}]",
                                f"data.prepared_dir={tmp_path / 'prepared'}", f"train.output_dir={tmp_path / 'run'}",
                                "train.max_steps=6", "train.batch_size=3", "train.lr=1e-2", "train.warmup_ratio=0",
                                "train.logging_steps=1", "train.precision=fp32", "data.max_length=512"])
    result = train(recipe)
    assert result.metrics["train_sequences"] == 6 and result.metrics["data_report"]["kept"] == 6
    losses = _losses(tmp_path / "run")
    assert losses[-1] < losses[0]
