"""The one command table: each command parses its arguments and calls a stage's plain function.

User errors (`TailorError`) print one clear message and exit 2 without a traceback; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from tailor.config import ServeConfig
from tailor.config import (EvalConfig, QuickstartConfig, Recipe, build, help_text, load_recipe, merge_settings,
                           parse_overrides, parse_preset_overrides)
from tailor.errors import TailorError
from tailor.mlops.commands import (cmd_hpo, cmd_registry_list, cmd_registry_show, cmd_registry_register, cmd_registry_promote, cmd_registry_rollback, cmd_refresh, _hpo_args, _registry_list_args, _registry_show_args, _registry_register_args, _registry_promote_args, _registry_rollback_args, _refresh_args)

log = logging.getLogger("tailor")


def _console():
    from rich.console import Console

    return Console(stderr=False)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_train(a: argparse.Namespace) -> int:
    from tailor.training.distributed import is_main_process, launch
    from tailor.training.run import run

    launcher = {"--nnodes": a.nnodes, "--node-rank": a.node_rank, "--master-addr": a.master_addr, "--master-port": a.master_port}
    if a.nproc is not None:
        return launch(a.recipe, a.overrides, a.nproc, a.nnodes or 1, a.node_rank or 0, a.master_addr, a.master_port,
                      verbose=a.verbose)
    given = [flag for flag, value in launcher.items() if value is not None]
    if given:
        raise TailorError(f"{', '.join(given)} without --nproc", where="tailor train",
                          fix="add --nproc N (processes on this node) to launch through torchrun")
    recipe = load_recipe(a.recipe, a.overrides)
    result = run(recipe)
    m = result.metrics
    if is_main_process():  # under torchrun every worker runs this command; one line is enough
        _console().print(f"[bold green]trained[/] {m['steps']} steps in {m['seconds']}s, final train loss "
                         f"{m['train_loss']:.4f} -> {result.final_dir}")
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    from tailor.training.distill import run
    from tailor.training.distill_report import check_eval_data, report

    recipe = load_recipe(a.recipe, a.overrides)
    if a.no_measure and a.eval_data:
        raise TailorError("--eval-data is measured after training; --no-measure skips that", where="--no-measure",
                          fix="drop one of the two")
    check_eval_data(a.eval_data, a.max_examples)  # before the run, not after it
    result = run(recipe)
    m = result.metrics
    _console().print(f"[bold green]distilled[/] {m['steps']} steps in {m['seconds']}s, final train loss {m['train_loss']:.4f}, "
                     f"KL to the teacher {m['teacher_kl_before']:.4f} -> {m['teacher_kl_after']:.4f} "
                     f"({m['teacher_kl_data']} data) -> {result.final_dir}")
    if not a.no_measure:
        report(recipe.distill.teacher, result.final_dir, result.output_dir, eval_data=a.eval_data,
               max_examples=a.max_examples, console=_console())
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from tailor.evaluation.run import run, summary_metrics

    target = Path(a.target)
    overrides = [o if o.startswith("eval.") else f"eval.{o}" for o in a.overrides]
    if target.suffix in (".yaml", ".yml"):
        recipe = load_recipe(target, overrides)
        model_dir, cfg, template = Path(recipe.train.output_dir) / "final", recipe.eval, recipe.data.chat_template
    else:
        cfg = build(EvalConfig, parse_overrides(overrides, Recipe).get("eval", {}), "command line")
        model_dir, template = target, None
    if a.select_uncertain is not None:
        if a.select_uncertain < 1:
            raise TailorError(f"--select-uncertain {a.select_uncertain}: K must be at least 1", where="--select-uncertain")
        cfg.select_uncertain = a.select_uncertain
    result = run(model_dir, a.data or None, cfg, adapter=a.adapter, out_dir=a.out, chat_template=template, task=a.task)
    _print_metrics(summary_metrics(result.metrics), f"{result.task} evaluation of {model_dir}")
    for name, path in result.files.items():
        _console().print(f"[bold green]wrote[/] {name}: {path}")
    return 0


def cmd_merge(a: argparse.Namespace) -> int:
    from tailor.adapters.merge import merge

    out = merge(a.adapter, a.out, base=a.base)
    _console().print(f"[bold green]merged[/] {a.adapter} -> {out} (loads with AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    from tailor.evaluation.run import load_for_eval
    from tailor.serving.chat import remote_answer, remote_repl, repl, stream_answer

    if a.url:
        key = a.api_key or os.environ.get("TAILOR_API_KEY")
        if a.prompt is not None:
            messages = ([{"role": "system", "content": a.system}] if a.system else []) + [{"role": "user", "content": a.prompt}]
            print(remote_answer(a.url, messages, a.model, a.max_new_tokens, 0.7 if a.sample else 0.0, api_key=key))
            return 0
        remote_repl(a.url, a.model, a.system, a.max_new_tokens, api_key=key)
        return 0
    if not a.model:
        raise TailorError("chat needs a model directory, or --url of a running server", where="tailor chat",
                          fix="tailor chat MODEL_DIR, or tailor chat --url http://127.0.0.1:8000")
    model, tokenizer = load_for_eval(a.model, a.adapter)
    if a.prompt is not None:
        messages = ([{"role": "system", "content": a.system}] if a.system else []) + [{"role": "user", "content": a.prompt}]
        print(stream_answer(model, tokenizer, messages, a.max_new_tokens, a.sample))
        return 0
    repl(model, tokenizer, a.system, a.max_new_tokens, a.sample)
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from tailor.mlops.follow import registry_source
    from tailor.serving.server import parse_adapters, serve

    model, extra = a.model, []
    if model is not None and "=" in model and not Path(model).exists():
        model, extra = None, [model]  # no MODEL_DIR (serving from --registry): argparse took the first key=value
    overrides = [o if o.startswith("serve.") else f"serve.{o}" for o in extra + a.overrides]
    if a.recipe:
        cfg = load_recipe(a.recipe, overrides).serve
    else:
        cfg = build(ServeConfig, parse_overrides(overrides, Recipe).get("serve", {}), "command line")
    flags = {k: v for k, v in (("host", a.host), ("port", a.port), ("model_name", a.model_name),
                               ("api_keys_file", a.api_keys_file), ("registry", a.registry),
                               ("registry_model", a.registry_model)) if v is not None}
    if a.adapter:
        flags["adapters"] = {**cfg.adapters, **parse_adapters(a.adapter)}
    cfg = build(ServeConfig, {**cfg.model_dump(), **flags}, "command line")
    serve(model, cfg, registry_source(cfg))
    return 0


def cmd_quickstart(a: argparse.Namespace) -> int:
    from tailor.quickstart import run

    cfg = build(QuickstartConfig, parse_overrides(a.overrides, QuickstartConfig), "command line")
    run(cfg)
    return 0


def cmd_data_prepare(a: argparse.Namespace) -> int:
    from tailor.data.prepare import run

    recipe = load_recipe(a.recipe, a.overrides)
    prepared = run(recipe, base_dir=Path(a.recipe).parent, force=a.force)
    con = _console()
    if prepared.cached:
        con.print(f"[bold green]unchanged inputs and settings[/]: reusing {prepared.path}")
    con.print((prepared.path / "report.txt").read_text(encoding="utf-8").rstrip(), markup=False)
    con.print(f"[bold green]prepared[/] {', '.join(f'{k} {v}' for k, v in prepared.splits.items())} -> {prepared.path}")
    return 0


def cmd_data_inspect(a: argparse.Namespace) -> int:
    from tailor.data.inspect import inspect_prepared, print_result
    from tailor.data.prepare import is_prepared_dir, open_prepared, run
    from tailor.models.loading import load_tokenizer

    target = Path(a.target)
    if target.suffix in (".yaml", ".yml"):
        recipe = load_recipe(target, a.overrides)
        prepared = run(recipe, base_dir=target.parent)
    elif is_prepared_dir(target):
        prepared = open_prepared(target)
    else:
        # A raw data file or folder: prepare it as is (no cleaning, no de-dup) into a scratch folder.
        if not a.tokenizer:
            raise TailorError("inspecting a data file needs a tokenizer", where="--tokenizer",
                              fix="pass --tokenizer DIR (a model or tokenizer directory), or inspect a recipe")
        scratch = Path(a.out or "runs/inspect") / "prepared"
        settings = {"data": {"sources": [{"path": str(target.resolve())}], "dedup": {"exact": False, "near": False},
                             "prepared_dir": str(scratch)}, "model": {"tokenizer": a.tokenizer}}
        recipe = build(Recipe, merge_settings(settings, parse_overrides(a.overrides, Recipe)), "command line")
        prepared = run(recipe)
    tok_path = a.tokenizer or prepared.manifest.get("tokenizer")
    tokenizer = load_tokenizer(tok_path, chat_template=prepared.manifest.get("chat_template")) if tok_path else None
    result = inspect_prepared(prepared, tokenizer, samples=a.samples, out_dir=a.out or prepared.path)
    print_result(result, _console())
    if result.failed:
        print("error: " + "; ".join(c.message for c in result.failed), file=sys.stderr)
        return 1
    return 0


def cmd_model_init(a: argparse.Namespace) -> int:
    from tailor.models.loading import count_parameters, load_tokenizer
    from tailor.models.presets import init_model

    overrides = parse_preset_overrides(a.overrides)
    model = init_model(a.preset, load_tokenizer(a.tokenizer), out_dir=a.out, seed=a.seed, **overrides)
    _, total = count_parameters(model)
    _console().print(f"[bold green]built[/] {a.preset} ({total:,} parameters) -> {a.out}")
    return 0


def cmd_model_presets(a: argparse.Namespace) -> int:
    from tailor.models.presets import PRESETS

    for name in PRESETS:
        print(name)
    return 0


def cmd_tokenizer_train(a: argparse.Namespace) -> int:
    from tailor.models.tokenizer import corpus_from_files, train_tokenizer

    tok = train_tokenizer(corpus_from_files(a.data), a.vocab_size, a.out, min_frequency=a.min_frequency)
    _console().print(f"[bold green]trained[/] tokenizer with {len(tok):,} tokens -> {a.out}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from tailor.evaluation.compare import print_comparison, run

    overrides = [o if o.startswith("eval.") else f"eval.{o}" for o in a.overrides]
    cfg = build(EvalConfig, parse_overrides(overrides, Recipe).get("eval", {}), "command line")
    res = run(a.a, a.b, a.data or None, cfg, out_dir=a.out, requirements=a.require, keys=a.scores,
              id_key=a.id_key, resamples=a.resamples, seed=a.seed, top=a.top)
    print_comparison(res, _console())
    if res.report:
        _console().print(f"compare.json and report -> {res.report}")
    failed = [g for g in res.gate if not g["holds"]]
    if failed:
        print("gate failed: " + "; ".join(f"{g['requirement']} ({g['quantity']} = {g['value']})" for g in failed),
              file=sys.stderr)
        return 1
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from rich.markdown import Markdown

    from tailor.evaluation.report import write_report

    path = write_report(a.run_dir, a.out)
    _console().print(Markdown(path.with_suffix(".md").read_text(encoding="utf-8")))
    _console().print(f"[bold green]report[/] -> {path} (and {path.with_suffix('.md')})")
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from tailor.compression.run import quantize

    res = quantize(a.model, a.method, a.out, eval_data=a.eval_data, group_size=a.group_size,
                   measure=not a.no_measure, max_examples=a.max_examples, console=_console())
    m = res.details
    if "linear_weight_bytes" in m:
        lw = m["linear_weight_bytes"]
        _console().print(f"quantized {len(m['quantized'])} linear layers ({lw['ratio']:.1%} of their float32 bytes); "
                         f"{len(m['not_quantized'])} weights kept in float (reasons in {res.out_dir / 'tailor_quantization.json'})")
    elif "quantized" in m:  # bitsandbytes: its own layers, listed in the manifest
        _console().print(f"bitsandbytes quantized {len(m['quantized'])} linear layers; {len(m['not_quantized'])} "
                         f"weights kept in the compute dtype (listed in {res.out_dir / 'tailor_quantization.json'})")
    _console().print(f"[bold green]quantized[/] ({a.method}) -> {res.out_dir}; report: {res.report}")
    return 0


def cmd_prune(a: argparse.Namespace) -> int:
    from tailor.compression.run import prune

    res = prune(a.model, a.method, a.out, amount=a.amount, scope=a.scope, calibration_data=a.data,
                recover_steps=a.recover_steps, recover_data=a.data, eval_data=a.eval_data,
                measure=not a.no_measure, max_examples=a.max_examples, console=_console())
    r = res.details
    if a.method == "magnitude":
        _print_metrics({k: v for k, v in r["sparsity"]["per_layer"].items()}, "sparsity per layer")
    _console().print(f"parameters {r['parameters'][0]:,} -> {r['parameters'][1]:,}, sparsity "
                     f"{r['sparsity']['overall']:.1%}; [bold green]pruned[/] ({a.method}) -> {res.out_dir}; report: {res.report}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from tailor.export.report import export_with_report

    options = {}
    if a.format == "onnx":
        options["exporter"] = a.onnx_exporter
    elif a.onnx_exporter != "auto":
        raise TailorError("--onnx-exporter applies to --format onnx only", where="--onnx-exporter")
    if a.format == "gguf":
        options["outtype"] = a.gguf_type or "f16"
    elif a.gguf_type is not None:
        raise TailorError("--gguf-type applies to --format gguf only", where="--gguf-type")
    res = export_with_report(a.model, a.format, a.out, eval_data=a.eval_data, max_examples=a.max_examples,
                             measure=not a.no_measure, console=_console(), **options)
    _console().print(f"[bold green]exported[/] {a.model} ({a.format}) -> {res.path}"
                     + (f"; report: {res.report}" if res.report else ""))
    return 0


def _print_metrics(metrics: dict, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    _console().print(table)


# ---------------------------------------------------------------------------------------------
# The command table


def _train_args(p):
    p.add_argument("recipe", help="YAML recipe (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe settings, e.g. train.lr=1e-4")


def _measure_args(p, eval_help: str, skip_help: str) -> None:
    """The before/after table's flags, shared by quantize, prune, distill and export."""
    p.add_argument("--eval-data", nargs="+", help=eval_help)
    p.add_argument("--max-examples", type=int, default=32, help="evaluation examples measured per model (default 32)")
    p.add_argument("--no-measure", action="store_true", help=skip_help)


def _distill_args(p):
    _train_args(p)
    _measure_args(p, "held-out chat records (perplexity of answers + fact accuracy) or text, measured on teacher "
                     "and student after training", "skip the teacher/student table")


def _train_launch_args(p):
    _train_args(p)
    g = p.add_argument_group("scale-out (torchrun; the engine is train.distributed: ddp, fsdp or deepspeed)")
    g.add_argument("--nproc", type=int, help="worker processes on this node (one per GPU); > 1 with "
                                             "train.distributed=none means ddp")
    g.add_argument("--nnodes", type=int, help="machines in the run (default 1); run the same command on each")
    g.add_argument("--node-rank", type=int, help="this machine's index, 0..nnodes-1 (default 0)")
    g.add_argument("--master-addr", help="address of the node-rank 0 machine (needed with --nnodes > 1)")
    g.add_argument("--master-port", type=int, help="TCP port on the master (default: a free one on one node, 29500 "
                                                   "across nodes)")


def _eval_args(p):
    p.add_argument("target", help="a model directory, an adapter directory, or a recipe YAML (evaluates its final model)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="eval.* settings, e.g. max_new_tokens=32")
    p.add_argument("--data", nargs="+", help="evaluation files (default: eval.data)")
    p.add_argument("--adapter", help="adapter directory to apply on top of the model")
    p.add_argument("--out", help="write eval_results.json and examples.jsonl here")
    p.add_argument("--task", help="generation (default), lm, classification or retrieval (same as eval.task)")
    p.add_argument("--select-uncertain", type=int, metavar="K",
                   help="write the K examples the model is least sure about to OUT/uncertain.jsonl")


def _merge_args(p):
    p.add_argument("adapter", help="adapter directory (a LoRA run's final/ folder)")
    p.add_argument("--out", required=True, help="output directory for the merged standalone model")
    p.add_argument("--base", help="base model directory (default: the one recorded in the adapter)")


def _chat_args(p):
    p.add_argument("model", nargs="?", help="a model directory or an adapter directory; with --url the served model's "
                                           "name (default: the first the server lists)")
    p.add_argument("--url", help="talk to a running `tailor serve` (or other OpenAI-compatible server) at this address")
    p.add_argument("--api-key", help="API key for --url (default: $TAILOR_API_KEY)")
    p.add_argument("--adapter", help="adapter directory to apply on top of the model")
    p.add_argument("--prompt", help="answer this one message and exit (no interactive session)")
    p.add_argument("--system", help="system message")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens per answer (default 128)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")


def _serve_args(p):
    p.add_argument("model", nargs="?", help="a model directory (merged and compressed ones too) or an adapter directory "
                                           "(leave out with --registry)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="serve.* settings, e.g. max_batch_size=8")
    p.add_argument("--registry", help="serve the production version from this model registry (file or SQLAlchemy URL) "
                                      "and switch to each newly promoted version without dropping requests")
    p.add_argument("--registry-model", help="with --registry: the model name whose production version is served")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="a LoRA adapter on the same base, chosen by requests with model=NAME (repeatable)")
    p.add_argument("--recipe", help="YAML recipe whose serve section holds the settings")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument("--model-name", help="name of the base model in requests (default: the directory's name)")
    p.add_argument("--api-keys-file", help="file with one accepted API key per line (requests need Authorization: Bearer KEY)")


def _quickstart_args(p):
    p.add_argument("overrides", nargs="*", metavar="key=value", help="quickstart settings, e.g. out_dir=runs/qs")


def _data_prepare_args(p):
    p.add_argument("recipe", help="YAML recipe with a data section (data.sources, clean, dedup, split, augment)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe settings, e.g. data.split.test=0.1")
    p.add_argument("--force", action="store_true", help="prepare again even when inputs and settings are unchanged")


def _data_inspect_args(p):
    p.add_argument("target", help="a prepared dataset directory, a recipe YAML, or a data file/folder (with --tokenizer)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe settings, e.g. data.max_length=256")
    p.add_argument("--tokenizer", help="tokenizer or model directory (default: the one the dataset was prepared with)")
    p.add_argument("--samples", type=int, default=3, help="rendered samples to show per split (default 3)")
    p.add_argument("--out", help="folder for token_lengths.png (default: the prepared directory)")


def _model_init_args(p):
    p.add_argument("preset", help="preset name (tailor model presets lists them)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (sets the vocabulary size and special ids)")
    p.add_argument("--seed", type=int, default=0, help="initialization seed (default 0)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. num_hidden_layers=2")


def _tokenizer_train_args(p):
    p.add_argument("--data", nargs="+", required=True, help=".txt (one document a line) or .jsonl/.json files")
    p.add_argument("--vocab-size", type=int, required=True, help="vocabulary size including special tokens")
    p.add_argument("--out", required=True, help="output tokenizer directory")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair frequency for a merge (default 2)")


def _compare_args(p):
    p.add_argument("a", help="A: a model dir, an adapter dir, or a `tailor eval --out` folder (its examples are reused)")
    p.add_argument("b", help="B: the same kinds; differences are B − A")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="eval.* settings for sides that are evaluated, e.g. max_new_tokens=32")
    p.add_argument("--data", nargs="+", help="evaluation files (needed when A or B is a model to evaluate)")
    p.add_argument("--out", default="runs/compare", help="write compare.json, a/ b/ evaluations and report.html here (default runs/compare)")
    p.add_argument("--require", action="append", default=[], metavar="EXPR",
                   help="gate, repeatable: fact_accuracy>=+0.02 (B − A), fact_accuracy>=0.8 (B itself), "
                        "ci_low(fact_accuracy)>0; exit 1 if any fails")
    p.add_argument("--scores", nargs="+", help="compare only these per-example scores (default: every numeric one)")
    p.add_argument("--id-key", help="pair examples by this field (default: `id` when all have it, else by position)")
    p.add_argument("--resamples", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--top", type=int, default=10, help="examples listed where A and B differ most (default 10)")


def _report_args(p):
    p.add_argument("run_dir", help="a training output dir, an eval or compare --out dir, or the quickstart out_dir")
    p.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html); the Markdown summary goes beside it")


def _compress_common(p):
    p.add_argument("model", help="model directory (a merged or fully trained model)")
    p.add_argument("--out", required=True, help="output directory for the compressed model and compression_report.json")
    _measure_args(p, "held-out chat records (perplexity of answers + fact accuracy) or text (perplexity) measured "
                     "before and after", "skip the before/after measurements")


def _quantize_args(p):
    _compress_common(p)
    p.add_argument("--method", required=True, help="int8-dynamic (CPU, fastest), int8-weight, int4-weight, bnb-8bit or bnb-4bit (CUDA)")
    p.add_argument("--group-size", type=int, default=32, help="int4-weight: input channels per scale (default 32)")


def _prune_args(p):
    _compress_common(p)
    p.add_argument("--method", required=True, help="magnitude (unstructured), heads, channels or experts (structured)")
    p.add_argument("--amount", type=float, default=0.2, help="share to remove, between 0 and 1 (default 0.2)")
    p.add_argument("--scope", default="global", help="magnitude: global (one threshold) or layer (amount in every layer)")
    p.add_argument("--recover-steps", type=int, default=0, help="optimizer steps of recovery fine-tuning on --data (default 0)")
    p.add_argument("--data", nargs="+", help="calibration data for experts pruning, and training data for --recover-steps")


def _export_args(p):
    p.add_argument("model", help="a model directory or an adapter directory (merged into its base first)")
    p.add_argument("--format", required=True, help="safetensors, onnx, torchscript or gguf")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--onnx-exporter", default="auto", help="onnx: dynamo, torchscript or auto (dynamo, else torchscript)")
    p.add_argument("--gguf-type", help="gguf: f16 (default) or q8_0")
    _measure_args(p, "held-out chat records (perplexity of answers + fact accuracy, greedy tokens compared with "
                     "PyTorch) or text (perplexity): the source model in PyTorch and the export in its own runtime",
                  "skip the before/after measurements and export_report.json")


COMMANDS: dict[str, tuple[Callable, Callable, str, str | None]] = {
    "train": (cmd_train, _train_launch_args, "train a model from a recipe (pretrain or sft; full, lora or freeze)", help_text(Recipe)),
    "distill": (cmd_distill, _distill_args, "distill a teacher into a smaller student (KL on soft targets + hard labels)", help_text(Recipe)),
    "eval": (cmd_eval, _eval_args, "evaluate a model or adapter on held-out conversations", help_text(EvalConfig)),
    "merge": (cmd_merge, _merge_args, "fold a LoRA adapter into its base and save a standalone model", None),
    "chat": (cmd_chat, _chat_args, "chat with a model in the terminal (or answer one --prompt)", None),
    "serve": (cmd_serve, _serve_args, "an OpenAI-compatible HTTP server with continuous batching, adapters, limits and metrics", help_text(ServeConfig)),
    "compare": (cmd_compare, _compare_args, "compare two models, adapters or saved evaluations with paired bootstrap CIs; gate with --require", help_text(EvalConfig)),
    "report": (cmd_report, _report_args, "a self-contained HTML report (and Markdown summary) of a training, eval, compare or quickstart folder", None),
    "quickstart": (cmd_quickstart, _quickstart_args, "the embedded default: data, tokenizer, model, pretrain, LoRA SFT, eval, merge", help_text(QuickstartConfig)),
    "data prepare": (cmd_data_prepare, _data_prepare_args, "load, clean, de-duplicate, split, augment and tokenize data into a prepared directory", help_text(Recipe)),
    "data inspect": (cmd_data_inspect, _data_inspect_args, "statistics, rendered samples with loss highlighted, and data checks", None),
    "model init": (cmd_model_init, _model_init_args, "build a model from a preset and save it", None),
    "model presets": (cmd_model_presets, lambda p: None, "list the model presets", None),
    "tokenizer train": (cmd_tokenizer_train, _tokenizer_train_args, "train a byte-level BPE tokenizer with a chat template", None),
    "quantize": (cmd_quantize, _quantize_args, "quantize a model (int8/int4 on CPU, bitsandbytes on CUDA) and report the cost before/after", None),
    "prune": (cmd_prune, _prune_args, "prune weights, heads, MLP channels or MoE experts and report the cost before/after", None),
    "export": (cmd_export, _export_args, "export to safetensors (HF), ONNX (KV cache), TorchScript or GGUF (+ Ollama Modelfile)", None),
    "registry list": (cmd_registry_list, _registry_list_args, "list registered model versions with stage, lineage and metrics", None),
    "registry show": (cmd_registry_show, _registry_show_args, "one version's record and its audit log", None),
    "registry register": (cmd_registry_register, _registry_register_args, "register a model or adapter directory as the next version of a model", None),
    "registry promote": (cmd_registry_promote, _registry_promote_args, "make a version production (the previous one is archived)", None),
    "registry rollback": (cmd_registry_rollback, _registry_rollback_args, "restore the version production replaced (or --to V)", None),
    "refresh": (cmd_refresh, _refresh_args, "drift check on new data; if degraded: incremental retrain, A/B gate, promote or reject", help_text(Recipe)),
    "hpo": (cmd_hpo, _hpo_args, "hyperparameter search over recipe keys (grid, random, TPE) with pruning; resumable, multi-worker", help_text(Recipe)),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailor", description="Customize a local language model on your own hardware.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs too")
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (fn, add_args, help_, keys) in COMMANDS.items():
        parts = name.split()
        subs = top
        if len(parts) == 2:
            if parts[0] not in groups:
                grp = top.add_parser(parts[0], help=f"{parts[0]} commands")
                groups[parts[0]] = grp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            subs = groups[parts[0]]
        epilog = f"settings (key=value):\n{keys}" if keys else None
        p = subs.add_parser(parts[-1], help=help_, description=help_, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(show_path=False, show_time=False)])
    log.setLevel(logging.INFO)
    if not verbose:
        import warnings

        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # weight loading/saving bars; training progress stays
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # map/save bars of data preparation
        warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except TailorError as exc:
        print(f"error: {exc.message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
