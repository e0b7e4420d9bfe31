"""plan_run and compare_methods: a recipe's peak memory, speed and verdict before anything is loaded."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tailor.errors import TailorError
from tailor.plan.memory import GIB, MemoryBreakdown, RunSettings, estimate_memory, trained_view
from tailor.plan.shape import ModelShape, config_from_dict, read_config, shape_of
from tailor.plan.speed import (DeviceSpeed, executed_flops, flops_parts, matmul_flops_per_token, measure_device,
                               step_seconds)

FITS, TIGHT = 0.85, 1.0  # peak / device memory: <= 0.85 fits, <= 1.0 tight, above does not fit
METHODS = ("full", "freeze", "lora", "dora", "qlora")


@dataclass
class Fix:
    """A change that makes a run fit: the recipe overrides (or launcher flags) and the plan after it."""

    change: str               # in words: "gradient checkpointing", "micro-batch 2 x accumulation 4", ...
    overrides: list[str]      # key=value overrides (and --nproc N) that apply it
    peak_bytes: int
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    """One run's prediction: memory breakdown and peak, speed and duration, and the verdict on this device.

    Memory is per process (FSDP / ZeRO shard it over `settings.nproc`); `peak_bytes` includes `memory.overhead`.
    Time: `tokens_per_second` for all processes together, `step_seconds` per optimizer step, `epoch_seconds`
    over `train_tokens` (None when the data was not counted), `run_seconds` for train.max_steps or the epochs.
    `not_modelled` says what the prediction leaves out or guessed; `fixes` (when it does not fit) lists the
    smallest changes that make it fit; `recommended` marks compare_methods' choice.
    """

    model: str
    model_type: str
    settings: RunSettings
    parameters: int
    trainable_parameters: int
    adapter_parameters: int
    memory: MemoryBreakdown
    peak_bytes: int
    device: str
    device_memory_bytes: int | None
    verdict: str                       # fits, tight, does not fit (unknown when the device memory is unknown)
    speed: DeviceSpeed | None
    flops_per_token: float
    tokens_per_step: int
    step_seconds: float | None
    tokens_per_second: float | None
    train_tokens: int | None = None
    steps: int | None = None
    epoch_seconds: float | None = None
    run_seconds: float | None = None
    not_modelled: list[str] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    recommended: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["peak_gib"] = round(self.peak_bytes / GIB, 3)
        d["device_memory_gib"] = round(self.device_memory_bytes / GIB, 3) if self.device_memory_bytes else None
        return d


def verdict(peak: int, memory: int | None) -> str:
    """fits (peak <= 85% of memory), tight (<= 100%), does not fit; unknown without a memory size."""
    if not memory:
        return "unknown"
    ratio = peak / memory
    return "fits" if ratio <= FITS else "tight" if ratio <= TIGHT else "does not fit"


def model_shape(recipe=None, model: str | None = None) -> ModelShape:
    """The model's shape: catalog `model` by name, else the recipe's model.path (config.json only) or model.preset."""
    from tailor.plan.catalog import catalog_config

    if model:
        raw = catalog_config(model)
        return shape_of(config_from_dict(raw), raw, name=model)
    m = recipe.model
    if m.path:
        folder = Path(m.path)
        known = catalog_name(folder.name)
        if known and not (folder / "config.json").is_file():
            # not downloaded yet, but a catalog model by its name: plan from the published config.json
            raw = catalog_config(known)
            shape = shape_of(config_from_dict(raw), raw, name=known)
            shape.unknown.append(f"{folder} has no config.json yet: planned from the catalog's {known}")
            return shape
        config, raw = read_config(m.path, m.trust_remote_code)
        return shape_of(config, raw, name=folder.name)
    if m.preset:
        from tailor.models.loading import load_tokenizer
        from tailor.models.presets import build_config

        config = build_config(m.preset, len(load_tokenizer(m.tokenizer)))
        return shape_of(config, config.to_dict(), name=m.preset)
    raise TailorError("no model to plan for", where="model.path / model.preset",
                      fix="set model.path or model.preset in the recipe, or pass --model NAME (a catalog model)")


def catalog_name(folder_name: str) -> str | None:
    """The catalog entry a model folder is named after (Qwen2.5-7B-Instruct -> qwen2.5-7b), or None."""
    from tailor.plan.catalog import catalog

    key = folder_name.lower()
    for suffix in ("-instruct", "-chat", "-base", "-hf"):
        key = key.removesuffix(suffix)
    return key if key in catalog() else None


def settings_from_recipe(recipe, device: str = "cpu", nproc: int = 1) -> RunSettings:
    """The RunSettings a recipe trains with on `device` (precision auto resolved as the trainer will)."""
    a, t, d = recipe.adapter, recipe.train, recipe.data
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") else "fp32"
    dtype = recipe.model.dtype if recipe.model.dtype != "auto" else "float32"
    stage = 2
    if t.distributed == "deepspeed" and getattr(t, "deepspeed_config", None):
        try:
            stage = int(json.loads(Path(t.deepspeed_config).read_text())["zero_optimization"]["stage"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    g = getattr(recipe, "grpo", None)
    grpo = t.objective == "grpo" and g is not None
    # DPO/KTO (and GRPO with a KL term) score a reference: a frozen copy under full / freeze, the base with the
    # adapter disabled under a peft method (tailor.training.recipes.preference.reference_model)
    reference = t.objective in ("dpo", "kto") or (grpo and g.beta > 0)
    return RunSettings(method=a.method, r=a.r, target_modules=a.target_modules, lora_experts=a.lora_experts,
                       freeze_last_n=a.freeze_last_n, num_virtual_tokens=a.num_virtual_tokens, weight_dtype=dtype,
                       precision=precision, optimizer=t.optimizer, seq_len=d.max_length, batch_size=t.batch_size,
                       grad_accum=t.grad_accum, gradient_checkpointing=t.gradient_checkpointing, nproc=nproc,
                       distributed=t.distributed, fsdp_sharding=t.fsdp_sharding, zero_stage=stage,
                       tensor_parallel=t.tensor_parallel,
                       device=device, padded=not (d.packing or t.objective == "pretrain"), objective=t.objective,
                       reference=reference,
                       generations=g.num_generations if grpo else 0, completion_len=g.max_completion_length if grpo else 0,
                       head_share=head_share(recipe))


def head_share(recipe) -> float:
    """Share of a micro-batch's positions the output layer runs at: with train.logits loss (pretrain / sft, no
    label smoothing, not prompt tuning: tailor.training.trainer.loss_logits_unsupported) the prepared data's loss
    tokens over the tokens an epoch feeds (`prepared_tokens`: padding included); 1.0 otherwise or unprepared."""
    t = recipe.train
    if getattr(t, "logits", "all") != "loss" or t.objective not in ("sft", "pretrain") or getattr(t, "label_smoothing", 0) > 0 \
            or recipe.adapter.method == "prompt":
        return 1.0
    stats = _train_token_stats(recipe)
    loss, tokens = stats.get("loss_tokens"), prepared_tokens(recipe, stats)
    return max(min(loss / tokens, 1.0), 1e-3) if loss and tokens else 1.0


def teacher_shape(recipe) -> ModelShape | None:
    """The distillation teacher's shape (distill.teacher: a model directory, or an adapter directory whose
    base_model_name_or_path is one); None without a teacher; a TailorError when its config cannot be read."""
    teacher = getattr(getattr(recipe, "distill", None), "teacher", None)
    if not teacher:
        return None
    folder = Path(teacher)
    adapter = folder / "adapter_config.json"
    if adapter.is_file() and not (folder / "config.json").is_file():
        try:
            folder = Path(json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"])
        except (OSError, ValueError, KeyError, TypeError):
            raise TailorError(f"cannot read the base model of the teacher adapter {adapter}", where="distill.teacher",
                              fix="point distill.teacher at a model directory") from None
    config, raw = read_config(folder, recipe.model.trust_remote_code)
    return shape_of(config, raw, name=f"teacher {folder.name}")


def device_memory(device: str) -> int | None:
    """Memory a training process can use on `device`: a GPU's total memory, or the CPU's available memory plus
    what this process already holds."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(info["MemAvailable"].split()[0]) * 1024 + process_rss()
    except (OSError, KeyError, ValueError):
        return None


def proc_status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status in bytes (VmRSS: resident set, VmHWM: its high-water mark); None where
    /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def process_rss() -> int:
    """This process's resident set size (bytes); 0 where /proc is missing."""
    return proc_status_bytes("VmRSS") or 0


def framework_overhead(device: str) -> int:
    """Memory a training process holds before its model exists. CPU: this process's resident set (interpreter,
    torch, transformers, tailor imported: what `tailor train` holds at that point). CUDA: the context, cuBLAS
    workspace and kernels, which max_memory_allocated does not count (about 0.6 GiB)."""
    if device.startswith("cuda"):
        return int(0.6 * GIB)
    return process_rss()


def plan_run(recipe=None, device: str | None = None, memory_gb: float | None = None, nproc: int = 1, *,
             model: str | None = None, settings: RunSettings | None = None, shape: ModelShape | None = None,
             measure: bool = True, train_tokens: int | None = None, speed: DeviceSpeed | None = None,
             calibrate: bool | None = None, prepare=None) -> Plan:
    """Predict one run: peak memory per process (broken down), speed, duration and the verdict on the device.

    recipe: a Recipe/TrainRecipe (its model, adapter, train and data sections); model: a catalog name instead of
    model.path; device: cpu or cuda (default: cuda when available); memory_gb: the device memory to judge against
    (default: measured); nproc: processes (GPUs) sharing the run; settings / shape: given directly instead of read
    from the recipe; measure: probe the device's matmul peak and bandwidth for the time estimate (False: memory
    only); train_tokens: tokens per epoch (default: none, so no epoch time unless train.max_steps is set);
    speed: a DeviceSpeed already measured, used instead of probing; calibrate: time a few real steps of the model
    (tailor.plan.speed.calibrate) instead of the default efficiency: True always, None (default) when the
    model is on disk (model.path or model.preset, not a catalog name) and the calibration's steps need under a quarter
    of the device memory, False never; prepare: applies the method to the calibration's model (tailor's adapters,
    passed by the CLI and the trainer: the plan stage cannot import them).
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise TailorError(f"unknown device '{device}'", where="--device", fix="use cpu or cuda")
    if nproc < 1:
        raise TailorError(f"nproc must be at least 1 (got {nproc})", where="--nproc", fix="pass --nproc 1 or more")
    shape = shape or model_shape(recipe, model)
    s = settings or settings_from_recipe(recipe, device, nproc)
    if s.tensor_parallel > 1:  # its processes are the tensor-parallel group (tailor train --nproc N)
        if s.nproc not in (1, s.tensor_parallel):
            raise TailorError(f"--nproc {s.nproc} with train.tensor_parallel={s.tensor_parallel}: the run has exactly "
                              "that many processes", where="--nproc", fix=f"pass --nproc {s.tensor_parallel} or leave it out")
        s = replace(s, nproc=s.tensor_parallel)
    elif settings is None and nproc > 1 and s.distributed == "none":
        s = replace(s, distributed="ddp")
    teacher_notes = []
    if recipe is not None and not s.teacher_parameters and getattr(getattr(recipe, "distill", None), "teacher", None):
        try:
            teacher = teacher_shape(recipe)
            s = replace(s, teacher_parameters=teacher.parameters, teacher_vocab=teacher.vocab_size)
            teacher_notes = [f"distillation teacher: {n}" for n in teacher.unknown]
        except TailorError as exc:
            teacher_notes = [f"distillation: the teacher's memory is not in the plan ({exc.what})"]
    overhead = framework_overhead(device)
    mem, trainable, adapter_n = estimate_memory(shape, s, overhead)
    if memory_gb is not None:
        if memory_gb <= 0:
            raise TailorError(f"--memory-gb must be above 0 (got {memory_gb})", where="--memory-gb", fix="e.g. --memory-gb 24")
        total = int(memory_gb * GIB)
    else:
        total = device_memory(device)
    notes = list(shape.unknown) + teacher_notes + _not_modelled(s)
    freeze_n = s.freeze_last_n if s.method == "freeze" else None
    fpt, _ = matmul_flops_per_token(shape, s.method, freeze_n, adapter_n, s.seq_len)
    trained = trained_view(s)  # chosen + rejected rows, GRPO's prompt + completion
    tokens = s.batch_size * s.seq_len * s.grad_accum
    replicas = s.nproc // s.tensor_parallel  # processes that train on different batches
    step = tps = None
    if speed is not None or (measure and (device == "cpu" or torch.cuda.is_available())):
        on_disk = model is None and recipe is not None and bool(recipe.model.path or recipe.model.preset)
        if speed is None and (calibrate or (calibrate is None and on_disk)):
            from tailor.plan.speed import calibrate as run_calibration

            try:
                speed = run_calibration(shape, s, budget=(total // 4) if total else None, prepare=prepare)
                if not speed.calibrated:
                    notes.append(f"calibration skipped: {speed.skipped}")
            except (TailorError, RuntimeError, ImportError, ValueError) as exc:  # e.g. qlora without bitsandbytes
                notes.append(f"calibration failed ({type(exc).__name__}: {str(exc)[:160]}): default efficiency used")
        speed = speed or measure_device(device, s.precision)
        if not speed.calibrated:
            notes.append(f"speed: measured matmul peak x default efficiency {speed.efficiency:.0%} "
                         "(--calibrate times real steps of the model)")
        elif speed.method != s.method:
            notes.append(f"speed: calibrated on {speed.method}'s steps, applied to {s.method}")
        lin, attn = executed_flops(shape, trained, adapter_n)
        if s.objective in ("dpo", "kto"):
            _, lin_fwd, _, attn_fwd = flops_parts(shape, "full", None, 0, trained.seq_len)
            lin, attn = lin + lin_fwd, attn + attn_fwd  # the reference model's forward over the same tokens
        lin, attn = lin / s.tensor_parallel, attn / s.tensor_parallel  # each process computes its share of the heads
        step = step_seconds(speed, (lin, attn), trained, mem.weights, mem.activations, mem.gradients + mem.optimizer)
        tps = tokens * replicas / step
    elif measure:
        notes.append(f"no {device} device here: time not measured (memory only)")
    plan = Plan(model=shape.name, model_type=shape.model_type, settings=s, parameters=shape.parameters,
                trainable_parameters=trainable, adapter_parameters=adapter_n, memory=mem, peak_bytes=mem.peak,
                device=device, device_memory_bytes=total, verdict=verdict(mem.peak, total), speed=speed,
                flops_per_token=fpt, tokens_per_step=tokens * replicas, step_seconds=step, tokens_per_second=tps,
                not_modelled=notes)
    if train_tokens is None and recipe is not None:
        train_tokens = prepared_tokens(recipe)
    if train_tokens is None and recipe is not None and recipe.train.max_steps <= 0:
        notes.append("epoch time needs the data's token count: run `tailor data prepare` on the recipe first")
    _durations(plan, recipe, train_tokens)
    return plan


def prepared_tokens(recipe, stats: dict | None = None) -> int | None:
    """Tokens a training epoch processes, from the recipe's prepared data (`tailor data prepare`): rows x
    data.max_length (padded batches, an upper bound) or the token count when packed; None when not prepared.
    `stats`: `_train_token_stats(recipe)` when the caller read it already."""
    stats = _train_token_stats(recipe) if stats is None else stats
    tokens, rows = stats.get("tokens"), stats.get("rows")
    if recipe.data.packing or recipe.train.objective == "pretrain":
        return int(tokens) if tokens else None
    return int(rows) * recipe.data.max_length if rows else None


def _train_token_stats(recipe) -> dict:
    """The prepared data's token counts of the train split (`tailor data prepare`'s report: tokens, loss_tokens,
    rows); {} when the recipe's data is not prepared."""
    from tailor.data.prepare import is_prepared_dir, open_prepared

    folder = getattr(recipe.data, "prepared_dir", None)
    if not folder or not is_prepared_dir(folder):
        return {}
    try:
        report = open_prepared(folder).report()
    except (TailorError, OSError, ValueError):
        return {}
    stats = dict((report.get("tokens") or report.get("extra", {}).get("tokens") or {}).get("train") or {})
    stats.setdefault("rows", report.get("splits", {}).get("train"))
    return {k: v for k, v in stats.items() if v is not None}


def _durations(plan: Plan, recipe, train_tokens: int | None) -> None:
    if plan.step_seconds is None:
        return
    t = recipe.train if recipe is not None else None
    if train_tokens:
        plan.train_tokens = train_tokens
        steps_per_epoch = max(1, math.ceil(train_tokens / plan.tokens_per_step))
        plan.epoch_seconds = steps_per_epoch * plan.step_seconds
        plan.steps = steps_per_epoch * (t.epochs if t is not None else 1)
    if t is not None and t.max_steps > 0:
        plan.steps = t.max_steps
    if plan.steps:
        plan.steps = int(math.ceil(plan.steps))
        plan.run_seconds = plan.steps * plan.step_seconds


def _not_modelled(s: RunSettings) -> list[str]:
    notes = ["data loading, evaluation and checkpoint saving are not in the step time"]
    if s.objective == "kto":
        notes.append("kto: the KL term's mismatched completions (a further forward per batch) are not modelled")
    elif s.objective == "grpo":
        notes.append("grpo: the time of generating the answers is not in the step time (its memory is: the KV cache); "
                     "prompts are planned at data.max_length")
    if s.method in ("prefix", "prompt", "ia3"):
        notes.append(f"{s.method}: the adapter is modelled, its extra activations are not")
    if s.device.startswith("cuda"):
        notes.append("CUDA allocator fragmentation (typically 5-15% above max_memory_allocated) is not included")
    if s.method == "qlora" and not s.device.startswith("cuda"):
        notes.append("qlora needs a CUDA GPU and bitsandbytes: this plan is for a machine that has one")
    if s.tensor_parallel > 1:
        notes.append(f"tensor parallel x {s.tensor_parallel}: attention, MLP, embedding and head weights are counted "
                     "split (DeepSeek-V3's plan splits its MLP only); the activations' all-reduces are not in the time")
    return notes


def compare_methods(recipe=None, device: str | None = None, memory_gb: float | None = None, nproc: int = 1, *,
                    model: str | None = None, methods: tuple[str, ...] = METHODS, measure: bool = True,
                    calibrate: bool | None = None, prepare=None) -> list[Plan]:
    """The recipe's run planned with every method (full, freeze last N, LoRA, DoRA, QLoRA) side by side.

    The recommended plan (`recommended=True`) is the first that fits in the order full, dora, lora, freeze, qlora
    (QLoRA only on CUDA, where bitsandbytes runs); when none fits, the first that is tight. Each plan
    that does not fit gets `fixes`: the smallest changes that make it fit, first the cheapest.
    """
    base = plan_run(recipe, device, memory_gb, nproc, model=model, measure=measure, calibrate=calibrate,
                    prepare=prepare)
    shape = model_shape(recipe, model)
    plans = []
    for method in methods:
        s = replace(base.settings, method=method)
        if method == "qlora":
            s = replace(s, precision="bf16", weight_dtype="bfloat16")
        p = plan_run(recipe, base.device, memory_gb, nproc, model=model, settings=s, shape=shape, measure=measure,
                     speed=base.speed)
        p.fixes = [] if p.verdict in ("fits", "unknown") else find_fixes(p, shape, recipe, memory_gb, model)
        plans.append(p)
    order = {"full": 0, "dora": 1, "lora": 2, "freeze": 3, "qlora": 4}
    # QLoRA's 4-bit base is bitsandbytes on CUDA: planned everywhere, recommended only there
    usable = [p for p in plans if p.settings.method != "qlora" or p.device.startswith("cuda")]
    # peft adapters are not built on tensor-parallel (split) weights: full or freeze only
    usable = [p for p in usable if p.settings.tensor_parallel == 1 or p.settings.method in ("full", "freeze")]
    fitting = [p for p in usable if p.verdict == "fits"] or [p for p in usable if p.verdict == "tight"]
    if fitting:
        min(fitting, key=lambda p: order.get(p.settings.method, 9)).recommended = True
    return plans


def find_fixes(plan: Plan, shape: ModelShape, recipe=None, memory_gb: float | None = None,
               model: str | None = None) -> list[Fix]:
    """Changes that make `plan` fit, cheapest first: gradient checkpointing; a smaller micro-batch with more
    accumulation (same effective batch); both; QLoRA; FSDP over N GPUs (N = 2, 4, 8)."""
    s = plan.settings
    tries: list[tuple[str, list[str], RunSettings]] = []
    if not s.gradient_checkpointing:
        tries.append(("gradient checkpointing", ["train.gradient_checkpointing=true"], replace(s, gradient_checkpointing=True)))
    if s.weight_dtype == "float32" and s.method in ("lora", "dora", "freeze") and s.precision in ("bf16", "fp16"):
        # the frozen base needs no float32 master copy: half the weights, and no autocast copies of them
        half = replace(s, weight_dtype="bfloat16")
        tries.append(("bf16 base weights", ["model.dtype=bfloat16"], half))
        tries.append(("bf16 base weights + gradient checkpointing", ["model.dtype=bfloat16", "train.gradient_checkpointing=true"],
                      replace(half, gradient_checkpointing=True)))
    b = s.batch_size
    while b > 1:
        b //= 2
        acc = s.grad_accum * (s.batch_size // b)
        ov = [f"train.batch_size={b}", f"train.grad_accum={acc}"]
        tries.append((f"micro-batch {b} x accumulation {acc}", ov, replace(s, batch_size=b, grad_accum=acc)))
        tries.append((f"gradient checkpointing + micro-batch {b} x accumulation {acc}",
                      ov + ["train.gradient_checkpointing=true"], replace(s, batch_size=b, grad_accum=acc, gradient_checkpointing=True)))
    if s.method != "qlora" and s.device.startswith("cuda") and s.tensor_parallel == 1:
        tries.append(("QLoRA (4-bit base)", ["adapter.method=qlora"], replace(s, method="qlora", precision="bf16", weight_dtype="bfloat16")))
        tries.append(("QLoRA + gradient checkpointing", ["adapter.method=qlora", "train.gradient_checkpointing=true"],
                      replace(s, method="qlora", precision="bf16", weight_dtype="bfloat16", gradient_checkpointing=True)))
    if s.device.startswith("cuda"):
        for n in (2, 4, 8):
            if n > s.nproc:
                tp_off = ["train.tensor_parallel=1"] if s.tensor_parallel > 1 else []
                tries.append((f"FSDP over {n} GPUs", ["train.distributed=fsdp", *tp_off, f"--nproc {n}"],
                              replace(s, distributed="fsdp", fsdp_sharding="full_shard", nproc=n, tensor_parallel=1)))
    fixes = []
    for change, overrides, settings in tries:
        mem, _, _ = estimate_memory(shape, settings, plan.memory.overhead)
        v = verdict(mem.peak, plan.device_memory_bytes)
        if v == "fits" and all(mem.peak < f.peak_bytes for f in fixes):  # each further fix must save more
            fixes.append(Fix(change, overrides, mem.peak, v))
            if len(fixes) == 3:
                break
    return fixes
