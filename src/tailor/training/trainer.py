"""The training stage's Trainer: transformers' Trainer with tailor's additions as overrides of its public methods.

Nothing is patched onto an instance: adversarial steps are `training_step`, the per-step batch observers
(loss-token counting, step timing) hang off `get_batch_samples`, FSDP on CPUs is set up where the Trainer
builds its accelerator, and what a trainer adds to train_summary.json or to a saved model are the methods
`summary_metrics` and `save_extras`. Objective-specific trainers (classification, distillation) subclass it.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import Trainer

from tailor.training.regularize import Adversarial, adversarial_step


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

    `adversarial`: an Adversarial (FGM/PGD on the input embeddings) or None for plain steps.
    """

    # Causal-LM losses predict labels[t + 1] at position t, so loss-bearing tokens are counted over labels[..., 1:].
    # A trainer whose labels are not shifted (a classification head) sets this to False.
    loss_shifts_labels = True

    def __init__(self, *args, adversarial: Adversarial | None = None, **kwargs):
        self.adversarial = adversarial
        super().__init__(*args, **kwargs)
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

    def summary_metrics(self) -> dict:
        """Fields this trainer adds to train_summary.json (called once, after training)."""
        return {}

    def save_extras(self, folder: Path) -> None:
        """Files this trainer adds beside a saved model (final/, final_ema/)."""
