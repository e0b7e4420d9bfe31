"""The teacher-vs-student table `tailor distill` ends with."""

import json

import pytest
from rich.console import Console

from tailor.errors import TailorError
from tailor.evaluation.distill_report import check_eval_data, report


def test_report_measures_both_on_the_same_data(tmp_path, llama_dir, qwen2_dir, chat_file):
    console = Console(record=True, width=120)
    out = report(llama_dir, qwen2_dir, tmp_path / "run", eval_data=[str(chat_file)], max_examples=2, console=console)
    saved = json.loads((tmp_path / "run" / "distill_report.json").read_text())
    assert saved["before"]["model_dir"] == str(llama_dir) and saved["after"]["model_dir"] == str(qwen2_dir)
    assert saved["before"]["eval_examples"] == saved["after"]["eval_examples"] == 2
    assert out["parameter_ratio"] == pytest.approx(saved["after"]["parameters"] / saved["before"]["parameters"])
    keys = {r["key"] for r in saved["table"]}
    assert {"size_on_disk_mb", "parameters", "decode_tokens_per_s", "ttft_ms", "perplexity", "main_metric"} <= keys
    text = console.export_text()
    assert "teacher" in text and "student" in text and "report:" in text


def test_bad_eval_data_fails_before_training(tmp_path):
    with pytest.raises(TailorError, match="not found") as e:
        check_eval_data([str(tmp_path / "missing.jsonl")], 8)
    assert e.value.where == "--eval-data"
    with pytest.raises(TailorError, match="at least 1"):
        check_eval_data(None, 0)


def test_cli_distill_ends_with_the_table_and_checks_flags_first(tmp_path, llama_dir, chat_file, capsys):
    from tailor.cli import main

    recipe = tmp_path / "d.yaml"
    recipe.write_text("train:\n  max_steps: 1\n  batch_size: 2\n", encoding="utf-8")
    common = [str(recipe), f"train.output_dir={tmp_path / 'run'}", f"distill.teacher={llama_dir}",
              "distill.student_layers=1", f"data.train=[{chat_file}]", "data.max_length=48"]
    assert main(["distill", *common, "--eval-data", str(tmp_path / "missing.jsonl")]) == 2
    assert "evaluation data not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before training
    assert main(["distill", *common, "--no-measure", "--eval-data", str(chat_file)]) == 2
    assert "--no-measure" in capsys.readouterr().err
    assert main(["distill", *common, "--eval-data", str(chat_file), "--max-examples", "2"]) == 0
    saved = json.loads((tmp_path / "run" / "distill_report.json").read_text())
    assert saved["parameter_ratio"] < 1 and saved["after"]["eval_examples"] == 2  # one layer of two kept
    common[1] = f"train.output_dir={tmp_path / 'quiet'}"
    assert main(["distill", *common, "--no-measure"]) == 0
    assert (tmp_path / "quiet" / "final").is_dir() and not (tmp_path / "quiet" / "distill_report.json").exists()
