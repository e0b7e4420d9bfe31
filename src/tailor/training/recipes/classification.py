"""Sequence classification (`train.objective: classification`): a label head on the base model.

    tailor train recipe.yaml            # train.objective: classification; rows are {"text", "label"}

The recipe reads top to bottom: check the settings, start the run, load the tokenizer and the rows, fix the
label set and class weights, load the base as a classifier, encode the rows, apply dropout and the adapter,
train a ClassificationTrainer (weighted cross-entropy, classification metrics on validation), save. Rows,
labels, the loss and the trainer are in tailor.training.classification.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tailor.config import Recipe
from tailor.errors import TailorError
from tailor.training import phases
from tailor.training.classification import ClassificationTrainer, class_weights, label_set, read_rows
from tailor.training.phases import TrainingData, TrainResult

log = logging.getLogger("tailor")


def train(recipe: Recipe, callbacks: list | None = None) -> TrainResult:
    """Train a classifier as the recipe says; writes what `tailor train` writes for other objectives, the
    classifier's labels in its config, and labels / class weights / validation metrics in train_summary.json."""
    from transformers import DataCollatorWithPadding

    from tailor.models.loading import is_sequence_classifier

    t, m = recipe.train, recipe.model
    check_recipe(recipe)
    run = phases.start(recipe)
    tokenizer = load_tokenizer(recipe)
    train_rows, val_rows, report = read_rows(recipe)
    existing = _classifier_labels(m.path) if m.path and is_sequence_classifier(m.path) else None
    labels = label_set(t.labels, train_rows, val_rows, existing)
    weights = class_weights(t.class_weights, labels, train_rows)
    counts = Counter(r["label"] for r in train_rows)
    log.info("classification: %d labels %s; training rows per label %s%s", len(labels), labels,
             {lab: counts[lab] for lab in labels}, f"; class weights {[round(w, 4) for w in weights]}" if weights else "")
    model, base_dir = _load_model(recipe, run.out, tokenizer, labels)
    ids = {lab: i for i, lab in enumerate(labels)}
    train_ds, cut = _encode(train_rows, tokenizer, ids, recipe.data.max_length)
    val_ds = _encode(val_rows, tokenizer, ids, recipe.data.max_length)[0] if val_rows else None
    data = TrainingData(train_ds, val_ds, DataCollatorWithPadding(tokenizer), report)
    log.info("data: %s", report.summary())
    model, parameters = phases.prepare_model(recipe, model)
    summary = {"labels": labels, "class_weights": weights, "train_rows_per_label": {lab: counts[lab] for lab in labels},
               "validation_rows": len(val_rows), "truncated_train_rows": cut}
    trainer = phases.build_trainer(ClassificationTrainer, recipe, run, model, tokenizer, data, callbacks, labels=labels,
                                   class_weights=weights, label_smoothing=t.label_smoothing, summary=summary)
    fitted = phases.fit(trainer, recipe, run, data)
    return phases.finish(trainer, recipe, run, data, tokenizer, base_dir, parameters, fitted)


def load_tokenizer(recipe: Recipe):
    """The base model's tokenizer, padding on the right (the head reads the last non-pad token)."""
    from tailor.models.loading import load_tokenizer

    m = recipe.model
    tokenizer = load_tokenizer(m.tokenizer or m.path, trust_remote_code=m.trust_remote_code)
    if tokenizer.pad_token_id is None:
        raise TailorError("the tokenizer has neither a pad nor an eos token; the head reads the last non-pad token "
                          "of each row, so batches need a pad id", where="model.tokenizer",
                          fix="use a tokenizer with a pad or eos token")
    # Pads go after the text: positions then match an unpadded row (as a single pipeline() call sees it), which
    # left padding would shift. Saved with the tokenizer, so batched pipelines pad the same way.
    tokenizer.padding_side = "right"
    return tokenizer


def check_recipe(recipe: Recipe) -> None:
    """Settings that cannot apply to a classification run are refused, not ignored."""
    d, a, m = recipe.data, recipe.adapter, recipe.model
    if not m.path and not m.preset:
        raise TailorError("no model given", where="model.path / model.preset",
                          fix="set model.path to a local model directory or model.preset to build one")
    if m.path and Path(m.path, "adapter_config.json").is_file():
        raise TailorError(f"model.path {m.path} is an adapter directory; training starts from a full model",
                          where="model.path", fix="set model.path to the adapter's base model (a new head is trained on it)")
    if a.method == "prompt":
        # peft's prompt-tuning classifier passes embeddings, not token ids, so the head cannot find the last
        # non-pad token and would read a pad position of every shorter row in a batch.
        raise TailorError("adapter.method=prompt does not work with a classification head (padded rows would be read "
                          "at a pad position)", where="adapter.method", fix="use lora, dora, ia3, prefix, freeze or full")
    for key, value, default in (("data.packing", d.packing, None), ("data.format", d.format, "auto"),
                                ("data.system_prompt", d.system_prompt, None),
                                ("data.chat_template", d.chat_template, None)):
        if value != default:
            raise TailorError(f"{key}={value} does not apply to train.objective=classification: rows are "
                              "{text, label} and the text is classified as it is", where=key, fix=f"remove {key}")


def _classifier_labels(path) -> list[str]:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    return [str(cfg.id2label[i]) for i in range(cfg.num_labels)]


def _load_model(recipe: Recipe, out: Path, tokenizer, labels: list[str]):
    from tailor.models.loading import load_classifier
    from tailor.models.presets import init_model

    m = recipe.model
    if m.preset:
        base_dir = out / "base"  # a new causal LM saved as the base, as for other objectives; the head goes on top
        init_model(m.preset, tokenizer, out_dir=base_dir, seed=recipe.train.seed)
    else:
        base_dir = Path(m.path).resolve()
    head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {lab: i for i, lab in enumerate(labels)}, "pad_token_id": tokenizer.pad_token_id,
            "problem_type": "single_label_classification"}
    model = load_classifier(base_dir, dtype=m.dtype, trust_remote_code=m.trust_remote_code, device="cpu",
                            for_training=True, **head)
    return model, base_dir


def _encode(rows: list[dict], tokenizer, ids: dict[str, int], max_length: int):
    """(Dataset of input_ids + class-id labels, rows cut to max_length)."""
    from datasets import Dataset

    from tailor.training.metrics import encode_texts

    input_ids, cut = encode_texts(tokenizer, [r["text"] for r in rows], max_length)
    if cut:
        log.info("%d of %d rows were longer than data.max_length=%d tokens and keep their first %d", cut, len(rows),
                 max_length, max_length)
    return Dataset.from_dict({"input_ids": input_ids, "labels": [ids[r["label"]] for r in rows]}), cut
