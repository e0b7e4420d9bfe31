"""Preference optimization: `train.objective` dpo, orpo, kto or simpo, on TRL's trainers (settings: `preference`).

    tailor train recipe.yaml            # train.objective: dpo | orpo | kto | simpo

The recipe reads top to bottom like recipes/lm.py: start the run, load the model, build the rows (preference
pairs or KTO's labelled answers, tokenized by the SFT chat-template code in tailor.data.alignment), apply the
adapter, pick the reference model (dpo and kto: the base with the adapter disabled when an adapter trains, a
frozen copy with full or freeze training; orpo and simpo need none), build the trainer (TRL's config from
tailor.training.args, tailor's callbacks), train, save.
"""

from __future__ import annotations

import copy
import logging

from tailor.config import Recipe
from tailor.training import phases
from tailor.training.phases import TrainingData, TrainResult

log = logging.getLogger("tailor")

WITH_REFERENCE = ("dpo", "kto")


def train(recipe: Recipe, callbacks: list | None = None, *, start: tuple | None = None) -> TrainResult:
    """Train on preferences as the recipe says; writes checkpoints, final/, metrics.jsonl (rewards/chosen,
    rewards/rejected, rewards/margins, rewards/accuracies, and kl for kto), train_summary.json and config.yaml."""
    from tailor.training.alignment import TRAINERS, check_supported

    check_supported(recipe)
    run = phases.start(recipe)
    model, tokenizer, base_dir = start or phases.load_causal_lm(recipe, run.out)
    data = preference_data(recipe, tokenizer)
    model, parameters = phases.prepare_model(recipe, model)
    confirm_precision(run, model, tokenizer, data, recipe.train.batch_size)
    objective = {"ref_model": reference_model(recipe, model)} if recipe.train.objective in WITH_REFERENCE else {}
    trainer = phases.build_trainer(TRAINERS[recipe.train.objective], recipe, run, model, tokenizer, data, callbacks,
                                   **objective)
    fitted = phases.fit(trainer, recipe, run, data)
    return phases.finish(trainer, recipe, run, data, tokenizer, base_dir, parameters, fitted)


def preference_data(recipe: Recipe, tokenizer) -> TrainingData:
    """The prepared data's preference pairs (dpo, orpo, simpo) or labelled answers (kto; pairs count as one good
    and one bad answer) as token rows; every row left out is counted in the data report."""
    from datasets import Dataset

    from tailor.data.alignment import kto_rows, preference_rows
    from tailor.data.training_data import alignment_records
    from tailor.errors import TailorError

    d, objective = recipe.data, recipe.train.objective
    train_records, eval_records, report = alignment_records(recipe, tokenizer)
    make = kto_rows if objective == "kto" else preference_rows
    train = make(train_records, tokenizer, d.max_length, report, d.system_prompt)
    val = make(eval_records, tokenizer, d.max_length, type(report)(), d.system_prompt) if eval_records else []
    log.info("data: %s", report.summary())
    if not train:
        shape = ("conversations whose last answer has a true/false label" if objective == "kto"
                 else "preference pairs (prompt, chosen, rejected)")
        raise TailorError(f"no usable training rows for train.objective={objective}: {report.summary()}",
                          where="data.train / data.sources", fix=f"{objective} trains on {shape}; check `tailor data inspect`")
    if objective == "kto" and len({r["label"] for r in train}) < 2:
        raise TailorError("kto needs both good (label true) and bad (label false) answers; the training rows have "
                          f"only label {train[0]['label']}", where="data.train", fix="add rows with the other label")
    return TrainingData(Dataset.from_list(train), Dataset.from_list(val) if val else None, None, report,
                        summary={"rows": {"train": len(train), "eval": len(val)}})


def reference_model(recipe: Recipe, model):
    """None with a peft adapter (TRL then disables the adapter to score the reference), else a frozen copy."""
    from tailor.adapters import is_peft_method

    if is_peft_method(recipe.adapter.method):
        return None
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    log.info("reference model: a frozen copy of the initial weights (adapter.method=%s)", recipe.adapter.method)
    return ref


def confirm_precision(run, model, tokenizer, data: TrainingData, batch_size: int) -> None:
    """auto's bf16 on a CPU is kept only when a bf16 forward of the first rows (prompt + first answer, loss on the
    answer) matches fp32 (tailor.training.phases.confirm_precision)."""
    if not run.precision_check:
        return
    from datasets import Dataset

    from tailor.data.packing import PadCollator

    first = [data.train[i] for i in range(min(batch_size, len(data.train)))]
    answer = "chosen_ids" if "chosen_ids" in first[0] else "completion_ids"
    rows = Dataset.from_list([{"input_ids": r["prompt_ids"] + r[answer],
                               "labels": [-100] * len(r["prompt_ids"]) + r[answer]} for r in first])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    phases.confirm_precision(run, model, TrainingData(rows, None, PadCollator(pad), data.report), batch_size)
