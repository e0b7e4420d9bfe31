"""`tailor plan`: help, tables, --json, and bad input."""

import json

from tailor.cli import main


def test_help_lists_the_flags(capsys):
    try:
        main(["plan", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--device", "--memory-gb", "--nproc", "--json", "--calibrate", "train.preflight"):
        assert flag in out


def test_json_plan_of_a_catalog_model(capsys):
    assert main(["plan", "--model", "qwen2.5-0.5b", "--device", "cpu", "--memory-gb", "16", "--json",
                 "data.max_length=256", "train.batch_size=2"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["plan"]["model"] == "qwen2.5-0.5b" and d["plan"]["settings"]["seq_len"] == 256
    assert {p["settings"]["method"] for p in d["methods"]} == {"full", "freeze", "lora", "dora", "qlora"}
    assert d["plan"]["verdict"] in ("fits", "tight", "does not fit")
    assert d["plan"]["tokens_per_second"] > 0 and d["plan"]["speed"]["matmul_flops"] > 0
    assert set(d["plan"]["memory"]) == {"weights", "adapter", "gradients", "optimizer", "activations", "temporary",
                                        "frozen", "generation", "overhead", "peak"}


def test_table_names_the_verdict_and_a_fix(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    assert main(["plan", "--model", "deepseek-r1-distill-qwen-7b", "--device", "cuda", "--memory-gb", "24",
                 "data.max_length=4096", "train.batch_size=1"]) == 0
    out = capsys.readouterr().out
    assert "does not fit" in out and "fix: " in out and "adapter.method=qlora" in out and "qlora" in out
    assert "recommended: " in out or "no method fits" in out


def test_bad_input(capsys):
    assert main(["plan", "--model", "qwen-huge"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'qwen-huge'" in err and "deepseek-r1-distill-qwen-7b" in err
    assert main(["plan", "--model", "qwen3-8b", "--memory-gb", "-1"]) == 2
    assert "--memory-gb" in capsys.readouterr().err
    assert main(["plan", "--model", "qwen3-8b", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    assert main(["plan"]) == 2
    assert "model.path" in capsys.readouterr().err
