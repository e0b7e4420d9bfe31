"""Supervised fine-tuning of a vision-language model: `train.objective: sft` with model.path a vision-language
checkpoint or model.preset a vision preset (deepseek-vl-tiny, ...).

    tailor train recipe.yaml            # rows: messages with <image> placeholders + images

The recipe reads like recipes/lm.py: start the run, load the model and its processor, build the data (the same
prepared tokens, image tokens placed by the processor; pixels made per batch by VisionCollator), apply the adapter
(LoRA or full on the language model; vision tower and projector as adapter.vision_tower / adapter.projector say),
build the trainer, train, save (final/ holds the processor too, so it loads with AutoProcessor). Packing is refused:
packed rows would mix several rows' images under one attention mask.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tailor.config import Recipe
from tailor.errors import TailorError
from tailor.training import phases
from tailor.training.phases import TrainingData, TrainResult
from tailor.training.trainer import TailorTrainer

log = logging.getLogger("tailor")


def is_vision_recipe(recipe: Recipe) -> bool:
    """True when the recipe's model is a vision-language model (a vision preset or checkpoint)."""
    from tailor.models.vision import is_vision_model_dir, is_vision_preset

    m = recipe.model
    return is_vision_preset(m.preset) or bool(m.path and is_vision_model_dir(m.path))


def train(recipe: Recipe, callbacks: list | None = None) -> TrainResult:
    """Fine-tune a vision-language model on conversations with images; writes what recipes/lm.py writes."""
    if recipe.data.packing:
        raise TailorError("data.packing is refused for vision-language training: a packed row would put several rows' "
                          "image tokens under one mask", where="data.packing", fix="set data.packing=false")
    run = phases.start(recipe)
    model, processor, base_dir = load_vision(recipe, run.out)
    data = vision_data(recipe, processor)
    model, parameters = phases.prepare_model(recipe, model)
    trainer = phases.build_trainer(TailorTrainer, recipe, run, model, processor, data, callbacks)
    fitted = phases.fit(trainer, recipe, run, data)
    return phases.finish(trainer, recipe, run, data, processor, base_dir, parameters, fitted)


def load_vision(recipe: Recipe, out: Path):
    """(model, processor, base_dir): model.path loaded with its processor, or model.preset built (tokenizer from
    model.tokenizer) and saved as out/base, the directory adapters point at."""
    from tailor.models.loading import load_tokenizer
    from tailor.models.vision import init_vision_model, is_vision_preset, load_vision_model
    from tailor.training.distributed import is_main_process

    m = recipe.model
    if m.preset and is_vision_preset(m.preset):
        if not m.tokenizer:
            raise TailorError("a vision preset needs a tokenizer", where="model.tokenizer",
                              fix="set model.tokenizer to a tokenizer folder (e.g. one `tailor tokenizer` trained)")
        tokenizer = load_tokenizer(m.tokenizer, chat_template=recipe.data.chat_template)
        base_dir = out / "base"
        model, processor = init_vision_model(m.preset, tokenizer, out_dir=base_dir if is_main_process() else None,
                                             seed=recipe.train.seed)
        return model, processor, base_dir
    base_dir = Path(m.path).resolve()
    model, processor = load_vision_model(base_dir, m.dtype, for_training=True, trust_remote_code=m.trust_remote_code)
    if recipe.data.chat_template:
        from tailor.data.templates import set_chat_template

        set_chat_template(processor.tokenizer, recipe.data.chat_template)
    return model, processor, base_dir


def vision_data(recipe: Recipe, processor) -> TrainingData:
    """The data stage's token rows (image tokens placed by `processor`) and the VisionCollator."""
    from tailor.data.images import VisionCollator, answer_key, augments
    from tailor.data.training_data import build_training_data

    tokenizer = processor.tokenizer
    train_ds, val_ds, report = build_training_data(recipe, tokenizer, processor=processor)
    log.info("data: %s", report.summary())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    augment = recipe.data.augment.image
    if augments(augment):  # train rows only: validation images stay as they are
        train_ds = train_ds.add_column("augment", [True] * len(train_ds))
    one_image = ((answer_key(r["labels"]), r["images"][0]) for r in train_ds if len(r["images"] or []) == 1)
    donors = cutmix_donors(augment, one_image)
    return TrainingData(train_ds, val_ds, VisionCollator(processor, pad, augment, recipe.data.augment.seed, donors),
                        report)


def cutmix_donors(augment, rows) -> dict | None:
    """Same-class CutMix partners of the training images ((class key, image) pairs), logged; None with cutmix off."""
    from tailor.data.images import same_class_images

    if not augment.cutmix:
        return None
    donors = same_class_images(rows)
    paired = sum(len(refs) for refs in donors.values() if len(set(refs)) > 1)
    log.info("cutmix: %d of %d one-image training rows have a same-class partner (%d classes)", paired,
             sum(len(refs) for refs in donors.values()), len(donors))
    return donors
