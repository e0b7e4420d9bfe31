"""CLIP-style image-text alignment of a vision-language model: `train.objective: contrastive`.

    tailor train recipe.yaml            # rows: one image and its caption (the assistant answer)

Each row gives an image (its single `<image>` row) and a caption (the last assistant turn). The image side is the
model's own image features (vision tower + projector, mean over the image tokens); the text side is the language
model's input embeddings of the caption, mean over its tokens, so both live in the language model's space and
the projector learns to map images where their descriptions are. The loss is the symmetric InfoNCE of CLIP
(cross-entropy over image->text and text->image similarities of the batch, learned temperature). The language
model stays frozen; the vision tower and projector train as adapter.vision_tower / adapter.projector say (the
recipe refuses a run in which neither trains). final/ is the whole model, ready for SFT (recipes/vision.py).
"""

from __future__ import annotations

import logging
import math

import torch

from tailor.config import Recipe
from tailor.errors import TailorError
from tailor.training import phases
from tailor.training.phases import TrainingData, TrainResult
from tailor.training.trainer import TailorTrainer

log = logging.getLogger("tailor")
NOT_A_PAIR = "not an image-caption pair (needs exactly one image and an assistant caption)"


class ContrastiveTrainer(TailorTrainer):
    """Symmetric InfoNCE between pooled image features and pooled caption embeddings."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # CLIP's initial temperature 1/0.07, learned in log space; stored on the model so the optimizer sees it.
        self.model.register_parameter("tailor_logit_scale", torch.nn.Parameter(torch.tensor(math.log(1 / 0.07))))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, sims = contrastive_loss(model, inputs)
        return (loss, {"logits": sims}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss, _ = contrastive_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None


def pooled_features(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features, caption features), one L2-normalised row per pair, in the language model's space."""
    image_inputs = {k: v for k, v in inputs.items() if k not in ("caption_ids", "caption_mask")}
    inner = model.model if hasattr(getattr(model, "model", None), "get_image_features") else model
    feats = inner.get_image_features(**image_inputs)
    feats = getattr(feats, "pooler_output", feats)
    if isinstance(feats, (list, tuple)):
        feats = torch.stack([f.mean(0) for f in feats])
    else:
        feats = feats.reshape(inputs["caption_ids"].shape[0], -1, feats.shape[-1]).mean(1)
    emb = model.get_input_embeddings()(inputs["caption_ids"])
    mask = inputs["caption_mask"].unsqueeze(-1).to(emb.dtype)
    text = (emb * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(feats, dim=-1), torch.nn.functional.normalize(text, dim=-1)


def contrastive_loss(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE; pairs whose captions are identical count as positives of each other (spread evenly
    over them), so a batch holding one caption twice does not push an image away from its own description."""
    img, txt = pooled_features(model, inputs)
    scale = model.tailor_logit_scale.exp().clamp(max=100)
    sims = scale * img @ txt.T
    ids = inputs["caption_ids"].masked_fill(inputs["caption_mask"] == 0, -1)
    same = (ids[:, None, :] == ids[None, :, :]).all(-1).to(sims.dtype)
    target = same / same.sum(1, keepdim=True)
    loss = (torch.nn.functional.cross_entropy(sims, target) + torch.nn.functional.cross_entropy(sims.T, target)) / 2
    return loss, sims


class PairCollator:
    """Pixels of each row's image (the processor's image processor) and its caption's padded token ids. Rows marked
    `augment` (the training split's) get data.augment.image, CutMix partners drawn among images of the same caption."""

    def __init__(self, processor, augment=None, seed: int = 0, donors: dict | None = None):
        from tailor.data.images import ImageAugmenter, augments

        self.processor = processor
        self.augmenter = ImageAugmenter(augment, seed, donors) if augments(augment) else None

    def __call__(self, features: list[dict]) -> dict:
        from tailor.data.images import load_image

        images = [load_image(f["image"]) for f in features]
        if self.augmenter:
            images = [self.augmenter(img, f["image"], tuple(f["caption_ids"])) if f.get("augment") else img
                      for img, f in zip(images, features)]
        pixels = self.processor.image_processor(images, return_tensors="pt")
        width = max(len(f["caption_ids"]) for f in features)
        ids = torch.zeros((len(features), width), dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, :len(f["caption_ids"])] = torch.tensor(f["caption_ids"])
            mask[i, :len(f["caption_ids"])] = 1
        return {**pixels, "caption_ids": ids, "caption_mask": mask}


def pairs(records: list[dict], tokenizer, report) -> "object":
    """A Dataset of {image, caption_ids} from canonical records; other rows are counted in `report`."""
    from datasets import Dataset

    rows = {"image": [], "caption_ids": []}
    for rec in records:
        answers = [m["content"] for m in rec.get("messages") or [] if m["role"] == "assistant"]
        if len(rec.get("images") or []) != 1 or not answers:
            report.skip(NOT_A_PAIR, rec.get("where", "records"))
            continue
        rows["image"].append(rec["images"][0])
        rows["caption_ids"].append(tokenizer(answers[-1], add_special_tokens=False)["input_ids"])
        report.kept += 1
    return Dataset.from_dict(rows)


def train(recipe: Recipe, callbacks: list | None = None) -> TrainResult:
    """Align the vision side to the language model's text space on image-caption pairs; writes final/ (whole model)."""
    from tailor.data.training_data import load_report, prepare_training_data
    from tailor.models.loading import count_parameters
    from tailor.models.vision import vision_parts
    from tailor.data.images import augments
    from tailor.training.recipes.vision import cutmix_donors, is_vision_recipe, load_vision

    if not is_vision_recipe(recipe):
        raise TailorError("train.objective=contrastive needs a vision-language model", where="model.path / model.preset",
                          fix="use a vision preset (deepseek-vl-tiny) or a vision-language checkpoint")
    a = recipe.adapter
    if a.method != "full" or (a.vision_tower == "frozen" and a.projector == "frozen"):
        raise TailorError("train.objective=contrastive trains the vision tower and/or projector in full",
                          where="adapter", fix="set adapter.method=full and adapter.vision_tower=train or adapter.projector=train")
    run = phases.start(recipe)
    if run.precision_check:  # auto's bf16 check compares language-model losses, which this objective does not compute
        run.precision, run.precision_check = "fp32", False
        run.precision_reason = "fp32: train.precision=auto confirms bf16 on the language-model loss, not a contrastive one"
    model, processor, _ = load_vision(recipe, run.out)
    prepared = prepare_training_data(recipe, processor.tokenizer, processor=processor)
    report = load_report(prepared)
    train_ds = pairs(prepared.records("train"), processor.tokenizer, report)
    eval_records = prepared.records("eval")
    eval_ds = pairs(eval_records, processor.tokenizer, report) if eval_records else None
    if len(train_ds) < 2:
        raise TailorError(f"contrastive training needs at least 2 image-caption pairs: {report.summary()}",
                          where="data", fix="give rows with one <image> and an assistant caption")
    log.info("data: %s", report.summary())
    augment = recipe.data.augment.image
    if augments(augment):  # train rows only: validation images stay as they are
        train_ds = train_ds.add_column("augment", [True] * len(train_ds))
    donors = cutmix_donors(augment, zip(map(tuple, train_ds["caption_ids"]), train_ds["image"]))
    collator = PairCollator(processor, augment, recipe.data.augment.seed, donors)
    data = TrainingData(train_ds, eval_ds if eval_ds is not None and len(eval_ds) else None, collator, report)
    model, _ = phases.prepare_model(recipe, model)
    for p in model.get_submodule(vision_parts(model)["language"]).parameters():
        p.requires_grad_(False)  # the text side is the fixed target space
    model.get_input_embeddings().weight.requires_grad_(False)
    parameters = count_parameters(model)  # after the freeze: prepare_model counted the language model as trainable
    trainer = phases.build_trainer(ContrastiveTrainer, recipe, run, model, processor, data, callbacks)
    fitted = phases.fit(trainer, recipe, run, data)
    del model.tailor_logit_scale  # not part of the architecture: final/ loads with plain transformers
    return phases.finish(trainer, recipe, run, data, processor, None, parameters, fitted)

