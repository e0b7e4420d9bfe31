"""Regularization the Trainer lacks, as small code on top of it: a dropout override (a model edit), the EMA of
weights (a TrainerCallback) and adversarial training on the embeddings (the step TailorTrainer.training_step runs).

What the Trainer already does (optimizers, schedules, label smoothing, early stopping, best-checkpoint reload)
is switched on through TrainingArguments in tailor.training.args.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from tailor.config import TrainConfig
from tailor.errors import TailorError

log = logging.getLogger("tailor")

# Dropout rates transformers configs use across architectures.
DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "ffn_dropout", "activation_dropout")


def apply_dropout(model, p: float) -> list[str]:
    """Set every dropout rate the model config declares to `p`, in the config and in the built modules.

    Returns the config fields changed. Adapter dropouts (peft's lora_dropout) are left alone: they have their
    own setting. Raises TailorError when the config declares no dropout rate.
    """
    cfg = model.config
    fields = [f for f in DROPOUT_FIELDS if isinstance(getattr(cfg, f, None), (int, float)) and not isinstance(getattr(cfg, f), bool)]
    if not fields:
        raise TailorError(f"train.dropout: the {type(cfg).__name__} of this model declares no dropout rate",
                          where="train.dropout", fix=f"leave train.dropout unset; fields looked for: {', '.join(DROPOUT_FIELDS)}")
    for f in fields:
        setattr(cfg, f, p)
    # Modules copy rates at construction (as floats or nn.Dropout layers), so the built model is updated too.
    for name, module in model.named_modules():
        if "lora_" in name:
            continue
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        for f in fields:
            if isinstance(getattr(module, f, None), float):
                setattr(module, f, p)
    log.info("dropout %.3g set on %s", p, ", ".join(fields))
    return fields


class WeightEMA(TrainerCallback):
    """Exponential moving average of the trainable weights, updated after every optimizer step.

    shadow <- decay * shadow + (1 - decay) * weight, starting from the weights before the first step.
    `swap(model)` exchanges the live weights with the averages (call it twice to undo).
    """

    FILE = "ema_state.safetensors"  # inside each checkpoint, so a resumed run continues the same average

    def __init__(self, decay: float):
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}
        self._restored: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, model=None, **kw):
        live = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if self._restored is not None:
            if set(self._restored) != set(live):
                raise TailorError("the checkpoint's EMA weights do not match this model's trainable weights",
                                  where=WeightEMA.FILE, fix="resume with the recipe the checkpoint was written with")
            self.shadow = {n: self._restored[n].to(device=p.device, dtype=p.dtype) for n, p in live.items()}
            self._restored = None
        else:
            self.shadow = {n: p.detach().clone() for n, p in live.items()}

    def on_save(self, args, state, control, **kw):
        from pathlib import Path

        from safetensors.torch import save_file

        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            save_file({n: t.detach().contiguous().cpu() for n, t in self.shadow.items()}, str(folder / self.FILE))

    def restore(self, checkpoint) -> None:
        """Continue from the averages saved in `checkpoint` (used at the next on_train_begin)."""
        from pathlib import Path

        from safetensors.torch import load_file

        path = Path(checkpoint) / self.FILE
        if not path.is_file():
            raise TailorError(f"{Path(checkpoint).name} holds no EMA state ({self.FILE}), so the average cannot continue",
                              where=str(path), fix="resume with the recipe the checkpoint was written with "
                              "(train.ema_decay), or start a new train.output_dir")
        self._restored = load_file(str(path))

    def on_step_end(self, args, state, control, model=None, **kw):
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.shadow:
                    self.shadow[n].lerp_(p.detach(), 1 - self.decay)

    def swap(self, model) -> None:
        """Exchange the model's trainable weights with the EMA weights in place."""
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.shadow:
                    tmp = p.detach().clone()
                    p.copy_(self.shadow[n])
                    self.shadow[n] = tmp


@dataclass(frozen=True)
class Adversarial:
    """Adversarial training on the input embedding matrix: FGM (one step of size epsilon) or PGD (`steps` steps of
    size `alpha`, default epsilon / steps, projected into the L2 ball of radius epsilon)."""

    method: str  # "fgm" | "pgd"
    epsilon: float
    alpha: float | None = None
    steps: int = 3

    @classmethod
    def from_config(cls, t: TrainConfig) -> "Adversarial | None":
        """train.adversarial* as an Adversarial, or None for train.adversarial=none."""
        if t.adversarial == "none":
            return None
        return cls(t.adversarial, t.adversarial_epsilon, t.adversarial_alpha, t.adversarial_steps)


def adversarial_step(trainer, clean_step, model, inputs, num_items_in_batch, adv: Adversarial):
    """One micro-batch of `clean_step` (the Trainer's own training_step) plus an adversarial pass (FGM or PGD).

    After the clean backward, g = this micro-batch's own embedding gradient (gradient accumulation is
    respected). FGM moves the matrix by epsilon * g / ||g|| and runs a second forward/backward, which adds the
    adversarial gradient to the clean one. PGD (Madry et al.) takes `steps` ascent steps of size `alpha`, each
    projected back into the L2 ball of radius epsilon around the clean matrix; the intermediate steps only compute
    the embedding gradient (torch.autograd.grad, so accumulated parameter gradients stay untouched) and the last one
    adds its gradient like FGM's. The matrix is restored bit for bit; frozen embeddings (LoRA) get a gradient only
    for this purpose. Returns the clean loss, for logging.
    """
    epsilon = adv.epsilon
    alpha = adv.alpha if adv.alpha is not None else epsilon / adv.steps
    rounds = 1 if adv.method == "fgm" else adv.steps
    emb = trainer.model.get_input_embeddings().weight
    frozen = not emb.requires_grad
    if frozen:
        emb.requires_grad_(True)
    before = None if emb.grad is None else emb.grad.detach().clone()
    loss = clean_step(model, dict(inputs), num_items_in_batch)
    grad = emb.grad.detach().clone() if before is None else emb.grad.detach() - before
    if frozen:
        emb.grad = None
        emb.requires_grad_(False)
    backup = emb.detach().clone()
    try:
        for step in range(rounds):
            norm = grad.norm()
            if not (torch.isfinite(norm) and norm > 0):
                break
            with torch.no_grad():
                emb.add_(grad, alpha=(epsilon if adv.method == "fgm" else alpha) / norm.item())
                delta = emb - backup
                if adv.method == "pgd" and delta.norm() > epsilon:  # back into the epsilon ball
                    emb.copy_(backup + delta * (epsilon / delta.norm()))
            if step == rounds - 1:
                clean_step(model, dict(inputs), num_items_in_batch)
                break
            emb.requires_grad_(True)
            try:
                with trainer.compute_loss_context_manager():
                    adv_loss = trainer.compute_loss(model, dict(inputs), num_items_in_batch=num_items_in_batch)
                grad = torch.autograd.grad(adv_loss, emb)[0].detach()
            finally:
                emb.requires_grad_(not frozen)
    finally:
        with torch.no_grad():
            emb.copy_(backup)
        if frozen:
            emb.grad = None
    return loss
