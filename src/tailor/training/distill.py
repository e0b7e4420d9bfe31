"""Knowledge distillation's parts: the loss, DistillTrainer, the teacher and the layer-dropped student.

The recipe (tailor.training.recipes.distill) trains the student with the same phases as `tailor train`
(datasets, collators, adapters, callbacks, checkpoints, output layout); only the model loading and the loss differ:

    loss = alpha * KL(softmax(teacher / T) || softmax(student / T)) * T^2 + (1 - alpha) * CE(student, labels)
           [+ hidden_weight * MSE(projection(student last hidden), teacher last hidden)]

Every term is taken over the tokens the hard loss uses (labels != -100, shifted as for next-token CE).
With distill.prompts the teacher first answers unlabeled questions and those chats join the training data
(sequence-level KD, `tailor.training.distill_prompts`).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from tailor.errors import TailorError
from tailor.training.trainer import TailorTrainer

log = logging.getLogger("tailor")

IGNORE = -100
PROJECTION_FILE = "distill_projection.safetensors"


# ---------------------------------------------------------------------------------------------
# The loss


def loss_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
               temperature: float) -> dict[str, torch.Tensor]:
    """Sums over loss tokens: `kd` = KL(teacher_T || student_T) * T^2, `ce` = hard-label CE; `mask` = those tokens.

    Logits are [batch, seq, vocab] and position t predicts labels[t + 1], as in causal-LM cross-entropy.
    """
    s = student_logits[:, :-1].float()
    t = teacher_logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != IGNORE
    s, t, target = s[mask], t[mask], target[mask]
    log_s = F.log_softmax(s / temperature, dim=-1)
    log_t = F.log_softmax(t / temperature, dim=-1)
    kd = F.kl_div(log_s, log_t, log_target=True, reduction="sum") * temperature ** 2
    ce = F.cross_entropy(s, target, reduction="sum")
    return {"kd": kd, "ce": ce, "mask": mask}


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 temperature: float, alpha: float, denominator: float | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{'loss', 'kd', 'ce'}: per-token means (or sums / `denominator`, the Trainer's token count over accumulated batches)."""
    terms = loss_terms(student_logits, teacher_logits, labels, temperature)
    denom = denominator if denominator is not None else terms["mask"].sum().clamp(min=1)
    kd, ce = terms["kd"] / denom, terms["ce"] / denom
    return {"loss": alpha * kd + (1 - alpha) * ce, "kd": kd, "ce": ce}


def hidden_loss_sum(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, labels: torch.Tensor,
                    projection: torch.nn.Module) -> torch.Tensor:
    """Sum over loss tokens of the per-token mean squared error between projected student and teacher states."""
    mask = labels[:, 1:] != IGNORE
    s = projection(student_hidden[:, :-1][mask].to(projection.weight.dtype))
    t = teacher_hidden[:, :-1][mask].to(s.dtype)
    return F.mse_loss(s, t, reduction="none").mean(-1).sum()


class DistillTrainer(TailorTrainer):
    """A Trainer whose loss adds the frozen teacher's soft targets (and optionally hidden states) to the hard labels."""

    def __init__(self, *args, teacher, temperature: float, alpha: float, hidden_weight: float = 0.0,
                 extra_summary: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_summary = extra_summary or {}
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.temperature, self.alpha, self.hidden_weight = temperature, alpha, hidden_weight
        self.vocab = min(_vocab_size(self.model), _vocab_size(teacher))
        self.projection = None
        if hidden_weight > 0:
            s_dim, t_dim = _hidden_size(self.model), _hidden_size(teacher)
            # Not a submodule of the student: it trains with it but is never saved into it.
            self.projection = torch.nn.Linear(s_dim, t_dim, bias=False).to(self.args.device)
            if s_dim == t_dim:
                torch.nn.init.eye_(self.projection.weight)  # a layer-dropped student starts out aligned
        self._parts: dict[str, float] = defaultdict(float)
        self._calls = 0
        self._kl = {"teacher_kl_before": self.teacher_kl()}

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.projection is not None:
            known = {id(p) for g in optimizer.param_groups for p in g["params"]}
            params = [p for p in self.projection.parameters() if id(p) not in known]
            if params:
                optimizer.add_param_group({"params": params, "weight_decay": 0.0})
        return optimizer

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.projection is not None:  # beside the student in each checkpoint, so a resumed run is exact
            from safetensors.torch import save_file

            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            save_file({k: v.contiguous() for k, v in self.projection.state_dict().items()}, str(folder / PROJECTION_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / PROJECTION_FILE
        if self.projection is not None and path.is_file():
            from safetensors.torch import load_file

            self.projection.load_state_dict(load_file(str(path), device=str(self.args.device)))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        need_teacher = self.alpha > 0 or self.hidden_weight > 0
        need_hidden = self.projection is not None
        outputs = model(**inputs, output_hidden_states=need_hidden)
        s_logits = outputs.logits[..., : self.vocab]
        if need_teacher:
            with torch.no_grad():
                t_out = self.teacher(**inputs, output_hidden_states=need_hidden)
            t_logits = t_out.logits[..., : self.vocab]
        else:
            t_logits = s_logits.detach()  # alpha = 0: hard labels only; the KL term is reported, not trained
        # Sum / the Trainer's count of loss tokens over all accumulated batches, as transformers' own CE does.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        parts = distill_loss(s_logits, t_logits, labels, self.temperature, self.alpha, num_items_in_batch)
        loss = parts["loss"]
        if need_hidden:
            hidden = hidden_loss_sum(outputs.hidden_states[-1], t_out.hidden_states[-1], labels, self.projection)
            parts["hidden"] = hidden / (num_items_in_batch if num_items_in_batch is not None
                                        else (labels[:, 1:] != IGNORE).sum().clamp(min=1))
            loss = loss + self.hidden_weight * parts["hidden"]
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss: gradients are averaged across ranks
        if model.training:
            # With num_items_in_batch each micro-batch holds its share of the step's value; without, its own mean.
            step_share = 1.0 / self.current_gradient_accumulation_steps
            scale = 1.0 if num_items_in_batch is not None else step_share
            for name in ("kd", "ce", "hidden"):
                if name in parts:
                    self._parts[name] += parts[name].item() * scale
            self._calls += step_share
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs and self._calls:
            # Per-optimizer-step means of each term since the last log, next to the total loss.
            for name, total in self._parts.items():
                logs[f"{name}_loss"] = round(total / self._calls, 6)
            self._parts.clear()
            self._calls = 0
        super().log(logs, start_time)

    def teacher_kl(self, max_batches: int = 16) -> float:
        """Mean per-token KL(teacher || student) at T=1 on the validation data (else the training data)."""
        data = self.eval_dataset if self.eval_dataset is not None else self.train_dataset
        return teacher_kl(self.model, self.teacher, data, self.data_collator, self.args.per_device_eval_batch_size,
                          self.args.device, max_batches)

    def summary_metrics(self) -> dict:
        """Teacher KL before and after training, the loss settings and the sequence-level KD report."""
        after = self.teacher_kl()
        return {**self._kl, "teacher_kl_after": after,
                "teacher_kl_data": "validation" if self.eval_dataset is not None else "train",
                "distill": {"temperature": self.temperature, "alpha": self.alpha, "hidden_weight": self.hidden_weight},
                **self.extra_summary}


@torch.no_grad()
def teacher_kl(student, teacher, dataset, collator, batch_size: int, device, max_batches: int = 16) -> float:
    """Mean per-token KL(teacher || student) at temperature 1 over the loss tokens of the first batches of `dataset`."""
    from torch.utils.data import DataLoader

    was_training = student.training
    student.eval()
    total, count = 0.0, 0
    vocab = min(_vocab_size(student), _vocab_size(teacher))
    for i, batch in enumerate(DataLoader(dataset, batch_size=batch_size, collate_fn=collator)):
        if i >= max_batches:
            break
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        labels = batch.pop("labels")
        s = student(**batch).logits[..., :vocab]
        t = teacher(**batch).logits[..., :vocab]
        terms = loss_terms(s, t, labels, 1.0)
        total += terms["kd"].item()
        count += int(terms["mask"].sum())
    student.train(was_training)
    return round(total / max(count, 1), 6)


# ---------------------------------------------------------------------------------------------
# Teacher and student


def kept_layers(total: int, keep: int) -> list[int]:
    """`keep` evenly spaced layer indices out of `total`: the first and the last among them (the last alone for 1)."""
    if not 1 <= keep <= total:
        raise TailorError(f"distill.student_layers={keep} but the teacher has {total} decoder layers",
                          where="distill.student_layers", fix=f"choose a number between 1 and {total - 1}")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def drop_layers(model, keep: int):
    """A new float32 model: `model` with `keep` evenly spaced decoder layers (weights copied, config updated)."""
    from transformers import AutoModelForCausalLM

    cfg = model.config.__class__.from_dict(model.config.to_dict())
    total = cfg.num_hidden_layers
    kept = kept_layers(total, keep)
    cfg.num_hidden_layers = len(kept)
    for key, value in list(cfg.to_dict().items()):
        if isinstance(value, list) and len(value) == total:
            setattr(cfg, key, [value[i] for i in kept])  # per-layer lists: layer_types, mlp_layer_types, ...
    for key in ("first_k_dense_replace", "max_window_layers"):
        # "layers below index k" settings (DeepSeek's dense MLPs, Qwen2's sliding windows) count kept layers below k.
        value = getattr(cfg, key, None)
        if isinstance(value, int):
            setattr(cfg, key, sum(i < value for i in kept))
    student = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    new_index = {old: new for new, old in enumerate(kept)}
    pattern = re.compile(r"(^|\.)layers\.(\d+)\.")
    state = {}
    for name, tensor in model.state_dict().items():
        m = pattern.search(name)
        if m is None:
            state[name] = tensor
        elif int(m.group(2)) in new_index:
            state[name[: m.start(2)] + str(new_index[int(m.group(2))]) + name[m.end(2):]] = tensor
    missing, unexpected = student.load_state_dict(state, strict=False)
    tied = set(getattr(student, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise TailorError(f"could not copy the teacher's layers into the student: missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}", where="distill.student_layers",
                          fix="use model.preset for this architecture (its layers are not under `layers.N`)")
    student.generation_config = model.generation_config
    log.info("student: layers %s of the teacher's %d", kept, total)
    return student


def load_teacher(path: str | Path, dtype: str = "auto", trust_remote_code: bool = False):
    """(frozen teacher model on the CPU, its tokenizer) from a model directory or an adapter directory (merged)."""
    from tailor.adapters.loading import is_adapter_dir, load_with_adapter
    from tailor.models.loading import is_model_dir, load_model, load_tokenizer

    p = Path(path)
    if not p.is_dir():
        raise TailorError(f"teacher directory not found: {p}", where="distill.teacher",
                          fix="point distill.teacher at a trained model directory (e.g. runs/quickstart/merged) or an adapter")
    if is_adapter_dir(p):
        model, tokenizer = load_with_adapter(p, dtype=dtype, trust_remote_code=trust_remote_code)
        model = model.merge_and_unload()  # one plain model: faster, and its layers can be copied
    elif is_model_dir(p):
        model = load_model(p, dtype=dtype, trust_remote_code=trust_remote_code, device="cpu")
        tokenizer = load_tokenizer(p, trust_remote_code=trust_remote_code)
    else:
        raise TailorError(f"{p} is neither a model directory (config.json) nor an adapter (adapter_config.json)",
                          where="distill.teacher", fix="point distill.teacher at a model or adapter directory")
    return model.to("cpu").eval().requires_grad_(False), tokenizer


def check_same_vocab(teacher, teacher_tokenizer, student, student_tokenizer) -> None:
    """Soft targets only mean something when token i is the same string for both models."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise TailorError(f"the student's tokenizer ({len(student_tokenizer)} tokens) differs from the teacher's "
                          f"({len(teacher_tokenizer)} tokens)", where="model.tokenizer / distill.teacher",
                          fix="build the student with the teacher's tokenizer: model.tokenizer=<the teacher's directory>")
    vs, vt = _vocab_size(student), _vocab_size(teacher)
    if min(vs, vt) < len(teacher_tokenizer):
        raise TailorError(f"vocabulary sizes differ: student {vs} logits, teacher {vt} logits, tokenizer "
                          f"{len(teacher_tokenizer)} tokens", where="model / distill.teacher",
                          fix="both models need an output row for every token of the shared tokenizer")


def _vocab_size(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def _hidden_size(model) -> int:
    return model.get_input_embeddings().weight.shape[1]
