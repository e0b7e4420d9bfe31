"""The recipe schema: the single source of truth for YAML files, `key=value` overrides and `--help`.

Every setting is declared once here with a type, a default and a one-line description.
Unknown keys are errors that name the key and the nearest valid one.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tailor.errors import TailorError


class Section(BaseModel):
    """A recipe section: unknown keys are rejected, assignments re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    path: str | None = Field(None, description="Local Hugging Face model directory to start from (config.json + safetensors).")
    preset: str | None = Field(None, description="Build a new model from this preset instead of loading one (see `tailor model presets`).")
    tokenizer: str | None = Field(None, description="Tokenizer directory; defaults to model.path. Required with model.preset.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weight dtype; auto = float32 on CPUs without bf16, bf16 on GPUs that have it.")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code shipped inside the model directory (off: it runs arbitrary Python).")

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        if self.path and self.preset:
            raise ValueError("set either model.path (load a checkpoint) or model.preset (build a new model), not both")
        if self.preset and not self.tokenizer:
            raise ValueError("model.preset needs model.tokenizer: a tokenizer directory (train one with `tailor tokenizer train`)")
        return self


class SourceConfig(Section):
    """One input: a file, folder, glob or saved `datasets` directory, or a dataset of a LLaMA-Factory registry."""

    path: str | None = Field(None, description="A .json/.jsonl/.csv/.parquet/.txt file, a folder, a glob (data/*.jsonl) or a saved `datasets` directory.")
    registry: str | None = Field(None, description="A LLaMA-Factory dataset_info.json (or the folder holding it); use with `name`.")
    name: str | None = Field(None, description="Dataset name inside `registry`.")
    format: Literal["auto", "messages", "sharegpt", "alpaca", "text", "classification", "preference"] = Field(
        "auto", description="Record format; auto detects it per record.")
    columns: dict[str, str] = Field(default_factory=dict, description="Canonical field -> column in the file, e.g. {instruction: question, output: answer, messages: dialog}.")
    tags: dict[str, str] = Field(default_factory=dict, description="sharegpt keys and role names: role_tag, content_tag, user_tag, assistant_tag, system_tag, observation_tag, function_tag.")
    text_per: Literal["line", "file"] = Field("line", description="Plain .txt files: one document per line, or the whole file as one document.")
    split: Literal["auto", "train", "eval", "test"] = Field("auto", description="The split these rows go to; auto = data.split decides.")
    max_rows: int | None = Field(None, ge=1, description="Read at most this many rows from this source.")

    @model_validator(mode="after")
    def _one_place(self) -> "SourceConfig":
        if bool(self.path) == bool(self.registry):
            raise ValueError("a source needs exactly one of `path` (files) or `registry` + `name` (dataset_info.json)")
        if self.registry and not self.name:
            raise ValueError("a registry source needs `name`: the dataset's key in dataset_info.json")
        return self


class _Step(Section):
    pass


class NfkcStep(_Step):
    step: Literal["nfkc"] = Field(description="Unicode NFKC normalization (full-width ASCII to half-width; CJK text kept).")


class ControlStep(_Step):
    step: Literal["strip_control"] = Field(description="Remove control and zero-width characters (newlines and tabs kept).")


class WhitespaceStep(_Step):
    step: Literal["whitespace"] = Field(description="Collapse runs of spaces, trim lines, at most one blank line in a row.")


class HtmlStep(_Step):
    step: Literal["html"] = Field(description="HTML to text: drop tags, scripts and styles, unescape entities, keep block breaks.")


class RegexStep(_Step):
    step: Literal["regex"] = Field(description="A user rule: replace every match, or drop rows that match.")
    pattern: str = Field(description="Python regular expression.")
    replace: str = Field("", description="Replacement (with action=replace); \\1 refers to groups.")
    action: Literal["replace", "drop"] = Field("replace", description="replace matches, or drop the whole row when it matches.")


class ChineseStep(_Step):
    step: Literal["chinese"] = Field(description="Convert Chinese script (OpenCC tables).")
    convert: Literal["t2s", "s2t"] = Field("t2s", description="t2s = traditional to simplified, s2t = simplified to traditional.")


PII_KINDS = ("email", "phone", "id_card", "bank_card", "ip")


class PiiStep(_Step):
    step: Literal["pii"] = Field(description="Mask personal data with typed placeholders like <EMAIL>, <PHONE>.")
    kinds: list[Literal["email", "phone", "id_card", "bank_card", "ip"]] = Field(
        default_factory=lambda: list(PII_KINDS), description="Which kinds of personal data to mask.")


class LengthStep(_Step):
    step: Literal["length"] = Field(description="Drop rows outside length bounds (characters of all text; tokens need a tokenizer).")
    min_chars: int | None = Field(None, ge=0, description="Drop rows with fewer characters.")
    max_chars: int | None = Field(None, ge=1, description="Drop rows with more characters.")
    min_tokens: int | None = Field(None, ge=0, description="Drop rows with fewer tokens (model.tokenizer or model.path).")
    max_tokens: int | None = Field(None, ge=1, description="Drop rows with more tokens.")


class LanguageStep(_Step):
    step: Literal["language"] = Field(description="Keep only rows whose detected language is listed (script-based: zh, ja, ko, ru, ar, en/latin).")
    keep: list[str] = Field(description="Languages to keep, e.g. [en, zh].")


CleanStep = Annotated[Union[NfkcStep, ControlStep, WhitespaceStep, HtmlStep, RegexStep, ChineseStep, PiiStep, LengthStep,
                            LanguageStep], Field(discriminator="step")]


class DedupConfig(Section):
    exact: bool = Field(True, description="Drop exact duplicates (hash of the normalized text: case, spaces and punctuation folded).")
    near: bool = Field(True, description="Drop near duplicates found with MinHash LSH.")
    threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard similarity at or above which two rows are near duplicates.")
    num_perm: int = Field(128, ge=16, description="MinHash permutations (more = more exact, slower).")
    ngram: int = Field(5, ge=1, description="Character n-gram size of the shingles (character-based so it works for Chinese).")
    across_splits: bool = Field(True, description="Also drop eval/test rows that have an exact or near twin in train.")


class EdaConfig(Section):
    rate: float = Field(0.0, ge=0, le=1, description="Share of train rows that get augmented copies (0 = off).")
    copies: int = Field(1, ge=1, description="Augmented copies per chosen row.")
    alpha: float = Field(0.1, gt=0, le=0.5, description="Share of words each operation touches.")
    ops: list[Literal["synonym", "insert", "swap", "delete"]] = Field(
        default_factory=lambda: ["synonym", "insert", "swap", "delete"], description="EDA operations to draw from.")
    dictionary: str | None = Field(None, description="User synonym file (JSON {word: [synonyms]} or TSV word<TAB>syn1,syn2) added to the built-in bilingual one.")
    fields: Literal["prompt", "all"] = Field("prompt", description="prompt = only user turns / instructions change (answers keep their facts); all = every text.")


class FillConfig(Section):
    templates: list[str] = Field(default_factory=list, description="Row templates with {slot} fields, as JSON objects in text (e.g. an alpaca or messages row).")
    slots: dict[str, list[str]] = Field(default_factory=dict, description="Slot name -> values to fill in.")
    count: int = Field(0, ge=0, description="Rows to generate (0 = off); every slot combination at most once.")


class BackTranslationConfig(Section):
    model: str | None = Field(None, description="Local model directory (seq2seq or causal LM) used as the translator (None = off).")
    pivot: str = Field("zh", description="Language to translate to and back from.")
    source: str = Field("en", description="Language of the rows being augmented.")
    rate: float = Field(0.0, ge=0, le=1, description="Share of train rows to back-translate.")
    max_new_tokens: int = Field(128, ge=1, description="Tokens per translation.")


class AugmentConfig(Section):
    eda: EdaConfig = Field(default_factory=EdaConfig, description="Easy data augmentation (synonym, insert, swap, delete).")
    fill: FillConfig = Field(default_factory=FillConfig, description="Rows generated from templates and slot values.")
    back_translation: BackTranslationConfig = Field(default_factory=BackTranslationConfig, description="Paraphrases through a pivot language.")
    seed: int = Field(0, description="Seed for every augmentation draw.")


class SplitConfig(Section):
    eval: float = Field(0.0, ge=0, description="Validation split: a share (< 1) or a row count (>= 1).")
    test: float = Field(0.0, ge=0, description="Test split: a share (< 1) or a row count (>= 1).")
    stratify_by: str | None = Field(None, description="Keep this field's class proportions equal across splits (e.g. label).")
    group_by: str | None = Field(None, description="Keep all rows sharing this field's value in one split (e.g. customer_id).")
    time_column: str | None = Field(None, description="Order by this field: train strictly before eval before test.")
    seed: int = Field(0, description="Seed for the split.")

    @model_validator(mode="after")
    def _one_mode(self) -> "SplitConfig":
        if sum(x is not None for x in (self.stratify_by, self.group_by, self.time_column)) > 1:
            raise ValueError("choose at most one of split.stratify_by, split.group_by, split.time_column")
        return self


class DataConfig(Section):
    train: list[str] = Field(default_factory=list, description="Training files (.jsonl/.json/.txt) or a prepared dataset directory (`tailor data prepare`).")
    eval: list[str] = Field(default_factory=list, description="Validation files in the same formats; empty = hold out data.val_ratio of train.")
    val_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of training rows held out for validation when data.eval is empty.")
    format: Literal["auto", "text", "messages", "alpaca", "sharegpt"] = Field("auto", description="Record format; auto detects it per record.")
    text_field: str = Field("text", description="Field that holds raw text in `text` records.")
    max_length: int = Field(512, ge=8, description="Maximum tokens per training sequence (longer conversations are truncated and counted).")
    packing: bool | None = Field(None, description="Pack several samples into one sequence (no attention across them); default on for pretrain, off for sft.")
    chat_template: str | None = Field(None, description="Override the tokenizer's chat template: a built-in name (deepseek, chatml) or a .jinja file.")
    system_prompt: str | None = Field(None, description="System message prepended to conversations that have none.")
    sources: list[SourceConfig] = Field(default_factory=list, description="Inputs of `tailor data prepare` (files, folders, globs, registry entries).")
    on_error: Literal["raise", "skip"] = Field("raise", description="A malformed row stops the run with file, line and field (raise) or is skipped and counted (skip).")
    clean: list[CleanStep] = Field(default_factory=list, description="Ordered cleaning steps: nfkc, strip_control, whitespace, html, regex, chinese, pii, length, language.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Exact and near-duplicate removal, within and across splits.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Train-split augmentation (never eval/test).")
    split: SplitConfig = Field(default_factory=SplitConfig, description="How rows are split into train/eval/test.")
    prepared_dir: str = Field("runs/data", description="Where `tailor data prepare` writes the prepared dataset (splits, report, cache key).")
    num_proc: int = Field(1, ge=1, description="Processes for tokenization.")

    _one_file_is_a_list = field_validator("train", "eval", mode="before")(lambda v: [v] if isinstance(v, str) else v)

    @field_validator("clean", mode="before")
    @classmethod
    def _bare_step_names(cls, v):
        # `- nfkc` is shorthand for `- step: nfkc`.
        if isinstance(v, list):
            return [{"step": s} if isinstance(s, str) else s for s in v]
        return v


class AdapterConfig(Section):
    method: Literal["full", "lora", "dora", "qlora", "prefix", "prompt", "ia3", "freeze"] = Field("lora", description="full = all weights; lora = low-rank adapters (peft); dora = weight-decomposed LoRA; qlora = LoRA on a 4-bit base (CUDA + bitsandbytes); prefix / prompt = trained virtual tokens (prefix tuning / prompt tuning); ia3 = learned activation scales; freeze = only the last N blocks and the head train.")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout (must be 0 when LoRA reaches fused MoE experts).")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Module names LoRA wraps, or all-linear (every linear layer but the head).")
    rslora: bool = Field(False, description="With lora/dora/qlora: rank-stabilized scaling alpha / sqrt(r) instead of alpha / r.")
    num_virtual_tokens: int = Field(20, ge=1, description="With prefix/prompt: how many trained virtual tokens are prepended.")
    freeze_last_n: int = Field(2, ge=0, description="With method=freeze: how many final transformer blocks train (the head and final norm always do).")
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
    objective: Literal["pretrain", "sft", "classification"] = Field("sft", description="pretrain = loss on all tokens; sft = loss on assistant tokens (end-of-turn included); classification = a sequence-classification head (AutoModelForSequenceClassification) on the base, trained on {text, label} rows.")
    output_dir: str = Field("runs/train", description="Run directory: checkpoints, final model or adapter, metrics.jsonl, TensorBoard logs, resolved config.")
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
    optimizer: Literal["adamw", "sgd", "adafactor", "adamw_8bit"] = Field("adamw", description="adamw (torch), sgd (with train.momentum), adafactor, adamw_8bit (bitsandbytes, CUDA only).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (train.optimizer=sgd).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss (0 = off).")
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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPUs without bf16.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    seed: int = Field(42, description="Seed for weights, data order and dropout (fixed seed = reproducible run).")
    logging_steps: int = Field(10, ge=1, description="Log loss, learning rate, grad norm, tokens/s, loss-bearing tokens/s, MFU, peak memory (and MoE expert load) every N steps.")
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
    device: str | None = Field(None, description="Force a device (cpu, cuda, mps); default picks the best available.")
    distributed: Literal["none", "ddp", "fsdp", "deepspeed"] = Field("none", description="Engine of a multi-process run (`tailor train RECIPE --nproc N`): ddp = DistributedDataParallel (a full replica per process); fsdp = Fully Sharded Data Parallel (FSDP2: weights, gradients and optimizer state sharded); deepspeed = DeepSpeed ZeRO from train.deepspeed_config (CUDA only); none = one process (with --nproc > 1 it means ddp). Batch per step = batch_size x grad_accum x processes.")
    fsdp_sharding: Literal["full_shard", "shard_grad_op"] = Field("full_shard", description="distributed=fsdp: full_shard frees gathered weights after each forward (least memory, like ZeRO-3); shard_grad_op keeps them until the backward (less communication, like ZeRO-2).")
    fsdp_auto_wrap: Literal["transformer", "none"] = Field("transformer", description="distributed=fsdp: transformer = one FSDP unit per decoder block (the model's _no_split_modules); none = the whole model is one unit.")
    fsdp_state_dict: Literal["full", "sharded"] = Field("full", description="distributed=fsdp: checkpoint format: full = one consolidated file written by rank 0; sharded = one file per process (faster for large models). final/ is always a full model.")
    deepspeed_config: str | None = Field(None, description="distributed=deepspeed: a DeepSpeed JSON config (configs/deepspeed/zero2.json and zero3.json ship with tailor); its \"auto\" values are filled from train.*.")

    @model_validator(mode="after")
    def _deepspeed_config_needs_deepspeed(self) -> "TrainConfig":
        if self.deepspeed_config and self.distributed != "deepspeed":
            raise ValueError(f"train.deepspeed_config applies to train.distributed=deepspeed, not {self.distributed}")
        return self


class EvalConfig(Section):
    task: Literal["generation", "lm", "classification", "retrieval"] = Field("generation", description="generation = answer chat records and score the answers; lm = loss/perplexity of text; classification = {text, label} rows scored by label likelihood (by the head's logits for a sequence classifier); retrieval = {query, candidates, relevant|positive} rows ranked by likelihood.")
    data: list[str] = Field(default_factory=list, description="Evaluation files: chat records whose last assistant turn is the reference (optional `answer` = the fact to contain), or the rows of eval.task.")
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
    efficiency: bool = Field(True, description="Report timing and peak memory; generation adds time to first token, tokens/s and p50/p95 latency from single requests.")
    efficiency_requests: int = Field(8, ge=1, description="Single (unbatched) requests timed for the generation latency figures.")
    robustness: bool = Field(False, description="Generation: ask the questions again with noise (eval.robustness_noise) and report the score drop.")
    robustness_noise: list[Literal["typo", "eda", "template"]] = Field(default_factory=lambda: ["typo", "eda", "template"], min_length=1, description="Noise kinds: typo = character typos, eda = EDA word edits (synonym/insert/swap/delete), template = polite paraphrase wrappers.")
    robustness_rate: float = Field(0.1, gt=0, le=0.5, description="Share of characters (typo) or words (eda) changed per question.")
    refusal_patterns: list[str] = Field(default_factory=list, description="Extra regular expressions that mark an answer as a refusal (added to the built-in English and Chinese list).")
    worst_k: int = Field(5, ge=0, description="Worst examples listed in the results.")

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


class OutputRule(Section):
    """A post-processing rule applied to generated text before it is returned."""

    pattern: str | None = Field(None, description="Python regular expression to replace (with `replace`); or leave empty and set `pii`.")
    replace: str = Field("[REDACTED]", description="Replacement for each match (\\1 refers to groups).")
    pii: list[Literal["email", "phone", "id_card", "bank_card", "ip"]] = Field(default_factory=list, description="Mask these personal-data kinds with the data stage's placeholders (<EMAIL>, <PHONE>, ...).")

    @model_validator(mode="after")
    def _one_kind(self) -> "OutputRule":
        if bool(self.pattern) == bool(self.pii):
            raise ValueError("an output rule needs exactly one of `pattern` (regex replace) or `pii` (kinds to mask)")
        return self


class ServeConfig(Section):
    """`tailor serve`: the OpenAI-compatible HTTP server, its batching engine, limits and safety rules."""

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 exposes the server to the network).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    model_name: str | None = Field(None, description="Name clients pass as `model` for the base model (default: the model directory's name).")
    adapters: dict[str, str] = Field(default_factory=dict, description="LoRA adapters on the same base: name (the request's `model`) -> adapter directory.")
    engine: Literal["auto", "tailor", "vllm"] = Field("auto", description="Generation engine: vllm (needs vLLM and a CUDA GPU), tailor (built-in continuous batching), auto = vllm when both are there, else tailor.")
    max_batch_size: int = Field(16, ge=1, description="Sequences generating at once (decoded together, one forward pass per adapter per step).")
    max_queue: int = Field(64, ge=0, description="Requests waiting for a batch slot; beyond it new requests get 429 with Retry-After.")
    max_context: int | None = Field(None, ge=8, description="Prompt + generated tokens per request (default: the model's max_position_embeddings).")
    max_tokens: int = Field(256, ge=1, description="Most tokens one request may generate (also the default when a request sets none).")
    max_prompt_chars: int = Field(32000, ge=1, description="Longest prompt (characters of all messages) accepted; longer ones get 400.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body; larger ones get 413.")
    max_n: int = Field(4, ge=1, description="Most choices (`n`) one request may ask for.")
    request_timeout: float = Field(120.0, gt=0, description="Seconds a request may wait and generate before it is stopped (504).")
    retry_after: int = Field(1, ge=1, description="Seconds suggested in the Retry-After header of a 429.")
    api_keys: list[str] = Field(default_factory=list, description="Accepted `Authorization: Bearer` keys (empty = no authentication). Prefer api_keys_file.")
    api_keys_file: str | None = Field(None, description="File with one API key per line (keeps keys out of recipes and process listings).")
    blocklist: list[str] = Field(default_factory=list, description="Regular expressions (case-insensitive); a prompt matching one gets 400 naming the rule.")
    output_rules: list[OutputRule] = Field(default_factory=list, description="Regex replace / PII masks applied to generated text, in order.")
    chat_template: str | None = Field(None, description="Override the tokenizer's chat template: a built-in name (deepseek, chatml) or a .jinja file.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weight dtype.")
    device: str | None = Field(None, description="Force a device (cpu, cuda, mps); default picks the best available.")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code shipped inside the model directory (off: it runs arbitrary Python).")
    registry: str | None = Field(None, description="Serve from this model registry (a registry file, sqlite:///PATH or a SQLAlchemy URL) instead of a model directory: its production version of registry_model, switching to each newly promoted one without dropping requests.")
    registry_model: str | None = Field(None, description="Name of the model in `registry` whose production version is served (also the default request name).")
    registry_poll_seconds: float = Field(5.0, gt=0, description="How often the registry's production alias is checked for a new version.")


class DistillConfig(Section):
    """Knowledge distillation (`tailor distill`): a frozen teacher guides the student that model/adapter/train describe."""

    teacher: str | None = Field(None, description="Teacher: a local model directory or LoRA adapter directory (frozen; same tokenizer as the student).")
    student_layers: int | None = Field(None, ge=1, description="Student = the teacher with this many evenly spaced decoder layers kept (first and last included), instead of model.preset / model.path.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of both models' logits in the KL term (scaled back by T^2).")
    alpha: float = Field(0.5, ge=0, le=1, description="Loss = alpha x KL(teacher || student) + (1 - alpha) x hard-label cross-entropy.")
    hidden_weight: float = Field(0.0, ge=0, description="Weight of the MSE between the student's last hidden states (through a learned projection) and the teacher's (0 = off).")
    prompts: list[str] = Field(default_factory=list, description="Sequence-level KD: files of unlabeled questions (chat records, their answers ignored, or .txt one per line); the teacher answers them greedily into OUTPUT_DIR/teacher_answers.jsonl, which joins data.train. Questions in the eval data or already in data.train are left out and counted.")
    generate_max_new_tokens: int = Field(128, ge=1, description="Longest teacher answer to distill.prompts in tokens; answers cut off at this length are left out and counted.")

    _one_file_is_a_list = field_validator("prompts", mode="before")(lambda v: [v] if isinstance(v, str) else v)


class RefreshConfig(Section):
    """`tailor refresh`: drift watch on newly arrived data, incremental retraining, an A/B gate, promotion in the registry."""

    registry: str | None = Field(None, description="Model registry: a SQLite file or any SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: $TAILOR_REGISTRY, else runs/registry.db).")
    model_name: str | None = Field(None, description="The registered model to keep fresh: its production version is measured, retrained and gated.")
    new_data: list[str] = Field(default_factory=list, description="Newly arrived data: files or folders in any data.sources format, prepared with this recipe's data pipeline (clean, dedup, split).")
    holdout: float = Field(0.2, gt=0, lt=1, description="Share of the new rows held out for the A/B gate (when data.split sets no eval share).")
    threshold: float = Field(0.15, gt=0, description="Drift: retrain when production's perplexity on the new data exceeds its recorded baseline by this share (0.15 = up 15%).")
    task_metric: str | None = Field("fact_accuracy", description="Per-example score watched and gated besides perplexity when the evaluation yields it (fact_accuracy needs an `answer` field; token_f1 always exists for chat data); None = perplexity only.")
    task_drop: float = Field(0.1, ge=0, description="Drift: also retrain when the task metric falls this much (absolute) below production's recorded baseline.")
    replay: float = Field(0.3, ge=0, lt=1, description="Share of the incremental training mix drawn from production's own training data, against forgetting (0 = new data only).")
    mode: Literal["continue-adapter", "last-n-layers"] = Field("continue-adapter", description="continue-adapter = keep training production's LoRA/DoRA adapter (loaded trainable); last-n-layers = train only the last refresh.last_n_layers blocks and the head of production's (merged) model.")
    last_n_layers: int = Field(2, ge=1, description="Blocks that train with refresh.mode=last-n-layers.")
    tolerance: float = Field(0.02, ge=0, description="Gate, old held-out set: the candidate may be this much worse (perplexity up by this share, the task metric down by this much) and still pass.")
    min_gain: float = Field(0.0, ge=0, description="Gate, new held-out set: the candidate's perplexity must be below production's by more than this share (0 = any improvement); its task metric must not be lower.")
    max_examples: int | None = Field(256, ge=1, description="Examples per evaluation (drift check and each gate side), to bound a scheduled run's time; None = all.")
    work_dir: str = Field("runs/refresh", description="Each run writes data, training output, evaluations and its refresh.jsonl log to WORK_DIR/<model_name>/<run id>/ (keep the folders of registered versions: they hold their artefacts).")

    _one_file_is_a_list = field_validator("new_data", mode="before")(lambda v: [v] if isinstance(v, str) else v)


class Recipe(Section):
    """A whole run: which model, which data, which adapter, how to train and how to evaluate."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Training and validation data.")
    adapter: AdapterConfig = Field(default_factory=AdapterConfig, description="What trains.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The optimization.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Generation-based evaluation.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The OpenAI-compatible server (`tailor serve`).")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Teacher -> student distillation (`tailor distill`).")
    refresh: RefreshConfig = Field(default_factory=RefreshConfig, description="Drift watch, incremental retraining, A/B gate and promotion (`tailor refresh`).")


class QuickstartConfig(Section):
    """The embedded default job: synthetic store-support domain, tiny DeepSeek-V3 model, pretrain, LoRA SFT, eval, merge."""

    out_dir: str = Field("runs/quickstart", description="Where the quickstart writes data, tokenizer, models and results.")
    preset: str = Field("deepseek-v3-tiny", description="Model preset built from scratch.")
    vocab_size: int = Field(4096, ge=300, description="Size of the byte-level BPE vocabulary trained on the domain corpus.")
    languages: list[Literal["en", "zh"]] = Field(default_factory=lambda: ["en", "zh"], description="Languages of the generated domain data.")
    seed: int = Field(0, description="Seed for the data generator and both training stages.")
    max_facts: int | None = Field(None, ge=1, description="Use only the first N facts per language (toy runs).")
    doc_variants: int = Field(8, ge=1, description="Differently worded copies of the domain documents in the pretraining corpus.")
    train_per_fact: int = Field(24, ge=1, description="Training conversations per fact (question and answer wordings vary).")
    model_overrides: list[str] = Field(default_factory=list, description="key=value changes to the preset's model config, e.g. num_hidden_layers=2.")
    pretrain_overrides: list[str] = Field(default_factory=list, description="Extra key=value overrides for the pretraining recipe.")
    sft_overrides: list[str] = Field(default_factory=list, description="Extra key=value overrides for the SFT recipe.")


# ---------------------------------------------------------------------------------------------
# Loading, overrides and help text


def _nearest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts (sections and leaves)."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        paths.append(dotted)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths.extend(field_paths(ann, dotted + "."))
    return paths


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every leaf setting: the text of `--help`."""
    rows: list[tuple[str, str, str, str]] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        dotted = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_fields(ann, dotted + "."))
            continue
        default = info.default_factory() if info.default_factory else info.default
        shown = "required" if info.is_required() else repr(default) if default is not None else "-"
        rows.append((dotted, _type_name(ann), shown, info.description or ""))
        for item in _list_item_models(ann):
            # Items of a list of sections (sources, cleaning steps) are described too.
            tag = item.model_fields.get("step")
            label = f"[step={get_args(tag.annotation)[0]}]" if tag is not None else "[]"
            rows.extend(r for r in describe_fields(item, f"{dotted}{label}.") if not r[0].endswith(".step"))
            if tag is not None:
                rows.append((f"{dotted}{label}", "step", "-", tag.description or ""))
    return rows


def _list_item_models(ann: Any) -> list[type[BaseModel]]:
    """The section models a `list[...]` annotation holds (one, or each member of a tagged union)."""
    if getattr(get_origin(ann), "__name__", "") != "list":
        return []
    (item,) = get_args(ann)
    if get_origin(item) is Annotated:
        item = get_args(item)[0]
    members = get_args(item) if get_origin(item) is Union else (item,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def _type_name(ann: Any) -> str:
    origin = get_origin(ann)
    if origin is Annotated:
        return _type_name(get_args(ann)[0])
    if origin is Union and all(isinstance(a, type) and issubclass(a, BaseModel) for a in get_args(ann)):
        return "step"
    if origin is Literal:
        return "|".join(str(a) for a in get_args(ann))
    if origin is None:
        return getattr(ann, "__name__", str(ann))
    args = [a for a in get_args(ann) if a is not type(None)]
    inner = "|".join(_type_name(a) for a in args)
    if getattr(origin, "__name__", "") == "list":
        return f"list[{inner}]"
    if getattr(origin, "__name__", "") == "dict":
        return "dict[" + ",".join(_type_name(a) for a in get_args(ann)) + "]"
    return inner


def help_text(model: type[BaseModel]) -> str:
    """The keys table shown by `--help` for commands that take this schema."""
    rows = describe_fields(model)
    width = max(len(r[0]) for r in rows)
    lines = [f"  {k:<{width}}  {d}  [{t}; default {v}]" for k, t, v, d in rows]
    return "\n".join(lines)


def parse_overrides(pairs: list[str], model: type[BaseModel]) -> dict:
    """Turn ['train.lr=1e-4', 'data.train=[a.jsonl,b.jsonl]'] into a nested dict (values parsed as YAML)."""
    out: dict = {}
    valid = field_paths(model)
    for pair in pairs:
        if "=" not in pair:
            raise TailorError(f"override '{pair}' is not of the form key=value", fix="write e.g. train.lr=1e-4")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in valid:
            raise TailorError(f"unknown setting '{key}' on the command line.{_nearest(key, valid)}",
                              fix="run the command with --help to see every setting")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def parse_preset_overrides(pairs: list[str]) -> dict:
    """['num_hidden_layers=2', ...] -> {'num_hidden_layers': 2} for a model preset's config."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise TailorError(f"model override '{pair}' is not of the form key=value", fix="e.g. num_hidden_layers=2")
        key, raw = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def merge_settings(base: dict, extra: dict) -> dict:
    """Nested dict merge: `extra` wins; sections merge key by key."""
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = merge_settings(merged[k], v)
        else:
            merged[k] = v
    return merged


def _check_unknown(data: Any, model: type[BaseModel], where: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if key not in model.model_fields:
            valid = [f"{prefix}{k}" for k in model.model_fields]
            raise TailorError(f"unknown setting '{prefix}{key}'.{_nearest(prefix + str(key), valid)}", where=where,
                              fix="remove it or correct its name; `--help` lists every setting")
        ann = model.model_fields[key].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _check_unknown(value, ann, where, f"{prefix}{key}.")


def build(model: type[BaseModel], data: dict, where: str) -> Any:
    """Validate a nested dict against a schema, turning pydantic errors into one clear message."""
    _check_unknown(data, model, where)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
        raise TailorError("invalid settings:\n    " + "\n    ".join(problems), where=where,
                          fix="correct the values; `--help` lists each setting with its type") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TailorError(f"recipe file not found: {path}", fix="pass the path of a YAML recipe (examples under configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise TailorError(f"the recipe is not valid YAML: {getattr(exc, 'problem', exc)}", where=where,
                          fix="check indentation and quoting at that line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TailorError("a recipe must be a YAML mapping of sections (model, data, adapter, train, eval)", where=str(path))
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (relative data paths resolve against the recipe's folder) and apply overrides."""
    data = read_yaml(path) if path else {}
    where = str(path) if path else "command line"
    if path:
        _check_unknown(data, Recipe, where)
        data = _resolve_paths(data, Path(path).parent)
    if overrides:
        data = merge_settings(data, parse_overrides(overrides, Recipe))
        where += " + command-line overrides"
    return build(Recipe, data, where)


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make file paths in a recipe relative to the recipe, so recipes can be run from anywhere."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}

    def fix(p: Any) -> Any:
        if isinstance(p, str) and p and not Path(p).is_absolute() and (base / p).exists():
            return str(base / p)
        return p

    data_sec = data.get("data")
    if isinstance(data_sec, dict) and isinstance(data_sec.get("sources"), list):
        # Source paths (files, folders, globs, registries) are relative to the recipe too.
        def fix_source(src: Any) -> Any:
            if not isinstance(src, dict):
                return src
            src = dict(src)
            for key in ("path", "registry"):
                p = src.get(key)
                if isinstance(p, str) and p and not Path(p).is_absolute():
                    src[key] = str((base / p).resolve())
            return src

        data_sec["sources"] = [fix_source(s) for s in data_sec["sources"]]
    aug = data_sec.get("augment") if isinstance(data_sec, dict) else None
    for sub, key in (("eda", "dictionary"), ("back_translation", "model")):
        node = aug.get(sub) if isinstance(aug, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str) and (base / node[key]).exists():
            node[key] = str(base / node[key])
    for section, keys in (("data", ("train", "eval")), ("eval", ("data",)), ("model", ("path", "tokenizer")), ("distill", ("teacher",)),
                          ("train", ("deepspeed_config",)), ("refresh", ("new_data",))):
        sec = data.get(section)
        if not isinstance(sec, dict):
            continue
        for key in keys:
            if isinstance(sec.get(key), list):
                sec[key] = [fix(p) for p in sec[key]]
            elif isinstance(sec.get(key), str):
                if section == "data" or section == "eval":
                    sec[key] = [fix(sec[key])]
                else:
                    sec[key] = fix(sec[key])
    return data


def save_recipe(recipe: BaseModel, path: str | Path) -> None:
    """Write the resolved settings (every default filled in) next to the run's outputs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8")
