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
from typing import Any, Callable, NamedTuple

from pydantic import BaseModel

from tailor.config import (DataRecipe, DistillRecipe, EvalConfig, HpoRecipe, QuickstartConfig, Recipe, RefreshRecipe,
                           ServeConfig, TrainRecipe, build, help_text, load_recipe, merge_settings, parse_overrides,
                           parse_preset_overrides)
from tailor.config import commands as C
from tailor.config.flags import add_arguments, parse_settings, values_given
from tailor.errors import TailorError
from tailor.data import annotation
from tailor.mlops.commands import (cmd_hpo, cmd_refresh, cmd_registry_list, cmd_registry_promote, cmd_registry_register,
                                   cmd_registry_rollback, cmd_registry_show)

log = logging.getLogger("tailor")


def _console():
    from rich.console import Console

    return Console(stderr=False)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_train(a: C.TrainCommand) -> int:
    from tailor.training import train
    from tailor.training.distributed import is_main_process, launch

    launcher = {"--nnodes": a.nnodes, "--node-rank": a.node_rank, "--master-addr": a.master_addr, "--master-port": a.master_port}
    if a.nproc is not None:
        return launch(a.recipe, a.overrides, a.nproc, a.nnodes or 1, a.node_rank or 0, a.master_addr, a.master_port,
                      verbose=a.verbose)
    given = [flag for flag, value in launcher.items() if value is not None]
    if given:
        raise TailorError(f"{', '.join(given)} without --nproc", where="tailor train",
                          fix="add --nproc N (processes on this node) to launch through torchrun")
    recipe = load_recipe(a.recipe, a.overrides, reads=TrainRecipe)
    result = train(recipe)
    m = result.metrics
    if is_main_process():  # under torchrun every worker runs this command; one line is enough
        _console().print(f"[bold green]trained[/] {m['steps']} steps in {m['seconds']}s, final train loss "
                         f"{m['train_loss']:.4f} -> {result.final_dir}")
    return 0


def cmd_plan(a: C.PlanCommand) -> int:
    import json

    from tailor.plan import compare_methods
    from tailor.plan.report import print_comparison, print_plan

    path, overrides = a.recipe, a.overrides
    if path is not None and "=" in path and not Path(path).exists():
        path, overrides = None, [path, *overrides]  # no RECIPE (a --model plan): argparse took the first key=value
    recipe = load_recipe(path, overrides, reads=TrainRecipe) if path else \
        build(TrainRecipe, parse_overrides(overrides, TrainRecipe), "command line")
    from tailor.training.preflight import as_trained

    prepare = as_trained(recipe, a.device)  # the precision `tailor train` picks here; the method tailor applies
    plans = compare_methods(recipe, a.device, a.memory_gb, a.nproc, model=a.model, calibrate=a.calibrate or None,
                            methods=tuple(dict.fromkeys((recipe.adapter.method, "full", "freeze", "lora", "dora", "qlora"))),
                            prepare=prepare)
    if a.json_:
        print(json.dumps({"plan": plans[0].to_dict(), "methods": [p.to_dict() for p in plans]}, indent=2, default=str))
        return 0
    print_plan(plans[0], _console())
    print_comparison(plans, _console())
    return 0


def cmd_distill(a: C.DistillCommand) -> int:
    from tailor.evaluation.distill_report import check_eval_data, report
    from tailor.training.recipes.distill import distill

    recipe = load_recipe(a.recipe, a.overrides, reads=DistillRecipe)
    if a.no_measure and a.eval_data:
        raise TailorError("--eval-data is measured after training; --no-measure skips that", where="--no-measure",
                          fix="drop one of the two")
    check_eval_data(a.eval_data, a.max_examples)  # before the run, not after it
    result = distill(recipe)
    m = result.metrics
    _console().print(f"[bold green]distilled[/] {m['steps']} steps in {m['seconds']}s, final train loss {m['train_loss']:.4f}, "
                     f"KL to the teacher {m['teacher_kl_before']:.4f} -> {m['teacher_kl_after']:.4f} "
                     f"({m['teacher_kl_data']} data) -> {result.final_dir}")
    if not a.no_measure:
        report(recipe.distill.teacher, result.final_dir, result.output_dir, eval_data=a.eval_data,
               max_examples=a.max_examples, console=_console())
    return 0


def cmd_eval(a: C.EvalCommand) -> int:
    from tailor.evaluation.run import run, summary_metrics

    target = Path(a.target)
    overrides = [o if o.startswith("eval.") else f"eval.{o}" for o in a.overrides]
    if target.suffix in (".yaml", ".yml"):
        recipe = load_recipe(target, overrides)
        model_dir, cfg, template = Path(recipe.train.output_dir) / "final", recipe.eval, recipe.data.chat_template
    else:
        cfg = build(EvalConfig, parse_overrides(overrides, Recipe).get("eval", {}), "command line")
        model_dir, template = target, None
    for key in ("select_uncertain", "explain"):  # flags that set eval.* settings
        cfg = cfg if getattr(a, key) is None else cfg.model_copy(update={key: getattr(a, key)})
    result = run(model_dir, a.data or None, cfg, adapter=a.adapter, out_dir=a.out, chat_template=template, task=a.task)
    _print_metrics(summary_metrics(result.metrics), f"{result.task} evaluation of {model_dir}")
    for name, path in result.files.items():
        _console().print(f"[bold green]wrote[/] {name}: {path}")
    return 0


def cmd_merge(a: C.MergeCommand) -> int:
    from tailor.adapters.merge import merge

    out = merge(a.adapter, a.out, base=a.base)
    auto = "AutoModelForImageTextToText" if (out / "processor_config.json").is_file() else "AutoModelForCausalLM"
    _console().print(f"[bold green]merged[/] {a.adapter} -> {out} (loads with {auto}.from_pretrained)")
    return 0


def cmd_chat(a: C.ChatCommand) -> int:
    from tailor.models.grammar import load_schema
    from tailor.serving.chat import load_chat_model, remote_answer, remote_repl, repl, stream_answer

    schema = load_schema(a.json_schema) if a.json_schema else None
    if a.url:
        key = a.api_key or os.environ.get("TAILOR_API_KEY")
        if a.prompt is not None:
            messages = ([{"role": "system", "content": a.system}] if a.system else []) + [{"role": "user", "content": a.prompt}]
            print(remote_answer(a.url, messages, a.model, a.max_new_tokens, 0.7 if a.sample else 0.0, api_key=key,
                                json_schema=schema))
            return 0
        remote_repl(a.url, a.model, a.system, a.max_new_tokens, api_key=key, json_schema=schema)
        return 0
    if not a.model:
        raise TailorError("chat needs a model directory, or --url of a running server", where="tailor chat",
                          fix="tailor chat MODEL_DIR, or tailor chat --url http://127.0.0.1:8000")
    from tailor.serving.vision import is_vision_target, vision_chat

    if a.image or is_vision_target(a.model, a.adapter):
        if schema is not None:
            raise TailorError("--json-schema is not supported with a vision-language model", where="tailor chat",
                              fix="leave out --json-schema, or serve the model and ask with response_format")
        print(vision_chat(a.model, a.adapter, a.prompt, a.image, a.system, a.max_new_tokens, a.sample))
        return 0
    model, tokenizer = load_chat_model(a.model, a.adapter)
    if a.prompt is not None:
        messages = ([{"role": "system", "content": a.system}] if a.system else []) + [{"role": "user", "content": a.prompt}]
        print(stream_answer(model, tokenizer, messages, a.max_new_tokens, a.sample, json_schema=schema))
        return 0
    repl(model, tokenizer, a.system, a.max_new_tokens, a.sample, json_schema=schema)
    return 0


def cmd_serve(a: C.ServeCommand) -> int:
    from tailor.mlops.follow import registry_source
    from tailor.serving.server import parse_adapters, serve

    model, extra = a.model, []
    if model is not None and "=" in model and not Path(model).exists():
        model, extra = None, [model]  # no MODEL_DIR (serving from --registry): argparse took the first key=value
    overrides = [o if o.startswith("serve.") else f"serve.{o}" for o in extra + a.overrides]
    cfg = load_recipe(a.recipe, overrides).serve
    flags = dict(a.serve)  # --host, --port, ...: the serve section's own fields, over the recipe and overrides
    if a.adapter:
        flags["adapters"] = {**cfg.adapters, **parse_adapters(a.adapter)}
    cfg = build(ServeConfig, {**cfg.model_dump(), **flags}, "command line")
    serve(model or cfg.model.path, cfg, registry_source(cfg))
    return 0


def cmd_quickstart(a: C.QuickstartCommand) -> int:
    from tailor.quickstart import run

    cfg = build(QuickstartConfig, parse_overrides(a.overrides, QuickstartConfig), "command line")
    if cfg.domain == "vision":
        from tailor.quickstart.vision import run as run_vision

        run_vision(cfg)
        return 0
    run(cfg)
    return 0


def cmd_ui(a: C.UiCommand) -> int:
    from tailor.ui.server import run

    run(a)
    return 0


def _data_tools(recipe: Recipe, base_dir: Path) -> dict:
    """The tokenizer (model.tokenizer or model.path, data.chat_template applied), back-translation translator and
    document QA teacher that `tailor.data.prepare.run` takes from its caller: the data stage loads no model."""
    from tailor.models.loading import load_tokenizer
    from tailor.models.translation import translator_for

    path = recipe.model.tokenizer or recipe.model.path
    tokenizer = load_tokenizer(path, trust_remote_code=recipe.model.trust_remote_code,
                               chat_template=recipe.data.chat_template) if path else None
    from tailor.models.teacher import teacher_for

    return {"tokenizer": tokenizer, "translator": translator_for(recipe.data.augment.back_translation, base_dir),
            "teacher": teacher_for(recipe.data, base_dir)}


def cmd_data_prepare(a: C.DataPrepareCommand) -> int:
    from tailor.data.prepare import run

    recipe = load_recipe(a.recipe, a.overrides, reads=DataRecipe)
    base_dir = Path(a.recipe).parent
    prepared = run(recipe, **_data_tools(recipe, base_dir), base_dir=base_dir, force=a.force)
    con = _console()
    if prepared.cached:
        con.print(f"[bold green]unchanged inputs and settings[/]: reusing {prepared.path}")
    con.print((prepared.path / "report.txt").read_text(encoding="utf-8").rstrip(), markup=False)
    con.print(f"[bold green]prepared[/] {', '.join(f'{k} {v}' for k, v in prepared.splits.items())} -> {prepared.path}")
    return 0


def cmd_data_inspect(a: C.DataInspectCommand) -> int:
    from tailor.data.inspect import inspect_prepared, print_result
    from tailor.data.prepare import is_prepared_dir, open_prepared, run
    from tailor.models.loading import load_tokenizer

    target = Path(a.target)
    if target.suffix in (".yaml", ".yml"):
        recipe = load_recipe(target, a.overrides, reads=DataRecipe)
        prepared = run(recipe, **_data_tools(recipe, target.parent), base_dir=target.parent)
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
        recipe = build(Recipe, merge_settings(settings, parse_overrides(a.overrides, DataRecipe)), "command line")
        prepared = run(recipe, **_data_tools(recipe, Path.cwd()))
    tok_path = a.tokenizer or prepared.manifest.get("tokenizer")
    tokenizer = load_tokenizer(tok_path, chat_template=prepared.manifest.get("chat_template")) if tok_path else None
    result = inspect_prepared(prepared, tokenizer, samples=a.samples, out_dir=a.out or prepared.path)
    print_result(result, _console())
    if result.failed:
        print("error: " + "; ".join(c.message for c in result.failed), file=sys.stderr)
        return 1
    return 0


def cmd_model_init(a: C.ModelInitCommand) -> int:
    from tailor.models.loading import count_parameters, load_tokenizer
    from tailor.models.presets import init_model

    overrides = parse_preset_overrides(a.overrides)
    model = init_model(a.preset, load_tokenizer(a.tokenizer), out_dir=a.out, seed=a.seed, **overrides)
    _, total = count_parameters(model)
    _console().print(f"[bold green]built[/] {a.preset} ({total:,} parameters) -> {a.out}")
    return 0


def cmd_model_presets(a: C.ModelPresetsCommand) -> int:
    from tailor.models.presets import PRESETS

    for name in PRESETS:
        print(name)
    return 0


def cmd_tokenizer_train(a: C.TokenizerTrainCommand) -> int:
    from tailor.models.tokenizer import corpus_from_files, train_tokenizer

    tok = train_tokenizer(corpus_from_files(a.data), a.vocab_size, a.out, min_frequency=a.min_frequency)
    _console().print(f"[bold green]trained[/] tokenizer with {len(tok):,} tokens -> {a.out}")
    return 0


def cmd_compare(a: C.CompareCommand) -> int:
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


def cmd_report(a: C.ReportCommand) -> int:
    from rich.markdown import Markdown

    from tailor.evaluation.report import write_report

    path = write_report(a.run_dir, a.out)
    _console().print(Markdown(path.with_suffix(".md").read_text(encoding="utf-8")))
    _console().print(f"[bold green]report[/] -> {path} (and {path.with_suffix('.md')})")
    return 0


def cmd_quantize(a: C.QuantizeCommand) -> int:
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


def cmd_prune(a: C.PruneCommand) -> int:
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


def cmd_export(a: C.ExportCommand) -> int:
    from tailor.export import format_options
    from tailor.export.report import export_with_report

    options = format_options(a.format, onnx_exporter=a.onnx_exporter, web_weights=a.web_weights, gguf_type=a.gguf_type)
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


class Command(NamedTuple):
    handler: Callable[[Any], int]
    settings: type[C.CommandSettings]  # positionals and flags, generated from this class
    help: str
    keys: type[BaseModel] | None = None  # the key=value settings (a recipe view or a section) listed in --help
    section: tuple[str, type[BaseModel]] | None = None  # (settings field, section): the section's flag() fields


COMMANDS: dict[str, Command] = {
    "train": Command(cmd_train, C.TrainCommand, "train a model from a recipe (pretrain or sft; full, lora or freeze)", TrainRecipe),
    "plan": Command(cmd_plan, C.PlanCommand, "predict a run's peak memory (broken down), speed and duration, and whether it fits, for every method", TrainRecipe),
    "distill": Command(cmd_distill, C.DistillCommand, "distill a teacher into a smaller student (KL on soft targets + hard labels)", DistillRecipe),
    "eval": Command(cmd_eval, C.EvalCommand, "evaluate a model or adapter on held-out conversations", EvalConfig),
    "merge": Command(cmd_merge, C.MergeCommand, "fold a LoRA adapter into its base and save a standalone model"),
    "chat": Command(cmd_chat, C.ChatCommand, "chat with a model in the terminal (or answer one --prompt)"),
    "serve": Command(cmd_serve, C.ServeCommand, "an OpenAI-compatible HTTP server with continuous batching, adapters, limits and metrics", ServeConfig, ("serve", ServeConfig)),
    "compare": Command(cmd_compare, C.CompareCommand, "compare two models, adapters or saved evaluations with paired bootstrap CIs; gate with --require", EvalConfig),
    "report": Command(cmd_report, C.ReportCommand, "a self-contained HTML report (and Markdown summary) of a training, eval, compare or quickstart folder"),
    "quickstart": Command(cmd_quickstart, C.QuickstartCommand, "the embedded default: data, tokenizer, model, pretrain, LoRA SFT, eval, merge", QuickstartConfig),
    "data prepare": Command(cmd_data_prepare, C.DataPrepareCommand, "load, clean, de-duplicate, split, augment and tokenize data into a prepared directory", DataRecipe),
    "data inspect": Command(cmd_data_inspect, C.DataInspectCommand, "statistics, rendered samples with loss highlighted, and data checks", DataRecipe),
    "data annotation-export": Command(annotation.cmd_export, C.AnnotationExportCommand, "rows to label (eval's uncertain.jsonl) as a Label Studio import file and labeling config"),
    "data annotation-import": Command(annotation.cmd_import, C.AnnotationImportCommand, "Label Studio's JSON export back as training rows; kappa across annotators, disagreements to adjudicate"),
    "model init": Command(cmd_model_init, C.ModelInitCommand, "build a model from a preset and save it"),
    "model presets": Command(cmd_model_presets, C.ModelPresetsCommand, "list the model presets"),
    "tokenizer train": Command(cmd_tokenizer_train, C.TokenizerTrainCommand, "train a byte-level BPE tokenizer with a chat template"),
    "quantize": Command(cmd_quantize, C.QuantizeCommand, "quantize a model (int8/int4 on CPU, bitsandbytes on CUDA) and report the cost before/after"),
    "prune": Command(cmd_prune, C.PruneCommand, "prune weights, heads, MLP channels or MoE experts and report the cost before/after"),
    "export": Command(cmd_export, C.ExportCommand, "export to safetensors (HF), ONNX (KV cache), TorchScript, GGUF (+ Ollama Modelfile), a web page (in-browser chat) or a Triton model repository"),
    "registry list": Command(cmd_registry_list, C.RegistryListCommand, "list registered model versions with stage, lineage and metrics"),
    "registry show": Command(cmd_registry_show, C.RegistryShowCommand, "one version's record and its audit log"),
    "registry register": Command(cmd_registry_register, C.RegistryRegisterCommand, "register a model or adapter directory as the next version of a model"),
    "registry promote": Command(cmd_registry_promote, C.RegistryPromoteCommand, "make a version production (the previous one is archived)"),
    "registry rollback": Command(cmd_registry_rollback, C.RegistryRollbackCommand, "restore the version production replaced (or --to V)"),
    "refresh": Command(cmd_refresh, C.RefreshCommand, "drift check on new data; if degraded: incremental retrain, A/B gate, promote or reject", RefreshRecipe),
    "ui": Command(cmd_ui, C.UiCommand, "the web UI: data, model, training with live curves, evaluation, chat and export in a browser (http://127.0.0.1:7860)"),
    "hpo": Command(cmd_hpo, C.HpoCommand, "hyperparameter search over recipe keys (grid, random, TPE) with pruning; resumable, multi-worker", HpoRecipe),
}


def build_parser() -> argparse.ArgumentParser:
    """The `tailor` parser: one subcommand per COMMANDS entry, its arguments generated from its settings class."""
    parser = argparse.ArgumentParser(prog="tailor", description="Customize a local language model on your own hardware.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs too")
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        parts = name.split()
        subs = top
        if len(parts) == 2:
            if parts[0] not in groups:
                grp = top.add_parser(parts[0], help=f"{parts[0]} commands")
                groups[parts[0]] = grp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            subs = groups[parts[0]]
        epilog = f"settings (key=value):\n{help_text(cmd.keys)}" if cmd.keys else None
        p = subs.add_parser(parts[-1], help=cmd.help, description=cmd.help, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p, cmd.settings)
        if cmd.section:
            add_arguments(p, cmd.section[1], prefix=cmd.section[0] + ".")
        p.set_defaults(command_name=name)
    return parser


def settings_of(name: str, args: argparse.Namespace) -> C.CommandSettings:
    """The parsed arguments of command `name`, validated by its settings class (a TailorError names bad flags)."""
    cmd = COMMANDS[name]
    values = {**values_given(args, cmd.settings), "verbose": args.verbose}
    if cmd.section:
        values[cmd.section[0]] = values_given(args, cmd.section[1], prefix=cmd.section[0] + ".")
    return parse_settings(cmd.settings, values)


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
    if not getattr(args, "command_name", None):
        parser.print_help()
        return 0 if args.command is None else 2
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command_name].handler(settings_of(args.command_name, args))
    except TailorError as exc:
        print(f"error: {exc.message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
