"""GRPO with verifiable rewards: `train.objective: grpo` on TRL's GRPOTrainer (settings: `grpo`).

    tailor train recipe.yaml            # train.objective: grpo

For each prompt, grpo.num_generations answers are sampled (batched, with the KV cache; TRL's vLLM engine with
grpo.use_vllm on a CUDA machine), scored by grpo.rewards (tailor.training.rewards: built-ins against the row's
reference answer, format, length, language, or your own Python file) summed with their weights, and each answer's
advantage is its reward against its group's mean. grpo.beta > 0 adds a KL penalty to the reference: the base with
the adapter disabled when an adapter trains, a copy of the initial weights otherwise.

train.batch_size counts answers per device and step: it must be a multiple of grpo.num_generations (batch_size /
num_generations prompts per step). Logged per step: reward (and per reward function its mean and std),
reward_std, kl, completions/mean_length, clip ratios.
"""

from __future__ import annotations

import logging

from tailor.config import Recipe
from tailor.errors import TailorError
from tailor.training import phases
from tailor.training.phases import TrainingData, TrainResult

log = logging.getLogger("tailor")


def train(recipe: Recipe, callbacks: list | None = None, *, start: tuple | None = None) -> TrainResult:
    """Train with GRPO as the recipe says; writes checkpoints, final/, metrics.jsonl, train_summary.json, config.yaml."""
    from tailor.training.alignment import TailorGRPOTrainer, check_supported
    from tailor.training.rewards import reward_functions

    check_supported(recipe)
    check_settings(recipe)
    rewards = reward_functions(recipe.grpo.rewards)  # a broken reward file fails before any model loads
    run = phases.start(recipe)
    model, tokenizer, base_dir = start or phases.load_causal_lm(recipe, run.out)
    data = grpo_data(recipe, tokenizer)
    model, parameters = phases.prepare_model(recipe, model)
    if run.precision_check:  # a GRPO batch is generated, not read: confirming bf16 on it is not possible
        run.precision, run.precision_check = "fp32", False
        run.precision_reason = "grpo: auto keeps fp32 on CPUs (bf16 is confirmed on a data batch, which GRPO generates)"
    # Without an adapter TRL loads the reference from the model's own folder: the initial weights.
    model.config._name_or_path = str(base_dir)
    tokenizer.padding_side = "left"  # generation appends to the right end of every prompt
    trainer = phases.build_trainer(TailorGRPOTrainer, recipe, run, model, tokenizer, data, callbacks,
                                   reward_funcs=rewards)
    fitted = phases.fit(trainer, recipe, run, data)
    return phases.finish(trainer, recipe, run, data, tokenizer, base_dir, parameters, fitted)


def check_settings(recipe: Recipe) -> None:
    """train.batch_size (answers per step) must hold whole groups of grpo.num_generations answers; grpo.use_vllm
    needs vLLM and a CUDA GPU."""
    import importlib.util

    import torch

    t, g = recipe.train, recipe.grpo
    if g.use_vllm and (not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None):
        raise TailorError("grpo.use_vllm needs a CUDA GPU and the vllm package", where="grpo.use_vllm",
                          fix="set grpo.use_vllm=false (generation then runs in transformers with the KV cache), "
                              "or pip install vllm on a CUDA machine")
    if (t.batch_size * t.grad_accum) % g.num_generations:
        raise TailorError(f"train.batch_size x train.grad_accum = {t.batch_size * t.grad_accum} answers per step is "
                          f"not a multiple of grpo.num_generations={g.num_generations}", where="train.batch_size",
                          fix=f"set train.batch_size to a multiple of {g.num_generations} (each prompt's answers are "
                              "scored against each other)")


def grpo_data(recipe: Recipe, tokenizer) -> TrainingData:
    """Prompts and their reference answers from the prepared data (see tailor.data.alignment.grpo_rows)."""
    from datasets import Dataset

    from tailor.data.alignment import grpo_rows
    from tailor.data.training_data import alignment_records
    from tailor.training.rewards import needs_reference

    d, g = recipe.data, recipe.grpo
    need = needs_reference(g.rewards)
    train_records, eval_records, report = alignment_records(recipe, tokenizer)
    train = grpo_rows(train_records, report, g.reference_field, need, g.missing_reference, d.system_prompt)
    val = grpo_rows(eval_records, type(report)(), g.reference_field, need, g.missing_reference, d.system_prompt)
    log.info("data: %s", report.summary())
    if not train:
        raise TailorError(f"no GRPO prompts to train on: {report.summary()}", where="data.train / data.sources",
                          fix="grpo trains on conversations ending with a user turn (or whose last assistant turn is "
                              "the reference answer), with the reference in grpo.reference_field")
    return TrainingData(Dataset.from_list(train), Dataset.from_list(val) if val else None, None, report,
                        summary={"rows": {"train": len(train), "eval": len(val)}})
