"""The recipe schema: the single source of truth for YAML files, `key=value` overrides and `--help`.

Every setting is declared once here with a type, a default and a one-line description.
Unknown keys are errors that name the key and the nearest valid one.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

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


class DataConfig(Section):
    train: list[str] = Field(default_factory=list, description="Training files (.jsonl/.json/.txt): chat `messages`, alpaca, sharegpt, or raw `text`.")
    eval: list[str] = Field(default_factory=list, description="Validation files in the same formats; empty = hold out data.val_ratio of train.")
    val_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of training rows held out for validation when data.eval is empty.")
    format: Literal["auto", "text", "messages", "alpaca", "sharegpt"] = Field("auto", description="Record format; auto detects it per record.")
    text_field: str = Field("text", description="Field that holds raw text in `text` records.")
    max_length: int = Field(512, ge=8, description="Maximum tokens per training sequence (longer conversations are truncated and counted).")
    packing: bool | None = Field(None, description="Concatenate and cut into max_length blocks; default on for pretrain, off for sft.")
    chat_template: str | None = Field(None, description="Override the tokenizer's chat template: a built-in name (deepseek, chatml) or a .jinja file.")
    system_prompt: str | None = Field(None, description="System message prepended to conversations that have none.")

    _one_file_is_a_list = field_validator("train", "eval", mode="before")(lambda v: [v] if isinstance(v, str) else v)


class AdapterConfig(Section):
    method: Literal["full", "lora", "freeze"] = Field("lora", description="full = all weights; lora = low-rank adapters (peft); freeze = only the last N blocks and the head train.")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout (must be 0 when LoRA reaches fused MoE experts).")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Module names LoRA wraps, or all-linear (every linear layer but the head).")
    freeze_last_n: int = Field(2, ge=0, description="With method=freeze: how many final transformer blocks train (the head and final norm always do).")


class TrainConfig(Section):
    objective: Literal["pretrain", "sft"] = Field("sft", description="pretrain = loss on all tokens; sft = loss on assistant tokens (end-of-turn included).")
    output_dir: str = Field("runs/train", description="Run directory: checkpoints, final model or adapter, metrics.jsonl, TensorBoard logs, resolved config.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when train.max_steps > 0).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = use train.epochs.")
    batch_size: int = Field(8, ge=1, description="Sequences per device per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps (effective batch = batch_size x grad_accum x processes).")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps for linear warm-up.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field("cosine", description="Learning-rate schedule after warm-up.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = off).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPUs without bf16.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    seed: int = Field(42, description="Seed for weights, data order and dropout (fixed seed = reproducible run).")
    logging_steps: int = Field(10, ge=1, description="Log loss, learning rate, grad norm and tokens/s every N steps.")
    save_steps: int = Field(200, ge=1, description="Write a checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Keep at most this many checkpoints.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate validation loss every N steps (default: once per epoch when there is validation data).")
    resume: bool = Field(False, description="Continue from the latest checkpoint in train.output_dir.")
    device: str | None = Field(None, description="Force a device (cpu, cuda, mps); default picks the best available.")


class EvalConfig(Section):
    data: list[str] = Field(default_factory=list, description="Evaluation files: chat records whose last assistant turn is the reference; optional `answer` = the fact to contain.")
    max_new_tokens: int = Field(64, ge=1, description="Tokens generated per answer.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    max_examples: int | None = Field(None, ge=1, description="Evaluate only the first N examples.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature (with eval.do_sample).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling share (with eval.do_sample).")
    seed: int = Field(0, description="Seed for sampled generation.")

    _one_file_is_a_list = field_validator("data", mode="before")(lambda v: [v] if isinstance(v, str) else v)


class Recipe(Section):
    """A whole run: which model, which data, which adapter, how to train and how to evaluate."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Training and validation data.")
    adapter: AdapterConfig = Field(default_factory=AdapterConfig, description="What trains.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The optimization.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Generation-based evaluation.")


class QuickstartConfig(Section):
    """The embedded default job: synthetic store-support domain, tiny DeepSeek-V3 model, pretrain, LoRA SFT, eval, merge."""

    out_dir: str = Field("runs/quickstart", description="Where the quickstart writes data, tokenizer, models and results.")
    preset: str = Field("deepseek-v3-tiny", description="Model preset built from scratch.")
    vocab_size: int = Field(4096, ge=300, description="Size of the byte-level BPE vocabulary trained on the domain corpus.")
    languages: list[Literal["en", "zh"]] = Field(default_factory=lambda: ["en", "zh"], description="Languages of the generated domain data.")
    seed: int = Field(0, description="Seed for the data generator and both training stages.")
    max_facts: int | None = Field(None, ge=1, description="Use only the first N facts per language (toy runs).")
    doc_variants: int = Field(8, ge=1, description="Differently worded copies of the domain documents in the pretraining corpus.")
    train_per_fact: int = Field(12, ge=1, description="Training conversations per fact (question and answer wordings vary).")
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
        rows.append((dotted, _type_name(ann), repr(default) if default is not None else "-", info.description or ""))
    return rows


def _type_name(ann: Any) -> str:
    origin = get_origin(ann)
    if origin is Literal:
        return "|".join(str(a) for a in get_args(ann))
    if origin is None:
        return getattr(ann, "__name__", str(ann))
    args = [a for a in get_args(ann) if a is not type(None)]
    inner = "|".join(_type_name(a) for a in args)
    if getattr(origin, "__name__", "") == "list":
        return f"list[{inner}]"
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


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
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
        data = _merge(data, parse_overrides(overrides, Recipe))
        where += " + command-line overrides"
    return build(Recipe, data, where)


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make file paths in a recipe relative to the recipe, so recipes can be run from anywhere."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}

    def fix(p: Any) -> Any:
        if isinstance(p, str) and p and not Path(p).is_absolute() and (base / p).exists():
            return str(base / p)
        return p

    for section, keys in (("data", ("train", "eval")), ("eval", ("data",)), ("model", ("path", "tokenizer"))):
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
