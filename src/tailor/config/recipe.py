"""The recipe (every section of a run) and the views of it each recipe command reads, plus the serve and
quickstart settings.

A recipe file may hold sections for several commands (train, then eval, then serve the same file): the whole
file is validated against `Recipe`; a command's view names the sections it reads, which its `--help` lists
and its `key=value` overrides may set.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tailor.config.alignment import GrpoConfig, PreferenceConfig
from tailor.config.data import DataConfig
from tailor.config.sections import (AdapterConfig, ChatTemplate, Device, DistillConfig, EvalConfig, InputPath,
                                    ModelConfig, OutputPath, RefreshConfig, Runtime, Section, TrainConfig, flag)


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

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 exposes the server to the network).", json_schema_extra=flag())
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).", json_schema_extra=flag())
    model_name: str | None = Field(None, description="Name clients pass as `model` for the base model (default: the model directory's name).", json_schema_extra=flag())
    adapters: dict[str, InputPath] = Field(default_factory=dict, description="LoRA adapters on the same base: name (the request's `model`) -> adapter directory.")
    engine: Literal["auto", "tailor", "vllm"] = Field("auto", description="Generation engine: vllm (needs vLLM and a CUDA GPU), tailor (built-in continuous batching), auto = vllm when both are there, else tailor.")
    max_batch_size: int = Field(16, ge=1, description="Sequences generating at once (decoded together, one forward pass per adapter per step).")
    max_queue: int = Field(64, ge=0, description="Requests waiting for a batch slot; beyond it new requests get 429 with Retry-After.")
    max_context: int | None = Field(None, ge=8, description="Prompt + generated tokens per request (default: the model's max_position_embeddings).")
    max_tokens: int = Field(256, ge=1, description="Most tokens one request may generate (also the default when a request sets none).")
    max_prompt_chars: int = Field(32000, ge=1, description="Longest prompt (characters of all messages) accepted; longer ones get 400.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body; larger ones get 413.")
    max_n: int = Field(4, ge=1, description="Most choices (`n`) one request may ask for.")
    max_images: int = Field(4, ge=0, description="Vision-language models: most image_url parts one chat request may send (more get 400).")
    max_image_bytes: int = Field(5_000_000, ge=1, description="Vision-language models: largest decoded image (bytes of the PNG/JPEG in the data: URL); larger ones get 400. The base64 request body must also fit max_body_bytes.")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="Vision-language models: most pixels (width x height) of one image, checked before its pixels are decoded; larger ones get 400.")
    request_timeout: float = Field(120.0, gt=0, description="Seconds a request may wait and generate before it is stopped (504).")
    retry_after: int = Field(1, ge=1, description="Seconds suggested in the Retry-After header of a 429.")
    api_keys: list[str] = Field(default_factory=list, description="Accepted `Authorization: Bearer` keys (empty = no authentication). Prefer api_keys_file.")
    api_keys_file: InputPath | None = Field(None, description="File with one API key per line (keeps keys out of recipes and process listings).", json_schema_extra=flag())
    blocklist: list[str] = Field(default_factory=list, description="Regular expressions (case-insensitive); a prompt matching one gets 400 naming the rule.")
    output_rules: list[OutputRule] = Field(default_factory=list, description="Regex replace / PII masks applied to generated text, in order.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The served model: model.path (or the MODEL argument), dtype, trust_remote_code.")
    chat_template: ChatTemplate = None
    device: Device = None

    @model_validator(mode="after")
    def _saved_model(self) -> "ServeConfig":
        if self.model.preset or self.model.tokenizer:
            # the server reads path, dtype and trust_remote_code; the tokenizer is the one saved with the model
            raise ValueError("serve loads a saved model with its own tokenizer: set serve.model.path (or pass MODEL), "
                             "not serve.model.preset or serve.model.tokenizer")
        return self
    registry: OutputPath | None = Field(None, description="Serve from this model registry (a registry file, sqlite:///PATH or a SQLAlchemy URL) instead of a model directory: its production version of registry_model, switching to each newly promoted one without dropping requests.", json_schema_extra=flag())
    registry_model: str | None = Field(None, description="Name of the model in `registry` whose production version is served (also the default request name).", json_schema_extra=flag())
    registry_poll_seconds: float = Field(5.0, gt=0, description="How often the registry's production alias is checked for a new version.")
    runtime: Runtime = True


class TrainRecipe(Section):
    """What `tailor train` reads."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Training and validation data.")
    adapter: AdapterConfig = Field(default_factory=AdapterConfig, description="What trains.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The optimization.")
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig, description="Preference optimization (train.objective dpo, orpo, kto, simpo).")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig, description="GRPO with verifiable rewards (train.objective grpo).")


class Recipe(TrainRecipe):
    """A whole run: which model, which data, which adapter, how to train and how to evaluate (TrainRecipe's
    sections, then the other commands')."""

    eval: EvalConfig = Field(default_factory=EvalConfig, description="Generation-based evaluation.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The OpenAI-compatible server (`tailor serve`).")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Teacher -> student distillation (`tailor distill`).")
    refresh: RefreshConfig = Field(default_factory=RefreshConfig, description="Drift watch, incremental retraining, A/B gate and promotion (`tailor refresh`).")


class QuickstartConfig(Section):
    """The embedded default job: synthetic store-support domain, tiny DeepSeek-V3 model, pretrain, LoRA SFT, eval, merge."""

    out_dir: OutputPath = Field("runs/quickstart", description="Where the quickstart writes data, tokenizer, models and results (relative = to the working directory).")
    preset: str = Field("deepseek-v3-tiny", description="Model preset built from scratch.")
    vocab_size: int = Field(4096, ge=300, description="Size of the byte-level BPE vocabulary trained on the domain corpus.")
    languages: list[Literal["en", "zh"]] = Field(default_factory=lambda: ["en", "zh"], description="Languages of the generated domain data.")
    seed: int = Field(0, description="Seed for the data generator and both training stages.")
    max_facts: int | None = Field(None, ge=1, description="Use only the first N facts per language (toy runs).")
    doc_variants: int = Field(8, ge=1, description="Differently worded copies of the domain documents in the pretraining corpus.")
    train_per_fact: int = Field(24, ge=1, description="Training conversations per fact (question and answer wordings vary).")
    model_overrides: list[str] = Field(default_factory=list, description="key=value changes to the preset's model config, e.g. num_hidden_layers=2.")
    pretrain_overrides: list[str] = Field(default_factory=list, description="Extra key=value overrides for the pretraining recipe (domain=vision: the contrastive alignment stage).")
    sft_overrides: list[str] = Field(default_factory=list, description="Extra key=value overrides for the SFT recipe (both domains), e.g. data.augment.image.rotation=20.")
    domain: Literal["store", "vision"] = Field("store", description="store = the text support-desk domain; vision = product-inspection images with a tiny DeepSeek-VL model (contrastive alignment, SFT, eval on held-out images and wordings).")
    vision_preset: str = Field("deepseek-vl-tiny", description="domain=vision: the vision-language preset built from scratch.")
    vision_train_images: int = Field(1500, ge=10, description="domain=vision: rendered training images (2 conversations of 2 questions each).")
    vision_eval_images: int = Field(100, ge=5, description="domain=vision: held-out images (4 held-out questions each).")
    vision_contrastive_epochs: float = Field(12.0, gt=0, description="domain=vision: epochs of contrastive alignment.")
    vision_sft_epochs: float = Field(4.0, gt=0, description="domain=vision: epochs of SFT.")




class DistillRecipe(TrainRecipe):
    """What `tailor distill` reads (eval: eval.data and eval.batch_size when the teacher answers distill.prompts)."""

    distill: DistillConfig = Field(default_factory=DistillConfig, description="Teacher -> student distillation.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Questions left out of distill.prompts; the teacher's batch size.")


class HpoRecipe(TrainRecipe):
    """What `tailor hpo` reads: training, and eval.* when --metric is a `tailor eval` metric."""

    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation of each trial (metrics other than eval_loss).")


class RefreshRecipe(HpoRecipe):
    """What `tailor refresh` reads."""

    refresh: RefreshConfig = Field(default_factory=RefreshConfig, description="Drift watch, incremental retraining, A/B gate and promotion.")


class DataRecipe(Section):
    """What `tailor data prepare` and `tailor data inspect` read."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The tokenizer (model.tokenizer, else model.path).")
    data: DataConfig = Field(default_factory=DataConfig, description="Sources, cleaning, de-duplication, splits, augmentation.")
