"""Shared recipe sections: model, adapter, train, eval, distill, refresh (the data section is in data.py).

Every setting is declared once with a type, a default and a one-line description; the command
schemas in recipe.py and commands.py are built from these sections.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class PathRole:
    """Marks a text field as a filesystem path, so loading and saving recipes can find every path from the schema.

    input: something read; relative in a recipe file = relative to that file's folder.
    output: something written (a run directory, a registry file); relative = relative to the working directory.
    On the command line every relative path is relative to the working directory; a saved recipe holds absolute paths.
    """

    def __init__(self, role: Literal["input", "output"], suffixes: tuple[str, ...] = ()):
        self.role = role
        self.suffixes = suffixes  # when set, only values ending so are paths (a chat template: name or .jinja file)

    def applies(self, value: str) -> bool:
        return not self.suffixes or value.endswith(self.suffixes)

    def __repr__(self) -> str:
        return f"PathRole({self.role!r})"


def flag(**cli) -> dict:
    """json_schema_extra that makes a field a command-line flag or positional (see tailor.config.flags):
    positional=True, metavar=..., action="append", flag="--name" (default: --field-name)."""
    return {"cli": {"arg": True, **cli}}


InputPath = Annotated[str, PathRole("input")]
OutputPath = Annotated[str, PathRole("output")]
Dtype = Annotated[Literal["auto", "float32", "bfloat16", "float16"], Field(
    description="Weight dtype; auto = float32 on CPUs without bf16, bf16 on GPUs that have it.")]
Device = Annotated[str | None, Field(description="Force a device (cpu, cuda, mps); default picks the best available.")]
ChatTemplate = Annotated[str | None, PathRole("input", suffixes=(".jinja",)), Field(
    description="Override the tokenizer's chat template: a built-in name (deepseek, chatml) or a .jinja file.")]
Runtime = Annotated[bool, Field(description="CPU inference speed-ups of tailor.runtime (DeepSeek-V3 decode step, routed MoE experts, int8/int4 kernels), installed only with the tested transformers/torch versions; false = transformers' own code path.")]
TrustRemoteCode = Annotated[bool, Field(
    description="Allow custom modelling code shipped inside the model directory (off: it runs arbitrary Python).")]


class Section(BaseModel):
    """A recipe section: unknown keys are rejected, assignments re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    path: InputPath | None = Field(None, description="Local Hugging Face model directory to start from (config.json + safetensors).")
    preset: str | None = Field(None, description="Build a new model from this preset instead of loading one (see `tailor model presets`).")
    tokenizer: InputPath | None = Field(None, description="Tokenizer directory; defaults to model.path. Required with model.preset.")
    dtype: Dtype = "auto"
    trust_remote_code: TrustRemoteCode = False

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        if self.path and self.preset:
            raise ValueError("set either model.path (load a checkpoint) or model.preset (build a new model), not both")
        if self.preset and not self.tokenizer:
            raise ValueError("model.preset needs model.tokenizer: a tokenizer directory (train one with `tailor tokenizer train`)")
        return self


class AdapterConfig(Section):
    method: Literal["full", "lora", "dora", "qlora", "prefix", "prompt", "ia3", "freeze"] = Field("lora", description="full = all weights; lora = low-rank adapters (peft); dora = weight-decomposed LoRA; qlora = LoRA on a 4-bit base (CUDA + bitsandbytes); prefix / prompt = trained virtual tokens (prefix tuning / prompt tuning); ia3 = learned activation scales; freeze = only the last N blocks and the head train.")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout (must be 0 when LoRA reaches fused MoE experts).")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Module names LoRA wraps, or all-linear (every linear layer but the head).")
    rslora: bool = Field(False, description="With lora/dora/qlora: rank-stabilized scaling alpha / sqrt(r) instead of alpha / r.")
    num_virtual_tokens: int = Field(20, ge=1, description="With prefix/prompt: how many trained virtual tokens are prepended.")
    freeze_last_n: int = Field(2, ge=0, description="With method=freeze: how many final transformer blocks train (the head and final norm always do).")
    vision_tower: Literal["frozen", "train"] = Field("frozen", description="Vision-language models: frozen = the vision tower keeps its weights; train = it trains in full (with LoRA: saved beside the adapter).")
    projector: Literal["train", "frozen"] = Field("train", description="Vision-language models: train = the projector from vision features to the language model trains in full (with LoRA: saved beside the adapter); frozen = it keeps its weights.")
    lora_experts: bool | None = Field(None, description="With lora/dora/qlora on a mixture-of-experts model: true = LoRA also wraps the fused expert weights (added to any target_modules list); false = experts and router stay frozen (attention only: peft maps MLP names onto the experts); None = as target_modules says (all-linear reaches experts and router).")

    @model_validator(mode="after")
    def _lora_experts_needs_lora(self) -> "AdapterConfig":
        if self.lora_experts is not None and self.method not in ("lora", "dora", "qlora"):
            raise ValueError(f"adapter.lora_experts applies to lora, dora and qlora, not method={self.method}")
        return self

    @model_validator(mode="after")
    def _rslora_needs_lora(self) -> "AdapterConfig":
        if self.rslora and self.method not in ("lora", "dora", "qlora"):
            raise ValueError(f"adapter.rslora applies to lora, dora and qlora, not method={self.method}")
        return self


class TrainConfig(Section):
    objective: Literal["pretrain", "sft", "classification", "dpo", "orpo", "kto", "simpo", "grpo", "contrastive"] = Field("sft", description="pretrain = loss on all tokens; sft = loss on assistant tokens (end-of-turn included; a vision-language model reads rows with images); contrastive = CLIP-style symmetric InfoNCE between a vision-language model's pooled image features and its captions' text features (vision tower and projector train); classification = a sequence-classification head (AutoModelForSequenceClassification) on the base, trained on {text, label} rows; dpo / orpo / simpo = preference pairs {prompt, chosen, rejected}, kto = answers labelled true/false (settings in `preference`); grpo = sampled answers scored by rewards (settings in `grpo`). All but pretrain/sft/classification are TRL's trainers.")
    output_dir: OutputPath = Field("runs/train", description="Run directory: checkpoints, final model or adapter, metrics.jsonl, TensorBoard logs, resolved config.yaml (input paths absolute). Relative = to the working directory.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when train.max_steps > 0).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = use train.epochs.")
    batch_size: int = Field(8, ge=1, description="Sequences per device per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps (effective batch = batch_size x grad_accum x processes).")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (decoupled for AdamW).")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps for linear warm-up.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "reduce_on_plateau"] = Field("cosine", description="Learning-rate schedule after warm-up; cosine_with_restarts uses train.num_cycles; reduce_on_plateau cuts the LR when the validation loss stops falling (needs validation data).")
    num_cycles: int = Field(1, ge=1, description="Hard restarts of the cosine schedule (train.scheduler=cosine_with_restarts).")
    plateau_patience: int = Field(1, ge=0, description="Evaluations without a better validation loss before reduce_on_plateau cuts the LR.")
    plateau_factor: float = Field(0.1, gt=0, lt=1, description="LR multiplier applied by reduce_on_plateau at each cut.")
    optimizer: Literal["adamw", "sgd", "adafactor", "adamw_8bit", "lamb"] = Field("adamw", description="adamw (torch), sgd (with train.momentum), adafactor, adamw_8bit (bitsandbytes, CUDA only), lamb (layer-wise adaptive moments for large batches, You et al. 2019: Adam's update scaled per tensor by ||weights|| / ||update||; pytorch-optimizer's Lamb, the optim extra; decoupled train.weight_decay).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (train.optimizer=sgd).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss (0 = off).")
    logits: Literal["loss", "all"] = Field("loss", description="train.objective pretrain/sft: loss = the output layer and the cross-entropy run only at the positions whose next token carries loss (answers in SFT; not prompts, padding or packed-row boundaries), through transformers' logits_to_keep: the same loss and gradients with less work (train_summary.json says which ran; label smoothing and prompt tuning fall back to all); all = every position, as transformers computes it.")
    labels: list[str] | None = Field(None, description="train.objective=classification: the label set in class-id order (default: the labels in the training data, sorted; numerically when all are integers).")
    class_weights: Literal["none", "balanced"] | list[float] = Field("none", description="train.objective=classification: loss weight per class: none, balanced (n_rows / (n_classes x rows of the class), as scikit-learn) or one weight per label in label order.")

    @field_validator("labels", mode="before")
    @classmethod
    def _integer_labels(cls, v):
        # Integer class ids in YAML ([0, 1]) name the same labels as in the data, where they are read as text.
        return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _classification_settings(self) -> "TrainConfig":
        if self.objective != "classification" and (self.labels is not None or self.class_weights != "none"):
            raise ValueError("train.labels and train.class_weights apply to train.objective=classification only")
        if isinstance(self.class_weights, list) and (any(w < 0 for w in self.class_weights) or not any(self.class_weights)):
            raise ValueError("train.class_weights must be non-negative with at least one above 0")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("train.labels lists a label twice")
        return self

    dropout: float | None = Field(None, ge=0, lt=1, description="Override every dropout rate the model config declares (attention, hidden, ...); None keeps the model's own.")
    early_stopping_patience: int = Field(0, ge=0, description="Stop after N evaluations without improvement of train.early_stopping_metric and reload the best checkpoint (0 = off; needs validation data).")
    early_stopping_metric: str = Field("eval_loss", description="Validation metric watched by early stopping (lower is better for names ending in 'loss').")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="Keep an exponential moving average of the trainable weights with this decay, evaluated and saved as final_ema/ (0 = off).")
    adversarial: Literal["none", "fgm", "pgd"] = Field("none", description="Adversarial training on the input embeddings: fgm = a second forward/backward with embeddings moved along the normalized gradient; pgd = train.adversarial_steps projected ascent steps inside the train.adversarial_epsilon ball, the last one's gradient added.")
    adversarial_epsilon: float = Field(1.0, gt=0, description="Size (L2 norm) of the FGM perturbation of the embedding matrix, and the radius of PGD's ball.")
    adversarial_steps: int = Field(3, ge=1, description="PGD ascent steps per micro-batch (train.adversarial=pgd; each costs a forward and backward).")
    adversarial_alpha: float | None = Field(None, gt=0, description="PGD step size (default: adversarial_epsilon / adversarial_steps).")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = off).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = bf16 on GPUs that support it, fp16 on older GPUs; on a CPU, bf16 autocast (fp32 master weights) only when its flags list amx_bf16/avx512_bf16, a matmul probe measures bf16 >= 1.3x fp32 and the first batch's bf16 loss is within 1% of fp32's, else fp32 (train_summary.json says why). $TAILOR_PRECISION replaces auto.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    preflight: Literal["stop", "warn", "off"] = Field("stop", description="Before loading weights, predict the run's peak memory (tailor plan) and write plan.json: stop = refuse a run that will not fit, with the smallest fix; warn = log it and train anyway (force); off = no plan.")
    preflight_memory_gb: float | None = Field(None, gt=0, description="Memory the pre-flight judges against (default: the device's, measured: GPU total, or the CPU's available memory).")
    preflight_calibrate: bool = Field(False, description="The pre-flight times a few real training steps of the model (random weights, this method, precision and checkpointing; seconds on small models) to predict the step time, which train_summary.json's plan_check compares with the measured one; false: the matmul probe with a default efficiency.")

    @field_validator("preflight", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        return "off" if v is False else v  # YAML reads a bare `off` as false
    seed: int = Field(42, description="Seed for weights, data order and dropout (fixed seed = reproducible run).")
    logging_steps: int = Field(10, ge=1, description="Log loss, learning rate, grad norm, tokens/s, loss-bearing tokens/s, MFU, peak memory (and MoE expert load) every N steps.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(["tensorboard"], description="Experiment trackers that receive the run: tensorboard (OUTPUT_DIR/tensorboard), mlflow, wandb (both need the track extra). Each gets the recipe's settings as parameters, every logged number as a metric at its step, config.yaml, and at the end train_summary.json's numbers (final/...), train_summary.json, metrics.jsonl and the final model or adapter. [] or none = no tracker.")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI: a server (http://host:5000), a database (sqlite:///path.db, postgresql://...), file:./mlruns (MLflow's legacy file store) or databricks; default $MLFLOW_TRACKING_URI, else a local SQLite store beside the run folder: sqlite:///<parent of output_dir>/mlflow.db, artefacts in <parent>/mlartifacts.")
    experiment: str = Field("tailor", description="MLflow experiment / Weights & Biases project the run is logged under.")
    run_name: str | None = Field(None, description="Tracker run name (default: the output folder's name).")
    wandb_mode: Literal["offline", "online", "disabled"] = Field("offline", description="report_to wandb: offline = write the run under OUTPUT_DIR/wandb (upload later with `wandb sync`), online = send it now (needs `wandb login` or WANDB_API_KEY), disabled = a no-op run.")
    tracking_log_model: bool = Field(True, description="Copy the final model or adapter folder into the trackers' artefacts (false for large full models: its path is still logged, as the tag tailor.final_dir).")

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_list(cls, v):
        if v in (None, "none", False) or v == ["none"]:
            return []
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    metrics_port: int | None = Field(None, ge=0, le=65535, description="Serve the training metrics for Prometheus at http://train.metrics_host:PORT/metrics while training (None or 0 = off; needs prometheus-client, in the serve extra).")
    metrics_host: str = Field("127.0.0.1", description="Address of the training metrics endpoint (0.0.0.0 exposes it to the network).")
    mfu_probe_seconds: float = Field(0.5, ge=0, description="Seconds of matmul timing before the first step that measure the device's peak for MFU (once per process; 0 = no MFU).")
    moe_bias_update_speed: float = Field(0.0, ge=0, description="MoE (DeepSeek-V3): after each step move every router's e_score_correction_bias by this speed x sign(mean load - expert load), the auxiliary-loss-free balancing of DeepSeek-V3 (0 = off; DeepSeek-V3 used 0.001; needs adapter.method full or freeze).")
    save_steps: int = Field(200, ge=1, description="Write a checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Keep the last N complete checkpoints (plus the best one, see train.keep_best).")
    keep_best: bool = Field(True, description="With validation data: an evaluation that beats all earlier ones on train.early_stopping_metric saves a checkpoint, kept beyond train.save_total_limit.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate validation loss every N steps (default: once per epoch when there is validation data).")
    resume: bool = Field(False, description="Continue from the latest complete checkpoint in train.output_dir (same weights as an uninterrupted run).")
    resume_force: bool = Field(False, description="Resume even when recipe settings or data that change the result differ from the checkpoint's (a warning names them).")
    device: Device = None
    distributed: Literal["none", "ddp", "fsdp", "deepspeed"] = Field("none", description="Engine of a multi-process run (`tailor train RECIPE --nproc N`): ddp = DistributedDataParallel (a full replica per process); fsdp = Fully Sharded Data Parallel (FSDP2: weights, gradients and optimizer state sharded); deepspeed = DeepSpeed ZeRO from train.deepspeed_config (CUDA only); none = one process (with --nproc > 1 it means ddp). Batch per step = batch_size x grad_accum x processes.")
    fsdp_sharding: Literal["full_shard", "shard_grad_op"] = Field("full_shard", description="distributed=fsdp: full_shard frees gathered weights after each forward (least memory, like ZeRO-3); shard_grad_op keeps them until the backward (less communication, like ZeRO-2).")
    fsdp_auto_wrap: Literal["transformer", "none"] = Field("transformer", description="distributed=fsdp: transformer = one FSDP unit per decoder block (the model's _no_split_modules); none = the whole model is one unit.")
    fsdp_state_dict: Literal["full", "sharded"] = Field("full", description="distributed=fsdp: checkpoint format: full = one consolidated file written by rank 0; sharded = one file per process (faster for large models). final/ is always a full model.")
    tensor_parallel: int = Field(1, ge=1, description="Tensor parallelism (Megatron-style, transformers' own plan): split every attention and MLP matrix of the model across N processes, each holding 1/N of the weights, gradients and optimizer state and all of them training on the same batch. N = the processes of the run (`tailor train RECIPE --nproc N`), with train.distributed=none; the architecture must ship a tensor-parallel plan (Llama, Qwen2, Mistral, ...); full or freeze training only; checkpoints hold the gathered model (no resume). 1 = off.")
    deepspeed_config: InputPath | None = Field(None, description="distributed=deepspeed: a DeepSpeed JSON config (configs/deepspeed/zero2.json and zero3.json ship with tailor); its \"auto\" values are filled from train.*.")

    @model_validator(mode="after")
    def _deepspeed_config_needs_deepspeed(self) -> "TrainConfig":
        if self.deepspeed_config and self.distributed != "deepspeed":
            raise ValueError(f"train.deepspeed_config applies to train.distributed=deepspeed, not {self.distributed}")
        return self


class EvalConfig(Section):
    task: Literal["generation", "lm", "classification", "retrieval"] = Field("generation", description="generation = answer chat records and score the answers; lm = loss/perplexity of text; classification = {text, label} rows scored by label likelihood (by the head's logits for a sequence classifier); retrieval = {query, candidates, relevant|positive} rows ranked by likelihood.")
    data: list[InputPath] = Field(default_factory=list, description="Evaluation files: chat records whose last assistant turn is the reference (optional `answer` = the fact to contain), or the rows of eval.task.")
    max_new_tokens: int = Field(64, ge=1, description="Tokens generated per answer.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch (and sequences per scoring batch).")
    max_examples: int | None = Field(None, ge=1, description="Evaluate only the first N examples.")
    max_length: int = Field(1024, ge=8, description="Tokens per scored sequence: lm windows; longer classification/retrieval/answer sequences lose their oldest tokens.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature (with eval.do_sample).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling share (with eval.do_sample).")
    seed: int = Field(0, description="Seed for sampled generation and robustness noise.")
    classification_template: str = Field("{text}\nLabel:", description="User turn for classification ({text}; {labels} lists the label set); each label is scored as the assistant's answer.")
    labels: list[str] | None = Field(None, description="Classification label set in this order (default: the labels found in the data, sorted).")
    retrieval_template: str = Field("{query}", description="User turn for retrieval ({query}); each candidate is scored as the assistant's answer by mean token log-likelihood.")
    ranking_k: list[int] = Field(default_factory=lambda: [1, 5, 10], description="K values for Recall@K and NDCG@K.")
    uncertainty: Literal["margin", "entropy"] = Field("margin", description="Classification uncertainty for select_uncertain: lowest top-2 margin or highest entropy (generation uses the answer's mean token log-prob).")
    select_uncertain: int = Field(0, ge=0, description="Write the K examples the model is least sure about to uncertain.jsonl in the output folder (0 = off).")
    explain: int = Field(0, ge=0, description="Classification with a classifier head: token attributions (Captum integrated gradients on the input embeddings, for the predicted label) of K examples chosen by eval.explain_select, written to explanations.jsonl and shown as highlighted text in report.html (0 = off; the explain extra).")
    explain_select: Literal["worst", "uncertain"] = Field("worst", description="Which examples --explain attributes: worst = lowest probability of the true label; uncertain = smallest top-2 margin.")
    explain_steps: int = Field(32, ge=2, description="Integration points of integrated gradients per example (more = smaller completeness error, reported as delta).")
    efficiency: bool = Field(True, description="Report timing and peak memory; generation adds time to first token, tokens/s and p50/p95 latency from single requests.")
    efficiency_requests: int = Field(8, ge=1, description="Single (unbatched) requests timed for the generation latency figures.")
    robustness: bool = Field(False, description="Generation: ask the questions again with noise (eval.robustness_noise) and report the score drop.")
    robustness_noise: list[Literal["typo", "eda", "template"]] = Field(default_factory=lambda: ["typo", "eda", "template"], min_length=1, description="Noise kinds: typo = character typos, eda = EDA word edits (synonym/insert/swap/delete), template = polite paraphrase wrappers.")
    robustness_rate: float = Field(0.1, gt=0, le=0.5, description="Share of characters (typo) or words (eda) changed per question.")
    refusal_patterns: list[str] = Field(default_factory=list, description="Extra regular expressions that mark an answer as a refusal (added to the built-in English and Chinese list).")
    worst_k: int = Field(5, ge=0, description="Worst examples listed in the results.")
    json_schema: str | None = Field(None, description="Generation: a JSON-schema file; answers are generated constrained to it (llguidance) and scored as structured answers against JSON references: json_valid (parses and validates), json_field_accuracy (share of the reference's top-level fields matched), json_exact_match.")
    runtime: Runtime = True

    _one_file_is_a_list = field_validator("data", mode="before")(lambda v: [v] if isinstance(v, str) else v)

    @field_validator("ranking_k")
    @classmethod
    def _positive_k(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("eval.ranking_k must be a non-empty list of positive integers, e.g. [1, 5, 10]")
        return sorted(set(v))

    @model_validator(mode="after")
    def _templates_have_fields(self) -> "EvalConfig":
        for key, name in (("classification_template", "text"), ("retrieval_template", "query")):
            if "{" + name + "}" not in getattr(self, key):
                raise ValueError(f"eval.{key} must contain {{{name}}} where the row's {name} goes")
        return self


class DistillConfig(Section):
    """Knowledge distillation (`tailor distill`): a frozen teacher guides the student that model/adapter/train describe."""

    teacher: InputPath | None = Field(None, description="Teacher: a local model directory or LoRA adapter directory (frozen; same tokenizer as the student).")
    student_layers: int | None = Field(None, ge=1, description="Student = the teacher with this many evenly spaced decoder layers kept (first and last included), instead of model.preset / model.path.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of both models' logits in the KL term (scaled back by T^2).")
    alpha: float = Field(0.5, ge=0, le=1, description="Loss = alpha x KL(teacher || student) + (1 - alpha) x hard-label cross-entropy.")
    hidden_weight: float = Field(0.0, ge=0, description="Weight of the MSE between the student's last hidden states (through a learned projection) and the teacher's (0 = off).")
    prompts: list[InputPath] = Field(default_factory=list, description="Sequence-level KD: files of unlabeled questions (chat records, their answers ignored, or .txt one per line); the teacher answers them greedily into OUTPUT_DIR/teacher_answers.jsonl, which joins data.train. Questions in the eval data or already in data.train are left out and counted.")
    generate_max_new_tokens: int = Field(128, ge=1, description="Longest teacher answer to distill.prompts in tokens; answers cut off at this length are left out and counted.")

    _one_file_is_a_list = field_validator("prompts", mode="before")(lambda v: [v] if isinstance(v, str) else v)


class RefreshConfig(Section):
    """`tailor refresh`: drift watch on newly arrived data, incremental retraining, an A/B gate, promotion in the registry."""

    registry: OutputPath | None = Field(None, description="Model registry: a SQLite file (relative = to the working directory) or any SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: $TAILOR_REGISTRY, else runs/registry.db).")
    model_name: str | None = Field(None, description="The registered model to keep fresh: its production version is measured, retrained and gated.")
    new_data: list[InputPath] = Field(default_factory=list, description="Newly arrived data: files or folders in any data.sources format, prepared with this recipe's data pipeline (clean, dedup, split).")
    holdout: float = Field(0.2, gt=0, lt=1, description="Share of the new rows held out for the A/B gate (when data.split sets no eval share).")
    threshold: float = Field(0.15, gt=0, description="Drift: retrain when production's perplexity on the new data exceeds its recorded baseline by this share (0.15 = up 15%).")
    task_metric: str | None = Field("fact_accuracy", description="Per-example score watched and gated besides perplexity when the evaluation yields it (fact_accuracy needs an `answer` field; token_f1 always exists for chat data); None = perplexity only.")
    task_drop: float = Field(0.1, ge=0, description="Drift: also retrain when the task metric falls this much (absolute) below production's recorded baseline.")
    replay: float = Field(0.3, ge=0, lt=1, description="Share of the incremental training mix drawn from production's own training data, against forgetting (0 = new data only).")
    supersede: bool = Field(True, description="Accept changed facts: old held-out rows the new data contradicts (the same question, or the same refresh.fact_key value, with another answer) leave the gate's old set and old training rows it contradicts are not replayed; both counted and listed in the run's data/superseded.jsonl and the report. False = the old set stays whole (a changed fact then fails the gate as forgetting).")
    fact_key: str | None = Field("fact_id", description="Row column naming the fact a row is about (rows of one fact share it); the new data's `answer` for a fact supersedes old rows of that fact with another answer. None = match by question only.")
    mode: Literal["continue-adapter", "last-n-layers"] = Field("continue-adapter", description="continue-adapter = keep training production's LoRA/DoRA adapter (loaded trainable); last-n-layers = train only the last refresh.last_n_layers blocks and the head of production's (merged) model.")
    last_n_layers: int = Field(2, ge=1, description="Blocks that train with refresh.mode=last-n-layers.")
    tolerance: float = Field(0.02, ge=0, description="Gate, old held-out set: the candidate may be this much worse (perplexity up by this share, the task metric down by this much) and still pass.")
    min_gain: float = Field(0.0, ge=0, description="Gate, new held-out set: the candidate's perplexity must be below production's by more than this share (0 = any improvement); its task metric must not be lower.")
    max_examples: int | None = Field(256, ge=1, description="Examples per evaluation (drift check and each gate side), to bound a scheduled run's time; None = all.")
    work_dir: OutputPath = Field("runs/refresh", description="Each run writes data, training output, evaluations and its refresh.jsonl log to WORK_DIR/<model_name>/<run id>/ (keep the folders of registered versions: they hold their artefacts). Relative = to the working directory.")

    _one_file_is_a_list = field_validator("new_data", mode="before")(lambda v: [v] if isinstance(v, str) else v)


