"""Optimization and regularization options of the training stage, mapped onto transformers' Trainer.

What the Trainer already does (optimizers, schedules, label smoothing, early stopping, best-checkpoint reload)
is switched on through TrainingArguments here; what it lacks (dropout override, EMA of weights, FGM/PGD) is small
code on top: a model edit, a TrainerCallback and a `training_step` wrapper.
"""

from __future__ import annotations

import logging
import types

import torch
from transformers import TrainerCallback

from tailor.config import TrainConfig
from tailor.errors import TailorError

log = logging.getLogger("tailor")

# adamw is torch's fused AdamW (transformers' own default for torch >= 2.8): one kernel per tensor instead of
# ~6 elementwise passes over weights and moments on CPUs too (bench/bench_train_mfu.py).
OPTIMIZERS = {"adamw": "adamw_torch_fused", "sgd": "sgd", "adafactor": "adafactor", "adamw_8bit": "adamw_bnb_8bit"}
SCHEDULERS = {"reduce_on_plateau": "reduce_lr_on_plateau"}  # other names are HF's own
# Dropout rates transformers configs use across architectures.
DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "ffn_dropout", "activation_dropout")


def training_arguments(t: TrainConfig, device: torch.device, has_validation: bool) -> dict:
    """TrainingArguments keywords for the optimizer, schedule, label smoothing and early stopping settings.

    Raises TailorError for combinations that cannot work (8-bit AdamW off CUDA, validation-driven options
    without validation data).
    """
    if t.optimizer == "adamw_8bit":
        if device.type != "cuda":
            raise TailorError(f"train.optimizer=adamw_8bit needs a CUDA GPU (bitsandbytes); this run is on {device.type}",
                              where="train.optimizer", fix="use train.optimizer=adamw or adafactor on this machine")
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise TailorError("train.optimizer=adamw_8bit needs the bitsandbytes package", where="train.optimizer",
                              fix="pip install bitsandbytes, or use train.optimizer=adamw")
    for needs, key in ((t.scheduler == "reduce_on_plateau", "train.scheduler=reduce_on_plateau"),
                       (t.early_stopping_patience > 0, "train.early_stopping_patience")):
        if needs and not has_validation:
            raise TailorError(f"{key} is driven by the validation loss, but this run has no validation data",
                              where=key, fix="set data.eval to a file or data.val_ratio > 0 (or turn the option off)")
    kw: dict = {"optim": OPTIMIZERS[t.optimizer], "lr_scheduler_type": SCHEDULERS.get(t.scheduler, t.scheduler),
                "label_smoothing_factor": t.label_smoothing}
    if t.optimizer == "sgd":
        kw["optim_args"] = f"momentum={t.momentum}"
    if t.scheduler == "cosine_with_restarts":
        kw["lr_scheduler_kwargs"] = {"num_cycles": t.num_cycles}
    elif t.scheduler == "reduce_on_plateau":
        kw["lr_scheduler_kwargs"] = {"patience": t.plateau_patience, "factor": t.plateau_factor}
        kw["metric_for_best_model"] = "eval_loss"
    if t.early_stopping_patience:
        # The best checkpoint can only be reloaded if a checkpoint is written at every evaluation it might win.
        eval_steps = t.eval_steps or t.save_steps
        kw.update(eval_strategy="steps", eval_steps=eval_steps, load_best_model_at_end=True,
                  save_steps=t.save_steps if t.save_steps % eval_steps == 0 else eval_steps,
                  metric_for_best_model=t.early_stopping_metric,
                  greater_is_better=not t.early_stopping_metric.endswith("loss"))
    return kw


def training_callbacks(t: TrainConfig) -> list:
    """The callbacks the settings ask for: early stopping and/or the EMA of weights (EMA comes last)."""
    from transformers import EarlyStoppingCallback

    out: list = []
    if t.early_stopping_patience:
        out.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    if t.ema_decay:
        out.append(WeightEMA(t.ema_decay))
    return out


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


def enable_fgm(trainer, epsilon: float) -> None:
    """FGM: one adversarial pass per micro-batch (see `enable_adversarial`)."""
    enable_adversarial(trainer, "fgm", epsilon)


def enable_adversarial(trainer, method: str, epsilon: float, alpha: float | None = None, steps: int = 3) -> None:
    """Make `trainer.training_step` add an adversarial pass on the input embedding matrix (FGM or PGD).

    After the clean backward, g = this micro-batch's own embedding gradient (gradient accumulation is
    respected). FGM moves the matrix by epsilon * g / ||g|| and runs a second forward/backward, which adds the
    adversarial gradient to the clean one. PGD (Madry et al.) takes `steps` ascent steps of size `alpha`
    (default epsilon / steps), each projected back into the L2 ball of radius epsilon around the clean matrix;
    the intermediate steps only compute the embedding gradient (torch.autograd.grad, so accumulated parameter
    gradients stay untouched) and the last one adds its gradient like FGM's. The matrix is restored bit for
    bit; frozen embeddings (LoRA) get a gradient only for this purpose. The clean loss is returned for logging.
    """
    clean_step = trainer.training_step
    alpha = alpha if alpha is not None else epsilon / steps
    rounds = 1 if method == "fgm" else steps

    def training_step(self, model, inputs, num_items_in_batch=None):
        emb = self.model.get_input_embeddings().weight
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
                    emb.add_(grad, alpha=(epsilon if method == "fgm" else alpha) / norm.item())
                    delta = emb - backup
                    if method == "pgd" and delta.norm() > epsilon:  # back into the epsilon ball
                        emb.copy_(backup + delta * (epsilon / delta.norm()))
                if step == rounds - 1:
                    clean_step(model, dict(inputs), num_items_in_batch)
                    break
                emb.requires_grad_(True)
                try:
                    with self.compute_loss_context_manager():
                        adv_loss = self.compute_loss(model, dict(inputs), num_items_in_batch=num_items_in_batch)
                    grad = torch.autograd.grad(adv_loss, emb)[0].detach()
                finally:
                    emb.requires_grad_(not frozen)
        finally:
            with torch.no_grad():
                emb.copy_(backup)
            if frozen:
                emb.grad = None
        return loss

    trainer.training_step = types.MethodType(training_step, trainer)
