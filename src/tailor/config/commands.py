"""Whole-run schemas: the recipe and the settings of commands built from the shared sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tailor.config.data import DataConfig
from tailor.config.sections import (AdapterConfig, DistillConfig, EvalConfig, ModelConfig, RefreshConfig, Section,
                                    TrainConfig)


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


