"""Token datasets for a training run: the data stage's one entry for training.

One path for every input: raw files in `data.train` / `data.eval`, `data.sources`, or a directory
written by `tailor data prepare` all become a prepared directory (`tailor.data.prepare.run`: load ->
clean -> de-dup -> split -> augment -> tokenize), and training reads its tokenized splits through
`tailor.data.tokenize` (`sft_examples` or `pretrain_blocks`). So the same rows give the same tokens
whichever way they came in.

Raw files are prepared into `<train.output_dir>/data` with only the steps the recipe asks for
(`data.clean` is empty and `data.dedup` off unless set), held out by `data.val_ratio` (seeded with
`train.seed`) when `data.eval` is empty; the directory is reused while the files, the data settings
and the tokenizer are unchanged (the same cache key as `tailor data prepare`).
"""

from __future__ import annotations

from pathlib import Path

from tailor.config import Recipe, SourceConfig, SplitConfig
from tailor.data.dedup import resolved
from tailor.data.loading import LoadReport
from tailor.data.prepare import Prepared, is_prepared_dir, open_prepared, run, tokenizer_dir
from tailor.data.tokenize import pretrain_blocks, sft_examples
from tailor.errors import TailorError

RUN_DATA = "data"  # the folder under train.output_dir where raw data.train files are prepared


def raw_files_recipe(recipe: Recipe) -> Recipe:
    """The recipe that prepares `data.train` / `data.eval` files: each file a source, split as training asks."""
    d = recipe.data
    columns = {"text": d.text_field} if d.text_field != "text" else {}
    train_split = "train" if d.eval else "auto"
    sources = [SourceConfig(path=str(p), format=d.format, columns=columns, split=train_split) for p in d.train]
    sources += [SourceConfig(path=str(p), format=d.format, columns=columns, split="eval") for p in d.eval]
    split = SplitConfig(eval=0.0 if d.eval else d.val_ratio, seed=recipe.train.seed)
    dedup = resolved(d.dedup, default=False)
    data = d.model_copy(update={"sources": sources, "split": split, "dedup": dedup, "train": [], "eval": [],
                                "prepared_dir": str(Path(recipe.train.output_dir) / RUN_DATA)})
    return recipe.model_copy(update={"data": data})


def prepare_training_data(recipe: Recipe, tokenizer, *, translator=None, processor=None) -> Prepared:
    """The prepared directory a run trains on: data.train's prepared directory, or its raw files or
    data.sources prepared now (or reused from the cache)."""
    d = recipe.data
    prepared_dirs = [p for p in d.train if is_prepared_dir(p)]
    if prepared_dirs:
        if len(d.train) > 1 or d.eval:
            raise TailorError(f"{prepared_dirs[0]} is a prepared dataset, which must be data.train's only entry",
                              where="data.train / data.eval",
                              fix="prepare all inputs together (data.sources) or train on the prepared directory alone")
        prepared = open_prepared(prepared_dirs[0])
        _check_tokenizer(prepared, tokenizer)
        return prepared
    if d.train:
        return run(raw_files_recipe(recipe), tokenizer, translator=translator, processor=processor)
    if d.sources:
        return run(recipe, tokenizer, translator=translator, processor=processor)
    raise TailorError("no training data given", where="data.train / data.sources",
                      fix="set data.train to files or a prepared directory, or data.sources to inputs to prepare")


def _require_tokens(prepared: Prepared) -> None:
    if prepared.manifest.get("tokenizer") is None:
        raise TailorError("the prepared dataset was not tokenized (no tokenizer was configured)", where=str(prepared.path),
                          fix="prepare it again with model.tokenizer (or model.path) set")


def _check_tokenizer(prepared: Prepared, tokenizer) -> None:
    where = str(prepared.path)
    _require_tokens(prepared)
    used = tokenizer_dir(tokenizer)
    if used and used != prepared.manifest["tokenizer"]:
        raise TailorError(f"the dataset was tokenized with {prepared.manifest['tokenizer']}, but this run uses {used}",
                          where=where, fix="prepare the data with the same tokenizer (model.tokenizer / model.path)")


def build_training_data(recipe: Recipe, tokenizer, *, translator=None, processor=None):
    """(train, validation or None, LoadReport) token datasets for a training run (sft or pretrain).

    `tokenizer` is the run's (data.chat_template applied); `translator` serves
    data.augment.back_translation (`tailor.models.translation.translator_for`). The report counts
    rows read and kept, and every row left out or cut with its reason (preparation steps,
    tokenization, the objective's rules, held-out test rows).
    """
    prepared = prepare_training_data(recipe, tokenizer, translator=translator, processor=processor)
    return training_datasets(prepared, recipe)


def load_report(prepared: Prepared) -> LoadReport:
    """The preparation's accounting as a LoadReport: rows read, and rows dropped by reason."""
    accounting = prepared.report()
    report = LoadReport(read=accounting["rows_read"])
    for step in accounting["steps"]:
        for reason, n in step["dropped"].items():
            report.skipped[reason] += n
            report.examples.setdefault(reason, step["first_seen"].get(reason, step["step"]))
    for split, stats in (accounting.get("tokens") or {}).items():
        if split in ("train", "eval"):
            for reason, n in stats["not_tokenized"].items():
                report.skipped[reason] += n
                report.examples.setdefault(reason, f"{prepared.path} {split}")
    if prepared.splits.get("test"):
        reason = "held out in the test split (not trained on)"
        report.skipped[reason] += prepared.splits["test"]
        report.examples.setdefault(reason, f"{prepared.path}/test.jsonl")
    return report


def training_datasets(prepared: Prepared, recipe: Recipe):
    """(train, validation or None, LoadReport) from a prepared directory's tokenized train and eval splits."""
    from datasets import Dataset

    d = recipe.data
    where = str(prepared.path)
    _require_tokens(prepared)
    report = load_report(prepared)
    sft = recipe.train.objective == "sft"
    packing = True if d.packing is None else d.packing

    def view(split: str):
        ds = prepared.tokenized(split)
        if ds is None:
            return None
        if sft:
            out = sft_examples(ds, d.max_length, report)
            report.kept += len(out)
        else:
            blocks = pretrain_blocks(ds["input_ids"], d.max_length, packing, report)
            report.kept += len(ds)
            out = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
        return out if len(out) else None

    train = view("train")
    if train is None:
        raise TailorError(f"no usable training rows for {recipe.train.objective} in {where}: {report.summary()}", where=where,
                          fix="sft needs conversations with an assistant turn within data.max_length, pretrain any text; "
                              "check `tailor data inspect` on it")
    return train, view("eval"), report


def alignment_records(recipe: Recipe, tokenizer):
    """(train records, eval records, LoadReport) for the preference and GRPO objectives: the prepared directory's
    canonical records (pairs, labelled answers and prompts stay records; tailor.data.alignment tokenizes them).
    The report counts what preparation dropped; the rows each objective cannot use are counted by it."""
    from tailor.data.tokenize import NO_LOSS_TOKEN, NOT_TOKENIZED

    prepared = prepare_training_data(recipe, tokenizer)
    report = load_report(prepared)
    for reason in (NOT_TOKENIZED, NO_LOSS_TOKEN):  # SFT's reasons; these objectives count their own
        report.skipped.pop(reason, None)
        report.examples.pop(reason, None)
    return prepared.records("train"), prepared.records("eval"), report
