"""The settings of every command: its positionals and flags, declared once (tailor.config.flags turns them into
argparse arguments and `--help`).

Choices are Literals that must equal the stages' own registries (config is the base and imports no stage;
tests/test_schema_registries.py checks each against its stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tailor.config.sections import Section, flag

QuantizeMethod = Literal["int8-dynamic", "int8-weight", "int4-weight", "bnb-8bit", "bnb-4bit"]
PruneMethod = Literal["magnitude", "heads", "channels", "experts"]
PruneScope = Literal["global", "layer"]
ExportFormat = Literal["safetensors", "onnx", "torchscript", "gguf", "web", "triton"]
OnnxExporter = Literal["auto", "dynamo", "torchscript"]
WebWeights = Literal["fp32", "int8"]
GgufType = Literal["f16", "q8_0"]
EvalTask = Literal["generation", "lm", "classification", "retrieval"]
HpoSampler = Literal["grid", "random", "tpe"]
HpoPruner = Literal["median", "none"]
MEASURE_MAX_EXAMPLES = 32  # evaluation examples per model in every before/after table


def _pos(**cli) -> dict:
    return flag(positional=True, **cli)


class CommandSettings(Section):
    """A command's arguments: every field is a flag, or a positional when marked so."""

    verbose: bool = Field(False, description="Show library logs too (the global -v flag).", json_schema_extra={"cli": {"skip": True}})


class RecipeCommand(CommandSettings):
    recipe: str = Field(description="YAML recipe (see configs/); relative paths in it are relative to its folder.", json_schema_extra=_pos())
    overrides: list[str] = Field(default_factory=list, description="Override recipe settings, e.g. train.lr=1e-4 (paths relative to the working directory).",
                                 json_schema_extra=_pos(metavar="key=value"))


class MeasureSettings(CommandSettings):
    """The before/after table of quantize, prune, export and distill."""

    eval_data: list[str] | None = Field(None, description="Held-out chat records (answer perplexity + fact accuracy; export also compares greedy tokens with PyTorch) or text (perplexity), measured before and after (distill: on teacher and student after training).")
    max_examples: int = Field(MEASURE_MAX_EXAMPLES, ge=1, description="Evaluation examples measured per model.")
    no_measure: bool = Field(False, description="Skip the before/after measurements and their table.")


SCALE_OUT = "scale-out (torchrun; the engine is train.distributed: ddp, fsdp or deepspeed)"


class TrainCommand(RecipeCommand):
    nproc: int | None = Field(None, ge=1, description="Worker processes on this node (one per GPU); > 1 with train.distributed=none means ddp, unless train.tensor_parallel splits the model across them.", json_schema_extra=flag(group=SCALE_OUT))
    nnodes: int | None = Field(None, ge=1, description="Machines in the run (default 1); run the same command on each.", json_schema_extra=flag(group=SCALE_OUT))
    node_rank: int | None = Field(None, ge=0, description="This machine's index, 0..nnodes-1 (default 0).", json_schema_extra=flag(group=SCALE_OUT))
    master_addr: str | None = Field(None, description="Address of the node-rank 0 machine (needed with --nnodes > 1).", json_schema_extra=flag(group=SCALE_OUT))
    master_port: int | None = Field(None, description="TCP port on the master (default: a free one on one node, 29500 across nodes).", json_schema_extra=flag(group=SCALE_OUT))


class PlanCommand(CommandSettings):
    recipe: str | None = Field(None, description="YAML recipe to plan (default: tailor's defaults, with --model).", json_schema_extra=_pos())
    overrides: list[str] = Field(default_factory=list, description="Override recipe settings, e.g. data.max_length=4096 adapter.method=qlora.", json_schema_extra=_pos(metavar="key=value"))
    model: str | None = Field(None, description="A catalog model instead of the recipe's model.path, e.g. deepseek-r1-distill-qwen-7b (a wrong name lists the catalog).")
    device: Literal["cpu", "cuda"] | None = Field(None, description="Device to plan for (default: cuda when present, else cpu).", json_schema_extra=flag(choice="device"))
    memory_gb: float | None = Field(None, gt=0, description="Device memory in GiB to judge against (default: measured on this machine).")
    nproc: int = Field(1, ge=1, description="Processes (GPUs) sharing the run: DDP replicates, FSDP / ZeRO shard (train.distributed).")
    calibrate: bool = Field(False, description="Time a few real training steps of the model (random weights, the recipe's method, precision and checkpointing, at short sequences and small batches; cut to a few blocks when the whole model is slow) and fit the time model to them, also for a catalog model (default: only for a model on disk, when they need under a quarter of the device memory).")
    json_: bool = Field(False, alias="json", description="Print the plans as JSON instead of tables.", json_schema_extra=flag(flag="--json"))


class DistillCommand(RecipeCommand, MeasureSettings):
    pass


class EvalCommand(CommandSettings):
    target: str = Field(description="A model directory, an adapter directory, or a recipe YAML (evaluates its final model).", json_schema_extra=_pos())
    overrides: list[str] = Field(default_factory=list, description="eval.* settings, e.g. max_new_tokens=32.", json_schema_extra=_pos(metavar="key=value"))
    data: list[str] | None = Field(None, description="Evaluation files (default: eval.data).")
    adapter: str | None = Field(None, description="Adapter directory to apply on top of the model.")
    out: str | None = Field(None, description="Write eval_results.json and examples.jsonl here.")
    task: EvalTask | None = Field(None, description="Same as eval.task (default generation).", json_schema_extra=flag(choice="evaluation task"))
    select_uncertain: int | None = Field(None, ge=1, description="Write the K examples the model is least sure about to OUT/uncertain.jsonl.", json_schema_extra=flag(metavar="K"))
    explain: int | None = Field(None, ge=1, description="Classification: token attributions of the K worst examples (eval.explain_select) to OUT/explanations.jsonl, highlighted in OUT/report.html.", json_schema_extra=flag(metavar="K"))


class MergeCommand(CommandSettings):
    adapter: str = Field(description="Adapter directory (a LoRA run's final/ folder).", json_schema_extra=_pos())
    out: str = Field(description="Output directory for the merged standalone model.")
    base: str | None = Field(None, description="Base model directory (default: the one recorded in the adapter).")


class ChatCommand(CommandSettings):
    model: str | None = Field(None, description="A model directory or an adapter directory; with --url the served model's name (default: the first the server lists).", json_schema_extra=_pos())
    url: str | None = Field(None, description="Talk to a running `tailor serve` (or other OpenAI-compatible server) at this address.")
    api_key: str | None = Field(None, description="API key for --url (default: $TAILOR_API_KEY).")
    adapter: str | None = Field(None, description="Adapter directory to apply on top of the model.")
    prompt: str | None = Field(None, description="Answer this one message and exit (no interactive session).")
    system: str | None = Field(None, description="System message.")
    max_new_tokens: int = Field(128, ge=1, description="Tokens per answer.")
    sample: bool = Field(False, description="Sample instead of greedy decoding.")
    json_schema: str | None = Field(None, description="A JSON-schema file: every answer is JSON matching it (constrained decoding; with --url sent as response_format).", json_schema_extra=flag(metavar="FILE"))
    image: list[str] = Field(default_factory=list, description="An image file (or data: URL) the --prompt asks about, for a vision-language model (repeatable; <image> in the prompt places it, else images come first).", json_schema_extra=flag(action="append", metavar="FILE"))


class ServeCommand(CommandSettings):
    """`tailor serve`; its --host, --port, ... flags are the serve section's own fields (ServeConfig, marked flag())."""

    model: str | None = Field(None, description="A model directory (merged and compressed ones too) or an adapter directory (leave out with --registry); default serve.model.path.", json_schema_extra=_pos())
    overrides: list[str] = Field(default_factory=list, description="serve.* settings, e.g. max_batch_size=8.", json_schema_extra=_pos(metavar="key=value"))
    adapter: list[str] = Field(default_factory=list, description="A LoRA adapter on the same base, chosen by requests with model=NAME (repeatable).", json_schema_extra=flag(action="append", metavar="NAME=DIR"))
    recipe: str | None = Field(None, description="YAML recipe whose serve section holds the settings.")
    serve: dict[str, Any] = Field(default_factory=dict, description="serve.* values given by their flags (--host, --port, ...).",
                                  json_schema_extra={"cli": {"skip": True}})


class CompareCommand(CommandSettings):
    a: str = Field(description="A: a model dir, an adapter dir, or a `tailor eval --out` folder (its examples are reused).", json_schema_extra=_pos())
    b: str = Field(description="B: the same kinds; differences are B − A.", json_schema_extra=_pos())
    overrides: list[str] = Field(default_factory=list, description="eval.* settings for sides that are evaluated, e.g. max_new_tokens=32.", json_schema_extra=_pos(metavar="key=value"))
    data: list[str] | None = Field(None, description="Evaluation files (needed when A or B is a model to evaluate).")
    out: str = Field("runs/compare", description="Write compare.json, a/ b/ evaluations and report.html here.")
    require: list[str] = Field(default_factory=list, description="Gate, repeatable: fact_accuracy>=+0.02 (B − A), fact_accuracy>=0.8 (B itself), ci_low(fact_accuracy)>0; exit 1 if any fails.", json_schema_extra=flag(action="append", metavar="EXPR"))
    scores: list[str] | None = Field(None, description="Compare only these per-example scores (default: every numeric one).")
    id_key: str | None = Field(None, description="Pair examples by this field (default: `id` when all have it, else by position).")
    resamples: int = Field(2000, ge=1, description="Paired bootstrap resamples.")
    seed: int = Field(0, description="Bootstrap seed.")
    top: int = Field(10, ge=0, description="Examples listed where A and B differ most.")


class ReportCommand(CommandSettings):
    run_dir: str = Field(description="A training output dir, an eval or compare --out dir, or the quickstart out_dir.", json_schema_extra=_pos())
    out: str | None = Field(None, description="HTML file to write (default RUN_DIR/report.html); the Markdown summary goes beside it.")


class QuickstartCommand(CommandSettings):
    overrides: list[str] = Field(default_factory=list, description="Quickstart settings, e.g. out_dir=runs/qs.", json_schema_extra=_pos(metavar="key=value"))


class DataPrepareCommand(RecipeCommand):
    force: bool = Field(False, description="Prepare again even when inputs and settings are unchanged.")


class DataInspectCommand(CommandSettings):
    target: str = Field(description="A prepared dataset directory, a recipe YAML, or a data file/folder (with --tokenizer).", json_schema_extra=_pos())
    overrides: list[str] = Field(default_factory=list, description="Recipe settings, e.g. data.max_length=256.", json_schema_extra=_pos(metavar="key=value"))
    tokenizer: str | None = Field(None, description="Tokenizer or model directory (default: the one the dataset was prepared with).")
    samples: int = Field(3, ge=0, description="Rendered samples to show per split.")
    out: str | None = Field(None, description="Folder for token_lengths.png (default: the prepared directory).")


class AnnotationExportCommand(CommandSettings):
    rows: str = Field(description="Rows to label: uncertain.jsonl from `tailor eval --select-uncertain K` (classification or chat rows).", json_schema_extra=_pos())
    out: str = Field(description="The Label Studio import file to write (JSON); label_config.xml is written beside it.")
    labels: list[str] | None = Field(None, description="Classification: the choices offered (default: every label and suggested label in the rows).")


class AnnotationImportCommand(CommandSettings):
    export: str = Field(description="Label Studio's JSON export (Export > JSON) of the annotated project.", json_schema_extra=_pos())
    out: str = Field(description="Folder for train.jsonl (rows the annotators agree on), adjudicate.jsonl (disagreements, every vote) and agreement.json (Cohen's / Fleiss' kappa).")


class ModelInitCommand(CommandSettings):
    preset: str = Field(description="Preset name (`tailor model presets` lists them).", json_schema_extra=_pos())
    out: str = Field(description="Output model directory.")
    tokenizer: str = Field(description="Tokenizer directory (sets the vocabulary size and special ids).")
    seed: int = Field(0, description="Initialization seed.")
    overrides: list[str] = Field(default_factory=list, description="Config overrides, e.g. num_hidden_layers=2.", json_schema_extra=_pos(metavar="key=value"))


class ModelPresetsCommand(CommandSettings):
    pass


class TokenizerTrainCommand(CommandSettings):
    data: list[str] = Field(description=".txt (one document a line) or .jsonl/.json files.")
    vocab_size: int = Field(description="Vocabulary size including special tokens.")
    out: str = Field(description="Output tokenizer directory.")
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a merge.")


class QuantizeCommand(MeasureSettings):
    model: str = Field(description="Model directory (a merged or fully trained model).", json_schema_extra=_pos())
    out: str = Field(description="Output directory for the quantized model and compression_report.json.")
    method: QuantizeMethod = Field(description="int8-dynamic (CPU, fastest), int8-weight, int4-weight; bnb-8bit, bnb-4bit (CUDA).", json_schema_extra=flag(choice="quantization method"))
    group_size: int = Field(32, ge=1, description="int4-weight: input channels per scale.")


class PruneCommand(MeasureSettings):
    model: str = Field(description="Model directory (a merged or fully trained model).", json_schema_extra=_pos())
    out: str = Field(description="Output directory for the pruned model and compression_report.json.")
    method: PruneMethod = Field(description="magnitude (unstructured), heads, channels or experts (structured).", json_schema_extra=flag(choice="pruning method"))
    amount: float = Field(0.2, description="Share to remove, between 0 and 1.")
    scope: PruneScope = Field("global", description="magnitude: global (one threshold) or layer (amount in every layer).", json_schema_extra=flag(choice="pruning scope"))
    recover_steps: int = Field(0, description="Optimizer steps of recovery fine-tuning on --data.")
    data: list[str] | None = Field(None, description="Calibration data for experts pruning, and training data for --recover-steps.")


class ExportCommand(MeasureSettings):
    model: str = Field(description="A model directory or an adapter directory (merged into its base first).", json_schema_extra=_pos())
    format: ExportFormat = Field(description="safetensors, onnx, torchscript, gguf, web (a static chat page running the model in the browser) or triton (a Triton Inference Server model repository: the ONNX model, tokenizer pre/post-processing, an ensemble and a generator).", json_schema_extra=flag(choice="export format"))
    out: str = Field(description="Output directory.")
    onnx_exporter: OnnxExporter = Field("auto", description="onnx, web and triton: dynamo, torchscript or auto (dynamo, else torchscript).", json_schema_extra=flag(choice="ONNX exporter"))
    web_weights: WebWeights = Field("fp32", description="web: fp32 (greedy answers identical to PyTorch) or int8 (onnxruntime dynamic quantization of the MatMul weights: smaller download, answers may differ).", json_schema_extra=flag(choice="web weights"))
    gguf_type: GgufType | None = Field(None, description="gguf: f16 (default) or q8_0.", json_schema_extra=flag(choice="GGUF type"))


class HpoSettings(CommandSettings):
    """How `tailor hpo` searches (tailor.mlops.hpo.run takes these; it checks the ranges, naming the flags)."""

    space: str | None = Field(None, description="YAML mapping recipe keys to distributions: train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}; adapter.r: {type: int, low: 4, high: 64, step: 4}; train.batch_size: {type: categorical, choices: [8, 16]}.")
    trials: int | None = Field(None, description="Trials the study should hold, counting earlier runs (default: the grid size for grid, else 20); failed trials are not counted.")
    workers: int = Field(1, description="Worker processes on this machine.")
    storage: str | None = Field(None, description="SQLAlchemy URL of the study database (default sqlite:///OUT/study.db); postgresql://... lets workers on several machines share one study.")
    study: str = Field("tailor-hpo", description="Study name in the storage; the same --storage and --study resume the study or join it from another machine.")
    sampler: HpoSampler = Field("tpe", description="grid, random or tpe.", json_schema_extra=flag(choice="sampler"))
    metric: str = Field("eval_loss", description="eval_loss (validation loss from training) or a `tailor eval` metric on eval.data: fact_accuracy, exact_match, token_f1, answer_perplexity, ...")
    direction: Literal["minimize", "maximize"] | None = Field(None, description="Default: from the metric's name (loss/perplexity: minimize; accuracy/f1/match/...: maximize).", json_schema_extra=flag(choice="direction"))
    pruner: HpoPruner | None = Field(None, description="median: stop a trial whose best validation loss so far is worse than the median of earlier trials at the same step (default with eval_loss; none with other metrics).", json_schema_extra=flag(choice="pruner"))
    prune_startup_trials: int = Field(2, description="median: finished trials before any is pruned.")
    prune_warmup_steps: int = Field(0, description="Training steps before a trial can be pruned.")
    seed: int | None = Field(None, description="Sampler seed, mixed with the worker index and the number of trials already in the study, so workers and resumed runs draw new values (default: random).")
    heartbeat: int = Field(60, description="Seconds between a running trial's heartbeats; a trial silent for twice this is failed and re-queued.")
    baseline: bool = Field(False, description="First trial: the recipe's own values of the searched keys.")
    out_dir: str | Path = Field("runs/hpo", description="trial-N/ folders, study.db, plots, best.json and best_recipe.yaml.", json_schema_extra=flag(flag="--out"))


class HpoCommand(RecipeCommand, HpoSettings):
    space: str = Field(description=HpoSettings.model_fields["space"].description)


class RegistryCommand(CommandSettings):
    url: str | None = Field(None, description="The registry: a SQLite file or an SQLAlchemy URL such as postgresql+psycopg://user@host/db (default: $TAILOR_REGISTRY, else runs/registry.db).")


class RegistryListCommand(RegistryCommand):
    name: str | None = Field(None, description="List only this model's versions.", json_schema_extra=_pos())
    json_: bool = Field(False, alias="json", description="Print JSON instead of a table.", json_schema_extra=flag(flag="--json"))


class RegistryShowCommand(RegistryCommand):
    name: str = Field(description="Model name.", json_schema_extra=_pos())
    version: int | None = Field(None, description="Version number (default: the production version).", json_schema_extra=_pos())
    json_: bool = Field(False, alias="json", description="Print JSON (the version and its events) instead of tables.", json_schema_extra=flag(flag="--json"))


class RegistryRegisterCommand(RegistryCommand):
    name: str = Field(description="Model name, e.g. support-bot (created on first use).", json_schema_extra=_pos())
    path: str = Field(description="The model directory or adapter directory (a training run's final/).", json_schema_extra=_pos())
    base: str | None = Field(None, description="Base model of an adapter (default: the one recorded in adapter_config.json).")
    recipe: str | None = Field(None, description="The recipe it was trained with: its data.train is what `tailor refresh` replays, its eval.data the held-out set the A/B gate keeps (and the data fingerprint comes from it).")
    metrics: str | None = Field(None, description="JSON metrics on its held-out set, e.g. `tailor eval --out DIR`'s DIR/eval_results.json (the drift baseline of `tailor refresh`).")
    data_fingerprint: str | None = Field(None, description="Fingerprint of its training data (default: hash of the recipe's data.train files).")
    parent: int | None = Field(None, description="The version it was trained from.")
    note: str = Field("", description="Free text kept with the version.")
    stage: Literal["candidate", "production"] = Field("candidate", description="candidate, or production (promoted at once).", json_schema_extra=flag(choice="stage"))


class RegistryPromoteCommand(RegistryCommand):
    name: str = Field(description="Model name.", json_schema_extra=_pos())
    version: int = Field(description="The version to make production (the current one is archived).", json_schema_extra=_pos())
    reason: str = Field("", description="Why (kept in the audit log).")


class RegistryRollbackCommand(RegistryCommand):
    name: str = Field(description="Model name.", json_schema_extra=_pos())
    to: int | None = Field(None, description="The version to restore (default: the one the production version replaced).")
    reason: str = Field("", description="Why (kept in the audit log).")


class RefreshCommand(RecipeCommand):
    force: bool = Field(False, description="Retrain and gate even without drift (or when this refresh already ran).")
    url: str | None = Field(None, description="The registry (default: refresh.registry, else $TAILOR_REGISTRY, else runs/registry.db).")


class UiCommand(CommandSettings):
    """`tailor ui`: the web UI (tailor.ui)."""

    host: str = Field("127.0.0.1", description="Address to listen on; any address other than loopback (127.0.0.1, localhost, ::1) requires an access token, made at start and printed.")
    port: int = Field(7860, ge=1, le=65535, description="TCP port.")
    workspace: str = Field("runs/ui", description="Folder of the UI's project: uploads, prepared data, models, runs, the job table (jobs.db).")
    root: list[str] = Field(default_factory=list, description="Extra folders the file pickers may read (repeatable; the workspace is always one); nothing outside them is readable.", json_schema_extra=flag(action="append", metavar="DIR"))
    token: str | None = Field(None, description="Access token to require (default: a random one when --host is not loopback, none on loopback).")
    max_upload_mb: float = Field(512.0, gt=0, description="Largest file an upload may send, in MiB.")
    device: str | None = Field(None, description="Device every job runs on (cpu, cuda, cuda:1, ...; sets TAILOR_DEVICE for them) and the name of its queue: one training job at a time per device (default: the best device, one queue).")
    jobs_per_device: int = Field(1, ge=1, description="Training, evaluation and export jobs that may run at once on the device; the rest wait in the queue.")
    nice: int = Field(10, ge=0, le=19, description="CPU priority lowering of jobs (os.nice), so pages answer while a job uses every core.")
