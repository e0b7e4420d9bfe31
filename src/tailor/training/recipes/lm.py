"""Causal language modelling: `train.objective` pretrain (next-token loss on every token) or sft (on the answers).

    tailor train recipe.yaml            # train.objective: pretrain | sft

The recipe reads top to bottom: start the run, load the model, build the data (SFT with data.packing packs
samples into rows with per-sample attention), apply dropout and the adapter, build the trainer (TrainingArguments,
callbacks), train, save. `start=` hands in a model already loaded (model, tokenizer, base_dir) instead of loading
model.path / model.preset: refresh continues from a production model merged in memory that way.
"""

from __future__ import annotations

import logging

from tailor.config import Recipe
from tailor.training import phases
from tailor.training.phases import TrainingData, TrainResult
from tailor.training.trainer import TailorTrainer

log = logging.getLogger("tailor")


def train(recipe: Recipe, callbacks: list | None = None, *, start: tuple | None = None) -> TrainResult:
    """Pretrain or fine-tune a causal LM as the recipe says; writes checkpoints, final/, metrics.jsonl,
    train_summary.json and config.yaml to train.output_dir. `callbacks` join the Trainer's."""
    run = phases.start(recipe)
    model, tokenizer, base_dir = start or phases.load_causal_lm(recipe, run.out)
    data = lm_data(recipe, tokenizer, model)
    model, parameters = phases.prepare_model(recipe, model)
    trainer = phases.build_trainer(TailorTrainer, recipe, run, model, tokenizer, data, callbacks,
                                   loss_logits=recipe.train.logits == "loss")
    fitted = phases.fit(trainer, recipe, run, data)
    return phases.finish(trainer, recipe, run, data, tokenizer, base_dir, parameters, fitted)


def lm_data(recipe: Recipe, tokenizer, model) -> TrainingData:
    """The data stage's token rows; with SFT + data.packing, packed rows and PackingCollator (block-diagonal
    attention, run per sample by tailor.runtime.packed_attention); else PadCollator."""
    from tailor.data.packing import PadCollator
    from tailor.data.training_data import build_training_data
    from tailor.models.translation import translator_for

    # Back-translation (data.augment.back_translation) needs its translator model; None when it is off.
    translator = translator_for(recipe.data.augment.back_translation)
    train_ds, val_ds, report = build_training_data(recipe, tokenizer, translator=translator)
    log.info("data: %s", report.summary())
    if recipe.train.objective != "sft" or not recipe.data.packing:
        if recipe.train.objective == "sft":
            padding_hint(train_ds, recipe.train.batch_size, recipe.train.seed)
        return TrainingData(train_ds, val_ds, PadCollator(tokenizer.pad_token_id), report)
    from tailor.data.packing import PackingCollator, check_attention, pack_dataset
    from tailor.runtime.packed_attention import use_packed_attention

    check_attention(model, recipe.train.batch_size)
    if use_packed_attention(model):  # sdpa per sample: the masked blocks of a packed row are never computed
        log.info("packing: attention runs per sample (tailor_packed_sdpa)")
    train_ds, stats = pack_dataset(train_ds, recipe.data.max_length, recipe.train.seed, report)
    if val_ds is not None:
        val_ds, _ = pack_dataset(val_ds, recipe.data.max_length, recipe.train.seed)
    log.info("packing: %d samples -> %d sequences of <= %d tokens (%.0f%% full)", stats.samples, stats.packed,
             stats.max_length, 100 * stats.fill_ratio)
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == tokenizer.eos_token_id:
        # Packed batches carry no attention mask, so the Trainer counts tokens that differ from the pad id.
        log.warning("pad token == eos token: tokens_seen leaves out EOS tokens; packing.tokens is the exact count")
    return TrainingData(train_ds, val_ds, PackingCollator(tokenizer.pad_token_id), report,
                        summary={"packing": stats.to_dict()})


PADDING_HINT = 0.5  # padding share above which an unpacked SFT run is told that packing would train faster


def padding_hint(train_ds, batch_size: int, seed: int) -> str | None:
    """The one line `tailor train` prints (and returns) when SFT without packing would spend more than PADDING_HINT
    of each batch's tokens on padding; None otherwise."""
    from tailor.data.packing import padding_waste

    waste = padding_waste([len(ids) for ids in train_ds["input_ids"]], batch_size, seed)
    if waste <= PADDING_HINT:
        return None
    line = (f"speed: {waste:.0%} of the tokens in each batch of {batch_size} are padding; data.packing=true trains the "
            f"same samples without padding (exact: no attention across samples) and computes {1 / (1 - waste):.1f}x fewer tokens")
    log.warning(line)
    return line
