"""The training stage's Trainer: transformers' Trainer with tailor's additions as overrides of its public methods.

Nothing is patched onto an instance: adversarial steps are `training_step`, the per-step batch observers
(loss-token counting, step timing) hang off `get_batch_samples`, FSDP on CPUs is set up where the Trainer
builds its accelerator, and what a trainer adds to train_summary.json or to a saved model are the methods
`summary_metrics` and `save_extras`. Objective-specific trainers (classification, distillation) subclass it.

`loss_logits=True` (the LM recipe's default, `train.logits: loss`) runs the output layer and the cross-entropy only at
the positions whose next token carries loss, through transformers' own `logits_to_keep` (a boolean mask per row) and
`shift_labels`: the same loss and gradients, without the vocabulary-wide product at prompt, padding and
document-boundary positions.
"""

from __future__ import annotations

import time
from pathlib import Path

import inspect
import logging

import torch
from transformers import Trainer

from tailor.training.regularize import Adversarial, adversarial_step

log = logging.getLogger("tailor")


class BatchObserver:
    """A callback that also sees the micro-batches of each optimizer step as the trainer fetches them.

    TailorTrainer calls `attach(trainer)` once when it is built and `on_batches` on every step; put the
    observer in the Trainer's callbacks as usual.
    """

    def attach(self, trainer: "TailorTrainer") -> None:
        """Called once, at the end of the trainer's construction."""

    def on_batches(self, trainer: "TailorTrainer", batches: list, started: float) -> None:
        """The step's micro-batches, fetched from `started` (time.perf_counter()) on."""


class TailorTrainer(Trainer):
    """transformers' Trainer plus adversarial training, batch observers, FSDP on CPUs and explicit summary/save hooks.

    `adversarial`: an Adversarial (FGM/PGD on the input embeddings) or None for plain steps. `loss_logits`: compute
    logits only where the loss reads them (see the module's docstring); it falls back to every position, with one
    line saying why, where that would not give the same loss.
    """

    # Causal-LM losses predict labels[t + 1] at position t, so loss-bearing tokens are counted over labels[..., 1:].
    # A trainer whose labels are not shifted (a classification head) sets this to False.
    loss_shifts_labels = True

    def __init__(self, *args, adversarial: Adversarial | None = None, loss_logits: bool = False, **kwargs):
        self.adversarial = adversarial
        super().__init__(*args, **kwargs)
        self.loss_logits, self.loss_logits_reason = loss_logits, "train.logits: all" if not loss_logits else ""
        if loss_logits:
            why_not = loss_logits_unsupported(self.model, self.label_smoother is not None)
            if why_not:
                self.loss_logits, self.loss_logits_reason = False, why_not
                log.info("logits: computed at every position (%s)", why_not)
        for observer in self.batch_observers():
            observer.attach(self)

    def batch_observers(self) -> list[BatchObserver]:
        """The callbacks that see each step's micro-batches."""
        return [c for c in self.callback_handler.callbacks if isinstance(c, BatchObserver)]

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        # accelerate sets up FSDP on accelerator devices only; on CPUs `fsdp` would silently train as DDP.
        if self.args.fsdp_plugin_args is not None and not self.is_fsdp_enabled and self.args.use_cpu:
            from tailor.training.distributed import fsdp_on_cpu

            fsdp_on_cpu(self.accelerator, self.args.fsdp_plugin_args)
            self.is_fsdp_enabled = True

    def _track_num_input_tokens(self, inputs):
        # The Trainer sums every process's batch; the processes of a tensor-parallel group share one batch.
        before = self.state.num_input_tokens_seen
        super()._track_num_input_tokens(inputs)
        if (tp := self.get_tp_size()) > 1:
            self.state.num_input_tokens_seen = before + (self.state.num_input_tokens_seen - before) // tp

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        started = time.perf_counter()
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        for observer in self.batch_observers():
            observer.on_batches(self, batches, started)
        return batches, num_items

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.adversarial is None:
            return super().training_step(model, inputs, num_items_in_batch)
        return adversarial_step(self, super().training_step, model, inputs, num_items_in_batch, self.adversarial)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        if not self.loss_logits or return_outputs or labels is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Position t predicts labels[t + 1] (transformers' ForCausalLMLoss shift): keep the positions whose shifted
        # label is not ignored, row by row; the model returns their logits flattened, in the order of shift_labels.
        shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
        keep = shifted != -100
        inputs = {**inputs, "logits_to_keep": keep, "shift_labels": shifted[keep]}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def summary_metrics(self) -> dict:
        """Fields this trainer adds to train_summary.json (called once, after training)."""
        return {"logits": "loss positions" if self.loss_logits else f"all positions ({self.loss_logits_reason})"}

    def save_extras(self, folder: Path) -> None:
        """Files this trainer adds beside a saved model (final/, final_ema/)."""


def loss_logits_unsupported(model, label_smoothing: bool) -> str:
    """Why logits cannot be limited to the loss positions for this model ('' when they can)."""
    if label_smoothing:
        return "train.label_smoothing smooths over the model's own shifted logits"
    config = getattr(model, "peft_config", None)
    if config and any(c.is_prompt_learning and c.peft_type.value != "PREFIX_TUNING" for c in config.values()):
        return "prompt tuning prepends virtual tokens to every row"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return f"{type(base).__name__}.forward takes no logits_to_keep"
    return ""
