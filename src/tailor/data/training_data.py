"""Token datasets for a training run, from the recipe's data section."""

from __future__ import annotations

from tailor.config import Recipe
from tailor.errors import TailorError


def build_training_data(recipe: Recipe, tokenizer):
    """(train, validation, LoadReport) token datasets for a training run: the data stage's one entry for training."""
    from tailor.data.dataset import pretrain_dataset, sft_dataset, split_validation
    from tailor.data.loading import LoadReport, load_records, require_rows

    from tailor.data.prepare import training_datasets

    prepared = training_datasets(recipe)  # data.sources, or a prepared directory in data.train
    if prepared is not None:
        return prepared
    d = recipe.data
    if not d.train:
        raise TailorError("no training data given", where="data.train / data.sources",
                          fix="set data.train to files or a prepared directory, or data.sources to inputs to prepare")
    report = LoadReport()
    records = load_records(d.train, d.format, d.text_field, report)
    if recipe.train.objective == "sft":
        kept = [r for r in records if "messages" in r]
        for _ in range(len(records) - len(kept)):
            report.skip("raw text record in an sft run (needs a conversation)", ", ".join(d.train))
        records = kept
    require_rows(records, report, d.train, f"training ({recipe.train.objective})")
    if d.eval:
        val_records = load_records(d.eval, d.format, d.text_field)
        train_records = records
    else:
        train_records, val_records = split_validation(records, d.val_ratio, recipe.train.seed)
    if recipe.train.objective == "pretrain":
        packing = True if d.packing is None else d.packing
        build = lambda recs, rep=None: pretrain_dataset(recs, tokenizer, d.max_length, packing, rep)  # noqa: E731
    else:
        build = lambda recs, rep=None: sft_dataset([r for r in recs if "messages" in r], tokenizer, d.max_length, d.system_prompt, rep)  # noqa: E731
    train_ds = build(train_records, report)
    if len(train_ds) == 0:
        raise TailorError(f"no training sequences left after tokenization: {report.summary()}", where="data.train",
                          fix="lower data.max_length for packing, or raise it so assistant turns fit")
    val_ds = build(val_records) if val_records else None
    return train_ds, val_ds, report
