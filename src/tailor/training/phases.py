"""The phases every training recipe is made of, in the order a recipe calls them:

    run = start(recipe)                              checks, run folder, config.yaml, device, precision, seed
    model, tokenizer, base_dir = load_causal_lm(...) (or the recipe's own loading)
    data = TrainingData(...)                         the recipe's own datasets and collator
    model, parameters = prepare_model(recipe, model) dropout, adapter, parameter counts
    trainer = build_trainer(TailorTrainer or a subclass, ...)
                                                     TrainingArguments (tailor.training.args), callbacks (telemetry,
                                                     metrics.jsonl, TensorBoard, yours, early stopping, EMA),
                                                     adversarial steps, the progress display
    output = fit(trainer, recipe, run, data)         resume checks, checkpoint manifests, trainer.train()
    return finish(trainer, recipe, run, data, ...)   final/, final_ema/, train_summary.json -> TrainResult

Transformers' Trainer (with accelerate underneath) keeps torchrun, DDP, FSDP and DeepSpeed available, and gives
exact resume: checkpoints hold optimizer, scheduler, RNG states and the data position.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from tailor.config import Recipe, save_recipe
from tailor.errors import TailorError
from tailor.training.checkpoints import latest_checkpoint
from tailor.training.distributed import is_main_process

if TYPE_CHECKING:
    from tailor.training.trainer import TailorTrainer

log = logging.getLogger("tailor")


@dataclass
class TrainResult:
    """What every recipe returns: the run folder, the trained weights (or adapter), and train_summary.json's numbers."""

    output_dir: Path
    final_dir: Path           # the trained model, or the adapter for LoRA
    base_dir: Path | None     # the base model an adapter applies to
    metrics: dict = field(default_factory=dict)


@dataclass
class Run:
    """Where and how a run trains: decided by `start` before any model is loaded."""

    out: Path
    resume_from: Path | None
    device: torch.device
    precision: str                 # 'fp32' | 'bf16' | 'fp16' (tailor.training.precision)
    precision_reason: str = ""     # why: train_summary.json and metrics.jsonl record it
    precision_check: bool = False  # auto's bf16 still to be confirmed on the first batch (build_trainer)
    plan: object | None = None     # the pre-flight's tailor.plan.Plan (None with train.preflight=off)


@dataclass
class TrainingData:
    """What a recipe trains on: datasets, the collator that batches them, the data stage's report."""

    train: object
    eval: object | None
    collator: Callable
    report: object
    summary: dict = field(default_factory=dict)  # recipe-specific fields for train_summary.json (e.g. packing)


@dataclass
class Fitted:
    """What `fit` returns: the Trainer's TrainOutput and the wall time of trainer.train()."""

    output: object
    seconds: float


def start(recipe: Recipe) -> Run:
    """Refuse what cannot run, pick the checkpoint to resume from, write config.yaml, resolve device and precision,
    seed everything. A used output_dir is refused unless train.resume is set."""
    from transformers import set_seed

    from tailor.models.loading import resolve_device
    from tailor.training.distributed import check_distributed
    from tailor.training.precision import resolve_precision

    t = recipe.train
    device = resolve_device(t.device)
    check_distributed(recipe, device.type)  # before anything is written
    out = Path(t.output_dir)
    # Hashing every file is needed only to resume from it; refusing a used output_dir needs the sizes alone.
    resume_from = latest_checkpoint(out, verify=t.resume) if out.is_dir() else None
    if resume_from and not t.resume:
        raise TailorError(f"{out} already holds checkpoints ({resume_from.name})", where="train.output_dir",
                          fix="set train.resume=true to continue that run, or choose a new train.output_dir")
    if t.resume and resume_from is None:
        log.info("train.resume=true but %s has no complete checkpoint yet: starting from the beginning", out)
    resume_from = resume_from if t.resume else None
    if resume_from is not None:
        from tailor.training.checkpoints import check_resume

        check_resume(resume_from, recipe)  # a recipe that would change the result is refused before anything loads
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():  # under torchrun only rank 0 writes run files
        save_recipe(recipe, out / "config.yaml")
    choice = resolved_before(out, resume_from) if t.precision == "auto" else None
    choice = choice or resolve_precision(t.precision, device, measure=t.tensor_parallel == 1)
    if t.precision == "auto":
        log.info("precision: %s", choice.reason)
    from tailor.training.preflight import preflight

    plan = preflight(recipe, device, out, choice.name)  # before any weight is loaded: a run that cannot fit stops here
    set_seed(t.seed)
    return Run(out, resume_from, device, choice.name, choice.reason, choice.confirm, plan)


def resolved_before(out: Path, resume_from: Path | None):
    """A resumed run keeps the precision `auto` chose when it started (metrics.jsonl records it): measuring again
    could pick another one halfway through the run. None when there is nothing to resume or nothing recorded."""
    from tailor.training.callbacks import read_metrics
    from tailor.training.precision import Precision

    if resume_from is None:
        return None
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r.get("precision") in ("fp32", "bf16", "fp16")]
    if not rows:
        return None
    return Precision(rows[-1]["precision"], f"{rows[-1]['precision']}: kept from the run being resumed "
                                            f"({rows[-1].get('precision_reason') or rows[0].get('precision_reason', '')})")


def load_causal_lm(recipe: Recipe, out: Path):
    """(model, tokenizer, base_dir): model.path loaded for training on the CPU, or model.preset built (and saved
    as out/base, the directory adapters point at)."""
    from tailor.models.loading import load_model, load_tokenizer
    from tailor.models.presets import init_model

    m = recipe.model
    if not m.path and not m.preset:
        raise TailorError("no model given", where="model.path / model.preset",
                          fix="set model.path to a local model directory or model.preset to build one")
    tokenizer = load_tokenizer(m.tokenizer or m.path, trust_remote_code=m.trust_remote_code,
                               chat_template=recipe.data.chat_template)
    if m.preset:
        base_dir = out / "base"  # same seed, same weights on every rank; rank 0 writes them
        model = init_model(m.preset, tokenizer, out_dir=base_dir if is_main_process() else None, seed=recipe.train.seed)
    else:
        base_dir = Path(m.path).resolve()
        model = load_model(base_dir, dtype=m.dtype, trust_remote_code=m.trust_remote_code,
                           device="cpu", for_training=True, tp_size=recipe.train.tensor_parallel)
    return model, tokenizer, base_dir


def prepare_model(recipe: Recipe, model):
    """(model, (trainable, total) parameters): train.dropout set, the adapter applied, the KV cache off under
    gradient checkpointing."""
    from tailor.adapters import apply_adapter
    from tailor.models.loading import count_parameters
    from tailor.training.regularize import apply_dropout

    t = recipe.train
    if t.dropout is not None:
        apply_dropout(model, t.dropout)  # before adapters: their own dropout has its own setting
    model = apply_adapter(model, recipe.adapter)
    trainable, total = count_parameters(model)
    log.info("parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))
    if t.gradient_checkpointing:
        model.config.use_cache = False
    return model, (trainable, total)


def build_trainer(trainer_class: type, recipe: Recipe, run: Run, model, tokenizer, data: TrainingData,
                  callbacks: list | None, **objective) -> "TailorTrainer":
    """`trainer_class` (TailorTrainer or an objective's subclass, whose own settings are `objective`) built with the
    run's TrainingArguments, data, callbacks and train.adversarial, showing progress as a bar or log lines."""
    from tailor.training.args import custom_optimizer, objective_arguments, training_arguments
    from tailor.training.regularize import Adversarial

    t = recipe.train
    if run.precision_check:
        confirm_precision(run, model, data, t.batch_size)
    args = training_arguments(t, run.out, run.device, run.precision, has_validation=data.eval is not None,
                              objective=objective_arguments(recipe))  # TRL's config for dpo/orpo/kto/simpo/grpo
    trainer = trainer_class(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                            data_collator=data.collator, processing_class=tokenizer,
                            callbacks=run_callbacks(recipe, model, tokenizer, run.out, callbacks, run),
                            adversarial=Adversarial.from_config(t), **objective)
    if (custom := custom_optimizer(t)) is not None:
        trainer.optimizer_cls_and_kwargs = custom  # train.optimizer=lamb: a class the Trainer has no name for
    show_progress(trainer, t.objective)
    return trainer


def confirm_precision(run: Run, model, data: TrainingData, batch_size: int) -> None:
    """auto's bf16 kept only when, on the first `batch_size` training rows, bf16 gives the fp32 loss within a tolerance
    and trains faster (tailor.training.precision.confirm_on_first_batch); else fp32 (run.precision and
    run.precision_reason say which, and why)."""
    from tailor.training.precision import Precision, confirm_on_first_batch

    batch = data.collator([data.train[i] for i in range(min(batch_size, len(data.train)))])
    kept = confirm_on_first_batch(Precision(run.precision, run.precision_reason, True), model, batch)
    run.precision, run.precision_reason, run.precision_check = kept.name, kept.reason, False


def run_callbacks(recipe: Recipe, model, tokenizer, out: Path, callbacks: list | None, run: Run | None = None) -> list:
    """The Trainer's callbacks in the order they must see each event: telemetry (throughput/MFU/memory, MoE expert
    load, Prometheus) before metrics.jsonl and TensorBoard, which write what it adds; then the caller's; then early
    stopping and the EMA of weights."""
    from transformers import EarlyStoppingCallback

    from tailor.training.callbacks import JsonlMetrics
    from tailor.training.regularize import WeightEMA
    from tailor.training.telemetry import jsonl_extras, telemetry_callbacks
    from tailor.training.tracking import tracking_callbacks

    t = recipe.train
    telemetry = telemetry_callbacks(recipe, model, tokenizer, is_main_process())
    extras = jsonl_extras(telemetry) + ([lambda: {"precision": run.precision, "precision_reason": run.precision_reason}]
                                        if run is not None else [])
    return [*telemetry, JsonlMetrics(out / "metrics.jsonl", extras),
            *(tracking_callbacks(recipe, out) if is_main_process() else []),
            *(callbacks or []),
            *([EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience)] if t.early_stopping_patience else []),
            *([WeightEMA(t.ema_decay)] if t.ema_decay else [])]


def show_progress(trainer, name: str) -> None:
    """A rich progress bar on a terminal (with ETA and the telemetry) instead of tqdm's; else one line per log event."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tailor.training.callbacks import ConsoleProgress
    from tailor.training.telemetry import RichProgress

    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ConsoleProgress(name))
    else:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(RichProgress(name))


def fit(trainer, recipe: Recipe, run: Run, data: TrainingData) -> Fitted:
    """trainer.train(), resuming from run.resume_from after checking it matches this recipe and data; every
    checkpoint is sealed with a manifest (hashes, data fingerprints) after the other callbacks wrote into it."""
    from tailor.training.checkpoints import CheckpointManifest, check_resume, data_fingerprint

    t = recipe.train
    fingerprints = {"train": data_fingerprint(data.train), "eval": data_fingerprint(data.eval)}
    if run.resume_from is not None:
        check_resume(run.resume_from, recipe, fingerprints, trainer.args.world_size)
        ema = _ema(trainer)
        if ema is not None:
            ema.restore(run.resume_from)
    # Last callback: it seals each checkpoint after every other callback has written into it.
    trainer.add_callback(CheckpointManifest(recipe, fingerprints, t.early_stopping_metric if data.eval is not None else None))
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    return Fitted(output, time.perf_counter() - started)


def _ema(trainer):
    from tailor.training.regularize import WeightEMA

    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, WeightEMA)), None)


def finish(trainer, recipe: Recipe, run: Run, data: TrainingData, tokenizer, base_dir: Path, parameters: tuple[int, int],
           fitted: Fitted) -> TrainResult:
    """Save final/ (and final_ema/), gather the run's numbers into train_summary.json; returns the TrainResult."""
    from tailor.adapters import is_peft_method
    from tailor.training.distributed import world_size
    from tailor.training.telemetry import telemetry_summary

    t = recipe.train
    adapter_base = base_dir if is_peft_method(recipe.adapter.method) else None
    final = save_final(trainer, tokenizer, run.out / "final", adapter_base)
    state = trainer.state
    metrics = {
        "train_loss": fitted.output.training_loss,
        "steps": fitted.output.global_step,
        "seconds": round(fitted.seconds, 2),
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_second": round((state.num_input_tokens_seen or 0) / max(fitted.seconds, 1e-9), 1),
        "trainable_parameters": parameters[0],
        "total_parameters": parameters[1],
        "precision": run.precision,
        "precision_reason": run.precision_reason,
        "device": str(run.device),
        "processes": world_size(),
        "distributed": t.distributed,
        "tensor_parallel": t.tensor_parallel,
        "train_sequences": len(data.train),
        "data_report": {"read": data.report.read, "kept": data.report.kept, "skipped": dict(data.report.skipped)},
        # loss-bearing tokens(/s), MFU, peak memory; also stops a Prometheus endpoint still open
        **telemetry_summary(trainer.callback_handler.callbacks, fitted.seconds),
        **data.summary,
    }
    from tailor.training.preflight import plan_check

    metrics.update(plan_check(run.plan, metrics.get("peak_memory_mb"), run.device, metrics))  # the plan's accuracy, per run
    if data.eval is not None:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    ema = _ema(trainer)
    if ema is not None:
        metrics.update(save_ema(trainer, ema, tokenizer, run.out / "final_ema", data.eval is not None, adapter_base))
    metrics.update(trainer.summary_metrics())
    if is_main_process():
        (run.out / "train_summary.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    result = TrainResult(run.out, final, adapter_base, metrics)
    from tailor.training.tracking import finish_tracking

    finish_tracking(trainer.callback_handler.callbacks, result)  # MLflow / W&B: summary, artefacts, run closed
    return result


def save_final(trainer, tokenizer, final: Path, adapter_base: Path | None) -> Path:
    """The trained model (or adapter, pointing at `adapter_base`) and tokenizer as a Hugging Face folder."""
    from tailor.training.distributed import save_model

    save_model(trainer, final)  # FSDP: every rank joins the gather, rank 0 writes
    if is_main_process():
        _save_beside(trainer, tokenizer, final, adapter_base)
    return final


def save_ema(trainer, ema, tokenizer, ema_dir: Path, evaluate: bool, adapter_base: Path | None) -> dict:
    """Save the EMA weights as `ema_dir` (same layout as final/) and evaluate them; the live weights come back after."""
    ema.swap(trainer.model)
    try:
        if is_main_process():  # DDP replicas (and their EMAs) are identical; evaluate below runs on all ranks
            trainer.model.save_pretrained(ema_dir, safe_serialization=True)
            _save_beside(trainer, tokenizer, ema_dir, adapter_base)
        return {"eval_loss_ema": trainer.evaluate(metric_key_prefix="eval_ema")["eval_ema_loss"]} if evaluate else {}
    finally:
        ema.swap(trainer.model)


def _save_beside(trainer, tokenizer, folder: Path, adapter_base: Path | None) -> None:
    """What goes next to saved weights: the tokenizer, the adapter's base path, the trainer's own extras."""
    tokenizer.save_pretrained(folder)
    if adapter_base is not None:
        point_adapter_at(folder, adapter_base)
    trainer.save_extras(folder)


def point_adapter_at(adapter_dir: Path, base_dir: Path) -> None:
    """Record the base model's absolute path so merge/eval/chat find it without extra flags."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
    cfg_path.write_text(json.dumps(cfg, indent=2))
