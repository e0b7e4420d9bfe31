"""TRL's preference and RL trainers with tailor's Trainer additions (batch observers, summary and save hooks).

Each class is TailorTrainer + a TRL trainer (both transformers' Trainer subclasses), so the shared phases build,
fit and finish them like the other recipes. What they change in TRL:

- the data arrive tokenized by tailor (tailor.data.alignment: the SFT chat-template code), so TRL's own
  tokenization is skipped (`_prepare_dataset` / `tokenize_row` take the ids as they are);
- with a peft adapter the reference model is the base with the adapter disabled: TRL copies a PeftModel's adapter
  into a second "ref" adapter, which tailor removes (a fresh adapter's copy equals the base anyway, and the
  disabled adapter needs no memory);
- GRPO gets no data collator (it batches prompts itself) and its reward functions from tailor.training.rewards.
"""

from __future__ import annotations

import logging

from trl import DPOTrainer, GRPOTrainer, KTOTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer

from tailor.errors import TailorError
from tailor.training.trainer import TailorTrainer

log = logging.getLogger("tailor")


def _drop_ref_adapter(model) -> None:
    peft_config = getattr(model, "peft_config", None)
    if peft_config and "ref" in peft_config:
        model.delete_adapter("ref")
        model.set_adapter("default")


class _Pretokenized:
    """Skips TRL's tokenization of rows tailor already tokenized; keeps its filter of prompts filling max_length."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if args.max_length is not None:
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
        return dataset


class TailorDPOTrainer(_Pretokenized, TailorTrainer, DPOTrainer):
    """DPO and its loss variants (preference.loss_type) on {prompt_ids, chosen_ids, rejected_ids} rows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _drop_ref_adapter(self.model)

    def summary_metrics(self) -> dict:
        return _last_logged(self, ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"))


class TailorKTOTrainer(TailorTrainer, KTOTrainer):
    """KTO on unpaired {prompt_ids, completion_ids, label} rows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _drop_ref_adapter(self.model)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if args.max_length is not None:
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
        if self.calculate_KL:  # as TRL: the KL term pairs each prompt with the previous row's completion
            def rotate(rows):
                rows["KL_completion_ids"] = [rows["completion_ids"][-1]] + rows["completion_ids"][:-1]
                return rows

            dataset = dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)
        return dataset

    def summary_metrics(self) -> dict:
        return _last_logged(self, ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins"))


class _PairRows:
    """ORPO/CPO (TRL's older trainers) read {prompt_input_ids, chosen_input_ids, chosen_labels, ...}: made here from
    tailor's ids, with the answer cut so prompt + answer fits max_length."""

    def tokenize_row(self, feature, model=None) -> dict:
        if "prompt_ids" not in feature:
            return super().tokenize_row(feature, model)
        prompt = feature["prompt_ids"]
        batch = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for key in ("chosen", "rejected"):
            answer = feature[f"{key}_ids"][:max(0, self.max_length - len(prompt))]
            ids = prompt + answer
            batch.update({f"{key}_input_ids": ids, f"{key}_attention_mask": [1] * len(ids),
                          f"{key}_labels": [-100] * len(prompt) + answer})
        return batch

    def summary_metrics(self) -> dict:
        return _last_logged(self, ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"))


class TailorORPOTrainer(_PairRows, TailorTrainer, ORPOTrainer):
    """ORPO: SFT loss on the chosen answer plus an odds-ratio term (preference.beta = lambda); no reference model."""


class TailorCPOTrainer(_PairRows, TailorTrainer, CPOTrainer):
    """SimPO through TRL's CPOTrainer (loss_type=simpo, cpo_alpha=0): length-normalized, reference-free."""


class TailorGRPOTrainer(TailorTrainer, GRPOTrainer):
    """GRPO: groups of sampled answers per prompt scored by grpo.rewards; KL to the reference with grpo.beta > 0."""

    def __init__(self, *args, data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)  # GRPO batches its prompts itself
        _drop_ref_adapter(self.model)

    def summary_metrics(self) -> dict:
        return _last_logged(self, ("reward", "reward_std", "kl", "completions/mean_length"))


def _last_logged(trainer, keys: tuple[str, ...]) -> dict:
    """The last training log's values of `keys` (train_summary.json: where the objective's own metrics ended)."""
    for entry in reversed(trainer.state.log_history):
        found = {k: entry[k] for k in keys if k in entry}
        if found:
            return {f"last_{k.replace('/', '_')}": v for k, v in found.items()}
    return {}


TRAINERS = {"dpo": TailorDPOTrainer, "kto": TailorKTOTrainer, "orpo": TailorORPOTrainer, "simpo": TailorCPOTrainer,
            "grpo": TailorGRPOTrainer}


def check_supported(recipe) -> None:
    """Refuse what tailor's TRL objectives do not run: adversarial steps (their losses are TRL's own)."""
    if recipe.train.adversarial != "none":
        raise TailorError(f"train.adversarial={recipe.train.adversarial} is not available with "
                          f"train.objective={recipe.train.objective}", where="train.adversarial",
                          fix="set train.adversarial=none (it applies to pretrain, sft and classification)")
