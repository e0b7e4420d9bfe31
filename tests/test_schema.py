"""Every command's arguments come from its schema: help, choices, recipe views, and what recipe paths mean."""

from pathlib import Path

import pytest
import yaml

from tailor.cli import COMMANDS, build_parser, main
from tailor.config import (DataRecipe, DistillRecipe, RefreshRecipe, TrainRecipe, describe_fields, load_recipe,
                           save_recipe)
from tailor.config import commands as C
from tailor.config.flags import arguments, flag_name
from tailor.errors import TailorError

ROOT = Path(__file__).resolve().parents[1]
# Each shipped recipe and the command it is written for (a new recipe must be added here).
SHIPPED = {
    "configs/examples/classify-intent.yaml": "train", "configs/examples/data-prepare.yaml": "data prepare",
    "configs/examples/distill.yaml": "distill", "configs/examples/freeze-last-layers.yaml": "train",
    "configs/examples/pretrain-domain.yaml": "train", "configs/examples/refresh.yaml": "refresh",
    "configs/examples/sft-lora.yaml": "train", "src/tailor/quickstart/pretrain.yaml": "train",
    "src/tailor/quickstart/sft.yaml": "train",
}


def help_of(capsys, *words) -> str:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*words, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_every_command_help_lists_its_arguments_and_keys(capsys):
    for name, cmd in COMMANDS.items():
        out = help_of(capsys, *name.split())
        assert cmd.help in out, name
        for field, info, _ in arguments(cmd.settings):
            assert flag_name(field, info) in out, (name, field)
        for key, *_ in describe_fields(cmd.keys) if cmd.keys else ():
            assert key in out, (name, key)
    for group in {n.split()[0] for n in COMMANDS if " " in n}:
        out = help_of(capsys, group)
        assert all(n.split()[1] in out for n in COMMANDS if n.startswith(group + " "))


def test_train_help_shows_only_what_training_reads(capsys):
    out = help_of(capsys, "train")
    assert "train.lr" in out and "data.train" in out and "adapter.r" in out and "model.path" in out
    assert not any(f"  {s}." in out for s in ("serve", "refresh", "distill", "eval")), "train reads none of these"
    distill = help_of(capsys, "distill")
    assert "distill.teacher" in distill and "eval.batch_size" in distill and "serve." not in distill
    refresh = help_of(capsys, "refresh")
    assert "refresh.threshold" in refresh and "serve.port" not in refresh and "distill." not in refresh


def test_shipped_recipes_load_through_their_commands_schema():
    found = {str(p.relative_to(ROOT)) for p in [*(ROOT / "configs").rglob("*.yaml"), *(ROOT / "src/tailor/quickstart").glob("*.yaml")]
             if not p.name.endswith("-space.yaml")}
    assert found == set(SHIPPED), "add each new shipped recipe to SHIPPED with its command"
    for path, command in SHIPPED.items():
        reads = COMMANDS[command].keys
        recipe = load_recipe(ROOT / path, reads=reads)
        assert set(reads.model_fields) <= set(type(recipe).model_fields)


def test_choices_equal_the_stages_registries():
    from typing import get_args

    from tailor.compression import prune, quantize
    from tailor.evaluation.run import TASKS
    from tailor.export import FORMATS
    from tailor.export.gguf import OUTTYPES
    from tailor.export.onnx import EXPORTERS
    from tailor.mlops.hpo import PRUNERS, SAMPLERS

    assert set(get_args(C.QuantizeMethod)) == set(quantize.METHODS)
    assert set(get_args(C.PruneMethod)) == set(prune.METHODS)
    assert set(get_args(C.PruneScope)) == set(prune.SCOPES)
    assert set(get_args(C.ExportFormat)) == set(FORMATS)
    assert set(get_args(C.OnnxExporter)) == set(EXPORTERS)
    assert set(get_args(C.GgufType)) == set(OUTTYPES)
    assert set(get_args(C.EvalTask)) == set(TASKS)
    assert set(get_args(C.HpoSampler)) == set(SAMPLERS) and set(get_args(C.HpoPruner)) == set(PRUNERS)


def test_a_wrong_choice_names_the_flag_and_the_valid_values(tmp_path, capsys):
    assert main(["quantize", str(tmp_path), "--method", "int3", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "--method" in err and "unknown quantization method 'int3'" in err and "int8-dynamic, int8-weight" in err
    assert main(["prune", str(tmp_path), "--method", "magnitude", "--scope", "row", "--out", str(tmp_path / "p")]) == 2
    assert "--scope" in (err := capsys.readouterr().err) and "global, layer" in err
    assert main(["export", str(tmp_path), "--format", "onnx", "--onnx-exporter", "jit", "--out", str(tmp_path / "e")]) == 2
    assert "unknown ONNX exporter 'jit'" in capsys.readouterr().err
    assert main(["chat", str(tmp_path), "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens" in capsys.readouterr().err
    assert not (tmp_path / "q").exists() and not (tmp_path / "p").exists()


def test_overrides_may_set_only_what_the_command_reads(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("serve:\n  port: 9000\n")  # a file may hold other commands' sections
    assert main(["train", str(recipe), "serve.port=1"]) == 2
    assert "'serve.port' is not read by this command" in capsys.readouterr().err
    with pytest.raises(TailorError, match="Did you mean 'train.lr'"):
        load_recipe(recipe, ["train.lrr=1"], reads=TrainRecipe)
    assert load_recipe(recipe, ["distill.alpha=0.2"], reads=DistillRecipe).distill.alpha == 0.2
    assert load_recipe(recipe, ["refresh.replay=0.1"], reads=RefreshRecipe).serve.port == 9000
    with pytest.raises(TailorError, match="not read by this command"):
        load_recipe(recipe, ["train.lr=1"], reads=DataRecipe)


def test_serve_flags_are_the_serve_sections_fields():
    from tailor.cli import settings_of
    from tailor.config import ServeConfig

    marked = {n for n, i, _ in arguments(ServeConfig)}
    assert marked == {"host", "port", "model_name", "api_keys_file", "registry", "registry_model"}
    s = settings_of("serve", build_parser().parse_args(["serve", "m", "max_batch_size=2", "--port", "9", "--host", "0.0.0.0"]))
    assert s.serve == {"port": 9, "host": "0.0.0.0"} and s.overrides == ["max_batch_size=2"] and s.model == "m"
    assert "dtype" not in ServeConfig.model_fields and ServeConfig().model.dtype == "auto"  # the model section, embedded
    with pytest.raises(TailorError, match="serve.model.tokenizer"):
        load_recipe(None, ["serve.model.tokenizer=/t"])  # not read by the server: refused, not ignored


def test_measure_default_is_declared_once():
    import inspect

    from tailor.compression.run import prune, quantize
    from tailor.evaluation.distill_report import report
    from tailor.evaluation.measure import measure
    from tailor.export.report import export_with_report

    for cls in (C.QuantizeCommand, C.PruneCommand, C.ExportCommand, C.DistillCommand):
        assert cls.model_fields["max_examples"].default == C.MEASURE_MAX_EXAMPLES
    for fn in (quantize, prune, report, measure, export_with_report):  # the stages' Python defaults agree
        assert inspect.signature(fn).parameters["max_examples"].default == C.MEASURE_MAX_EXAMPLES, fn.__qualname__


def test_recipe_paths_are_relative_to_the_recipe_file(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    recipe = tmp_path / "cfg" / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"path": "models/base"},  # need not exist yet: the meaning does not depend on it
        "data": {"train": "d.jsonl", "sources": [{"path": "raw/*.jsonl"}], "prepared_dir": "runs/data", "chat_template": "t.jinja",
                 "augment": {"eda": {"dictionary": "syn.tsv"}}},
        "eval": {"data": ["/abs/e.jsonl"]}, "distill": {"prompts": "q.txt"},
        "train": {"output_dir": "runs/out"},
        "serve": {"adapters": {"a": "adapters/a"}, "chat_template": "chatml"},
        "refresh": {"registry": "sqlite:///x.db", "new_data": ["incoming"]}}))
    monkeypatch.chdir(tmp_path)
    r = load_recipe("cfg/r.yaml", ["data.eval=[e.jsonl]"])
    cfg = tmp_path / "cfg"
    assert r.model.path == str(cfg / "models/base") and r.data.train == [str(cfg / "d.jsonl")]
    assert r.data.sources[0].path == str(cfg / "raw/*.jsonl") and r.data.augment.eda.dictionary == str(cfg / "syn.tsv")
    assert r.distill.prompts == [str(cfg / "q.txt")] and r.serve.adapters == {"a": str(cfg / "adapters/a")}
    assert r.refresh.new_data == [str(cfg / "incoming")] and r.refresh.registry == "sqlite:///x.db"
    assert r.eval.data == ["/abs/e.jsonl"]
    assert r.data.chat_template == str(cfg / "t.jinja") and r.serve.chat_template == "chatml", "a .jinja file is a path"
    assert r.data.eval == ["e.jsonl"], "a command-line path means the working directory"
    assert r.train.output_dir == "runs/out" and r.data.prepared_dir == "runs/data", "outputs: the working directory"
    save_recipe(r, tmp_path / "saved.yaml")
    saved = yaml.safe_load((tmp_path / "saved.yaml").read_text())
    assert saved["data"]["eval"] == [str(tmp_path / "e.jsonl")] and saved["model"]["path"] == str(cfg / "models/base")


def test_the_saved_recipe_reproduces_the_run_from_another_directory(tmp_path, monkeypatch, llama_dir, chat_file):
    from tailor.mlops.refresh import recipe_record

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "chat.jsonl").write_text(chat_file.read_text())
    monkeypatch.chdir(work)  # started with paths relative to this directory, as the quickstart does
    args = ["train", str(ROOT / "src/tailor/quickstart/sft.yaml"), f"model.path={llama_dir}", "data.train=[data/chat.jsonl]",
            "train.output_dir=runs/sft", "train.max_steps=2", "train.batch_size=2", "train.save_steps=2",
            "data.val_ratio=0", "data.max_length=64"]
    assert main(args) == 0
    saved = work / "runs" / "sft" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["data"]["train"] == [str(work / "data" / "chat.jsonl")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", str(saved), f"train.output_dir={elsewhere / 'again'}"]) == 0
    assert (elsewhere / "again" / "final").is_dir()
    # A version registered with that recipe finds its data from any directory (what `tailor refresh` replays).
    record, fingerprint = recipe_record(load_recipe(saved))
    assert record["data"]["train"] == [str(work / "data" / "chat.jsonl")] and fingerprint is not None
