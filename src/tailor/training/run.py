"""The training stage: `run(recipe) -> TrainResult`, built on transformers' Trainer.

Trainer (with accelerate underneath) keeps torchrun, DDP, FSDP and DeepSpeed available, and gives
exact resume: checkpoints hold optimizer, scheduler, RNG states and the data position.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tailor.config import Recipe, save_recipe
from tailor.errors import TailorError

log = logging.getLogger("tailor")


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path           # the trained model, or the adapter for LoRA
    base_dir: Path | None     # the base model an adapter applies to
    metrics: dict = field(default_factory=dict)


def latest_checkpoint(output_dir: Path, verify: bool = True) -> Path | None:
    """The newest complete checkpoint-N folder: its manifest.json exists and every file matches its sha256
    (with verify=False only the sizes are checked: cheap, for deciding whether a run directory is in use).

    Newer incomplete folders (a save cut short by a crash) are skipped with a warning naming them.
    """
    from tailor.training.checkpoints import latest_complete

    return latest_complete(output_dir, full=verify)


def _collator_and_packing(recipe: Recipe, tokenizer, model, train_ds, val_ds, report):
    """SFT with data.packing: packed rows + PackingCollator (block-diagonal attention); else PadCollator."""
    from tailor.data.dataset import PadCollator
    from tailor.data.packing import PackingCollator, check_attention, pack_dataset

    if recipe.train.objective != "sft" or not recipe.data.packing:
        return train_ds, val_ds, PadCollator(tokenizer.pad_token_id), None
    check_attention(model, recipe.train.batch_size)
    from tailor.runtime.packed_attention import use_packed_attention

    if use_packed_attention(model):  # sdpa per sample: the masked blocks of a packed row are never computed
        log.info("packing: attention runs per sample (tailor_packed_sdpa)")
    train_ds, stats = pack_dataset(train_ds, recipe.data.max_length, recipe.train.seed, report)
    if val_ds is not None:
        val_ds, _ = pack_dataset(val_ds, recipe.data.max_length, recipe.train.seed)
    log.info("packing: %d samples -> %d sequences of <= %d tokens (%.0f%% full)", stats.samples, stats.packed,
             stats.max_length, 100 * stats.fill_ratio)
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == tokenizer.eos_token_id:
        # Packed batches carry no attention mask, so the Trainer counts tokens that differ from the pad id.
        log.warning("pad token == eos token: tokens_seen leaves out EOS tokens; packing.tokens is the exact count")
    return train_ds, val_ds, PackingCollator(tokenizer.pad_token_id), stats


def _load_model_and_tokenizer(recipe: Recipe, out: Path):
    from tailor.models.loading import load_model, load_tokenizer
    from tailor.models.presets import init_model

    m = recipe.model
    if not m.path and not m.preset:
        raise TailorError("no model given", where="model.path / model.preset",
                          fix="set model.path to a local model directory or model.preset to build one")
    tokenizer = load_tokenizer(m.tokenizer or m.path, trust_remote_code=m.trust_remote_code,
                               chat_template=recipe.data.chat_template)
    if m.preset:
        from tailor.training.distributed import is_main_process

        base_dir = out / "base"  # same seed, same weights on every rank; rank 0 writes them
        model = init_model(m.preset, tokenizer, out_dir=base_dir if is_main_process() else None, seed=recipe.train.seed)
    else:
        base_dir = Path(m.path).resolve()
        model = load_model(base_dir, dtype=m.dtype, trust_remote_code=m.trust_remote_code,
                           device="cpu", for_training=True)
    return model, tokenizer, base_dir


def run(recipe: Recipe, callbacks: list | None = None, *, load: Callable | None = None,
        make_trainer: Callable | None = None) -> TrainResult:
    """Train as the recipe says; write checkpoints, final weights, metrics.jsonl and config.yaml to train.output_dir.

    Other stages reuse this set-up with their own model and loss (distillation does): `load(recipe, out_dir) ->
    (model, tokenizer, base_dir)` replaces the model loading, `make_trainer(**kwargs) -> Trainer` the Trainer,
    and a trainer's `summary_metrics() -> dict` joins train_summary.json (its `save_extras(folder)`, if any, adds files
    to final/ and final_ema/). train.objective=classification is set up by `tailor.training.classification`.
    """
    from transformers import Trainer, TrainingArguments, set_seed

    from tailor.adapters import apply_adapter, is_peft_method
    from tailor.data.training_data import build_training_data
    from tailor.models.loading import count_parameters, resolve_device
    from tailor.training.callbacks import ConsoleProgress, JsonlMetrics
    from tailor.training.telemetry import RichProgress, attach_telemetry, jsonl_extras, telemetry_callbacks, telemetry_summary
    from tailor.training.precision import resolve_precision
    from tailor.training.distributed import check_distributed, enable_fsdp_on_cpu, is_main_process, save_model, world_size
    from tailor.training.distributed import training_arguments as distributed_arguments
    from tailor.training.regularize import WeightEMA, apply_dropout, enable_adversarial, training_arguments, training_callbacks

    t = recipe.train
    check_distributed(recipe, resolve_device(t.device).type)  # before anything is written
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

    device = resolve_device(t.device)
    precision, notice = resolve_precision(t.precision, device)
    if notice:
        log.info(notice)
    set_seed(t.seed)
    if t.objective == "classification":  # a label head on the base: its own model, rows, collator and loss
        from tailor.training.classification import setup

        model, tokenizer, base_dir, train_ds, val_ds, report, collator, make_trainer = setup(recipe, out, load, make_trainer)
        packing = None
    else:
        model, tokenizer, base_dir = (load or _load_model_and_tokenizer)(recipe, out)
        train_ds, val_ds, report = build_training_data(recipe, tokenizer)
        train_ds, val_ds, collator, packing = _collator_and_packing(recipe, tokenizer, model, train_ds, val_ds, report)
    log.info("data: %s", report.summary())
    if t.dropout is not None:
        apply_dropout(model, t.dropout)  # before adapters: their own dropout has its own setting
    model = apply_adapter(model, recipe.adapter)
    trainable, total = count_parameters(model)
    log.info("parameters: %s trainable of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))
    if t.gradient_checkpointing:
        model.config.use_cache = False

    options = {**training_arguments(t, device, val_ds is not None), **distributed_arguments(t, device.type)}
    args = TrainingArguments(**{**dict(
        output_dir=str(out),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing,
        logging_steps=t.logging_steps,
        report_to="none",  # TensorBoard is attached below with a fixed log folder
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # rotation is CheckpointManifest's, after each checkpoint is sealed (last K + best)
        eval_strategy=("steps" if t.eval_steps else "epoch") if val_ds is not None else "no",
        eval_steps=t.eval_steps,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=device.type == "cpu",
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not os.isatty(2),
    ), **options})
    extra = training_callbacks(t)
    # Throughput/MFU/memory, MoE expert load, Prometheus: before JsonlMetrics and TensorBoard, which write what they add.
    telemetry = telemetry_callbacks(recipe, model, tokenizer, is_main_process())
    trainer = (make_trainer or Trainer)(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                                        data_collator=collator, processing_class=tokenizer,
                                        callbacks=[*telemetry, JsonlMetrics(out / "metrics.jsonl", jsonl_extras(telemetry)),
                                                   *([_tensorboard(out / "tensorboard")] if is_main_process() else []),
                                                   *(callbacks or []), *extra])
    if t.distributed == "fsdp" and device.type == "cpu":
        enable_fsdp_on_cpu(trainer)
    if t.adversarial != "none":
        enable_adversarial(trainer, t.adversarial, t.adversarial_epsilon, t.adversarial_alpha, t.adversarial_steps)
    if args.disable_tqdm:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ConsoleProgress(t.objective))
    else:  # a terminal: rich's progress bar (with ETA and the telemetry) instead of tqdm's
        from transformers.trainer_callback import ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(RichProgress(t.objective))
    attach_telemetry(trainer, telemetry)
    from tailor.training.checkpoints import CheckpointManifest, check_resume, data_fingerprint

    fingerprints = {"train": data_fingerprint(train_ds), "eval": data_fingerprint(val_ds)}
    if resume_from is not None:
        check_resume(resume_from, recipe, fingerprints, args.world_size)
        for cb in extra:
            if isinstance(cb, WeightEMA):
                cb.restore(resume_from)
    # Last callback: it seals each checkpoint after every other callback has written into it.
    trainer.add_callback(CheckpointManifest(recipe, fingerprints, t.early_stopping_metric if val_ds is not None else None))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    elapsed = time.perf_counter() - started

    final = out / "final"
    save_model(trainer, final)  # FSDP: every rank joins the gather, rank 0 writes
    if is_main_process():
        tokenizer.save_pretrained(final)
        if is_peft_method(recipe.adapter.method):
            _point_adapter_at(final, base_dir)
        if hasattr(trainer, "save_extras"):  # files a trainer adds to a saved model (a classifier adapter's head settings)
            trainer.save_extras(final)
    metrics = {
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "seconds": round(elapsed, 2),
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "tokens_per_second": round((trainer.state.num_input_tokens_seen or 0) / max(elapsed, 1e-9), 1),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "precision": precision,
        "device": str(device),
        "processes": world_size(),
        "distributed": t.distributed,
        "train_sequences": len(train_ds),
        "data_report": {"read": report.read, "kept": report.kept, "skipped": dict(report.skipped)},
        **telemetry_summary(telemetry, elapsed),  # loss-bearing tokens(/s), MFU, peak memory
    }
    if packing is not None:
        metrics["packing"] = packing.to_dict()
    if val_ds is not None:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    ema = next((c for c in extra if isinstance(c, WeightEMA)), None)
    if ema is not None:
        metrics.update(_save_ema(trainer, ema, tokenizer, out / "final_ema", val_ds is not None,
                                 base_dir if is_peft_method(recipe.adapter.method) else None))
    if hasattr(trainer, "summary_metrics"):
        metrics.update(trainer.summary_metrics())
    if is_main_process():
        (out / "train_summary.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return TrainResult(out, final, base_dir if is_peft_method(recipe.adapter.method) else None, metrics)


def _save_ema(trainer, ema, tokenizer, ema_dir: Path, evaluate: bool, adapter_base: Path | None) -> dict:
    """Save the EMA weights as `ema_dir` (same layout as final/) and evaluate them; the live weights come back after."""
    from tailor.training.distributed import is_main_process

    ema.swap(trainer.model)
    try:
        if is_main_process():  # DDP replicas (and their EMAs) are identical; evaluate below runs on all ranks
            trainer.model.save_pretrained(ema_dir, safe_serialization=True)
            tokenizer.save_pretrained(ema_dir)
            if adapter_base is not None:
                _point_adapter_at(ema_dir, adapter_base)
            if hasattr(trainer, "save_extras"):
                trainer.save_extras(ema_dir)
        return {"eval_loss_ema": trainer.evaluate(metric_key_prefix="eval_ema")["eval_ema_loss"]} if evaluate else {}
    finally:
        ema.swap(trainer.model)


def _tensorboard(log_dir: Path):
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


def _point_adapter_at(adapter_dir: Path, base_dir: Path) -> None:
    """Record the base model's absolute path so merge/eval/chat find it without extra flags."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
    cfg_path.write_text(json.dumps(cfg, indent=2))
