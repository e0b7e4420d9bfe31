"""The one place that builds transformers' `TrainingArguments` from the recipe's `train` section.

TRL's configs (DPOConfig, KTOConfig, ORPOConfig, CPOConfig, GRPOConfig) are TrainingArguments subclasses: the
same builder makes them, with the objective's own keywords from `objective_arguments`.

Every keyword is decided once, by one of the small functions below (each owns its keys; passing them with `**`
to the constructor makes an overlap a TypeError instead of a silent override): the loop and its logging, the
optimizer, the learning-rate schedule, evaluation/checkpointing/early stopping, and the distributed engine.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import TrainingArguments

from tailor.config import Recipe, TrainConfig
from tailor.errors import TailorError

# adamw is torch's fused AdamW (transformers' own default for torch >= 2.8): one kernel per tensor instead of
# ~6 elementwise passes over weights and moments on CPUs too (bench/bench_train_mfu.py).
# lamb: the Trainer gets the optimizer class itself (custom_optimizer); "adamw_torch" only fills TrainingArguments.optim
OPTIMIZERS = {"adamw": "adamw_torch_fused", "sgd": "sgd", "adafactor": "adafactor", "adamw_8bit": "adamw_bnb_8bit",
              "lamb": "adamw_torch"}
SCHEDULERS = {"reduce_on_plateau": "reduce_lr_on_plateau"}  # other names are HF's own


def training_arguments(t: TrainConfig, output_dir: str | Path, device: torch.device, precision: str,
                       has_validation: bool, objective: tuple[type, dict] | None = None) -> TrainingArguments:
    """TrainingArguments for a run of `t` writing to `output_dir` on `device` in `precision` ('fp32'|'bf16'|'fp16').

    `has_validation` says whether the run has validation data (evaluation, early stopping and the plateau
    schedule need it). `objective`: (a TrainingArguments subclass, its own keywords), from `objective_arguments`
    for TRL's trainers. Raises TailorError for settings that cannot work on this machine or without validation.
    """
    from tailor.training.distributed import distributed_arguments

    check_arguments(t, device, has_validation)
    engine = distributed_arguments(t, device.type)
    config_class, own = objective or (TrainingArguments, {})
    if config_class is not TrainingArguments:
        # TRL's configs default gradient_checkpointing (transformers' deprecated alias) to True: keep it equal.
        own = {**own, "gradient_checkpointing": t.gradient_checkpointing and "fsdp" not in engine}
    return config_class(
        **own,
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        label_smoothing_factor=t.label_smoothing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # Under FSDP its own checkpointing (fsdp_config) replaces the Trainer's, which would add an all-gather
        # to the backward pass.
        activation_checkpointing=t.gradient_checkpointing and "fsdp" not in engine,
        logging_steps=t.logging_steps,
        report_to="none",  # TensorBoard is attached by the recipes with a fixed log folder
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=device.type == "cpu",
        # GRPO's batches are prompt rows (the tokens it trains on are generated later): nothing to count there
        include_num_input_tokens_seen="no" if config_class.__name__ == "GRPOConfig" else "non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not os.isatty(2),
        **optimizer_arguments(t),
        **schedule_arguments(t),
        **evaluation_arguments(t, has_validation),
        **engine,
    )


def objective_arguments(recipe: Recipe) -> tuple[type, dict] | None:
    """TRL's config class and its own keywords for train.objective dpo / orpo / kto / simpo / grpo (the `preference`
    and `grpo` sections); None for tailor's own objectives (plain TrainingArguments)."""
    objective, p, g, max_length = recipe.train.objective, recipe.preference, recipe.grpo, recipe.data.max_length
    if objective == "dpo":
        from trl import DPOConfig

        return DPOConfig, {"beta": p.beta, "loss_type": [p.loss_type, *(["sft"] if p.rpo_alpha else [])],
                           "loss_weights": [1.0, p.rpo_alpha] if p.rpo_alpha else None,
                           "label_smoothing": p.label_smoothing, "max_length": max_length, "disable_dropout": False}
    if objective == "kto":
        from trl import KTOConfig

        return KTOConfig, {"beta": p.beta, "desirable_weight": p.desirable_weight, "max_length": max_length,
                           "undesirable_weight": p.undesirable_weight, "disable_dropout": False}
    if objective == "orpo":
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig, {"beta": p.beta, "max_length": max_length, "disable_dropout": False}
    if objective == "simpo":
        from trl.experimental.cpo import CPOConfig

        return CPOConfig, {"beta": p.beta, "loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": p.simpo_gamma,
                           "max_length": max_length, "disable_dropout": False}
    if objective == "grpo":
        from trl import GRPOConfig

        return GRPOConfig, {"num_generations": g.num_generations, "max_completion_length": g.max_completion_length,
                            "temperature": g.temperature, "beta": g.beta, "use_vllm": g.use_vllm,
                            "vllm_mode": "colocate", "log_completions": False, "disable_dropout": False,
                            "reward_weights": [r.weight for r in g.rewards]}
    return None


def check_arguments(t: TrainConfig, device: torch.device, has_validation: bool) -> None:
    """Refuse combinations that cannot work: 8-bit AdamW off CUDA, validation-driven options without validation."""
    if t.optimizer == "adamw_8bit":
        if device.type != "cuda":
            raise TailorError(f"train.optimizer=adamw_8bit needs a CUDA GPU (bitsandbytes); this run is on {device.type}",
                              where="train.optimizer", fix="use train.optimizer=adamw or adafactor on this machine")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TailorError("train.optimizer=adamw_8bit needs the bitsandbytes package", where="train.optimizer",
                              fix="pip install bitsandbytes, or use train.optimizer=adamw")
    if t.optimizer == "lamb" and importlib.util.find_spec("pytorch_optimizer") is None:
        raise TailorError("train.optimizer=lamb needs the pytorch-optimizer package (its Lamb)", where="train.optimizer",
                          fix='pip install -e ".[optim]", or use train.optimizer=adamw')
    for needs, key in ((t.scheduler == "reduce_on_plateau", "train.scheduler=reduce_on_plateau"),
                       (t.early_stopping_patience > 0, "train.early_stopping_patience")):
        if needs and not has_validation:
            raise TailorError(f"{key} is driven by the validation loss, but this run has no validation data",
                              where=key, fix="set data.eval to a file or data.val_ratio > 0 (or turn the option off)")


def custom_optimizer(t: TrainConfig) -> tuple | None:
    """(optimizer class, keywords) for the Trainer's optimizer_cls_and_kwargs when train.optimizer is not one of the
    Trainer's own: lamb = pytorch-optimizer's Lamb (trust ratio per tensor, decoupled weight decay from the
    Trainer's parameter groups, Adam's betas; no bias correction, as in the paper's version 3)."""
    if t.optimizer != "lamb":
        return None
    from pytorch_optimizer import Lamb

    return Lamb, {"lr": t.lr, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decouple": True}


def optimizer_arguments(t: TrainConfig) -> dict:
    """optim (+ optim_args for SGD's momentum)."""
    return {"optim": OPTIMIZERS[t.optimizer], **({"optim_args": f"momentum={t.momentum}"} if t.optimizer == "sgd" else {})}


def schedule_arguments(t: TrainConfig) -> dict:
    """lr_scheduler_type and the schedule's own keywords (restart cycles, plateau patience and factor)."""
    kwargs = {}
    if t.scheduler == "cosine_with_restarts":
        kwargs = {"num_cycles": t.num_cycles}
    elif t.scheduler == "reduce_on_plateau":
        kwargs = {"patience": t.plateau_patience, "factor": t.plateau_factor}
    return {"lr_scheduler_type": SCHEDULERS.get(t.scheduler, t.scheduler), **({"lr_scheduler_kwargs": kwargs} if kwargs else {})}


def evaluation_arguments(t: TrainConfig, has_validation: bool) -> dict:
    """When to evaluate and save, and which metric picks the best checkpoint (early stopping, plateau schedule)."""
    eval_strategy = ("steps" if t.eval_steps else "epoch") if has_validation else "no"
    eval_steps, save_steps, best = t.eval_steps, t.save_steps, {}
    if t.early_stopping_patience:
        # The best checkpoint can only be reloaded if a checkpoint is written at every evaluation it might win.
        eval_strategy, eval_steps = "steps", t.eval_steps or t.save_steps
        save_steps = t.save_steps if t.save_steps % eval_steps == 0 else eval_steps
        best = {"load_best_model_at_end": True, "metric_for_best_model": t.early_stopping_metric,
                "greater_is_better": not t.early_stopping_metric.endswith("loss")}
    elif t.scheduler == "reduce_on_plateau":
        best = {"metric_for_best_model": "eval_loss"}
    return {"eval_strategy": eval_strategy, "eval_steps": eval_steps, "save_strategy": "steps", "save_steps": save_steps,
            "save_total_limit": None,  # rotation is CheckpointManifest's, after each checkpoint is sealed (last K + best)
            **best}
