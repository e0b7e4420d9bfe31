import json

import pytest

from tailor.config import load_recipe
from tailor.training.callbacks import read_metrics
from tailor.training import train as run


def recipe(out, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}",
                              "train.objective=sft", "adapter.method=full", "train.save_steps=1000",
                              "data.max_length=128", *extra])


def test_packed_sft_run_learns_and_reports_packing(tmp_path, llama_dir, chat_file):
    result = run(recipe(tmp_path / "run", llama_dir, chat_file, "data.packing=true", "train.batch_size=2",
                        "train.epochs=8", "train.lr=3e-3", "train.logging_steps=2", "data.val_ratio=0.25"))
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    packing = summary["packing"]
    assert packing == result.metrics["packing"]
    assert packing["samples"] == 12 and packing["packed"] == summary["train_sequences"] < 12
    assert 0.5 < packing["fill_ratio"] <= 1 and packing["tokens"] <= packing["packed"] * 128
    # Real tokens only: the pad id never occurs in the data, so every epoch counts exactly packing.tokens.
    assert summary["tokens_seen"] == 8 * packing["tokens"]
    losses = [m["loss"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    assert losses[-1] < losses[0] * 0.7
    assert summary["eval_loss"] < losses[0]


def test_one_packed_step_equals_one_padded_step(tmp_path, deepseek_dir, chat_file):
    # The whole dataset in one batch: the packed and the padded step see the same loss-bearing tokens,
    # so the Trainer's loss (sum / num_items_in_batch) and gradient norm must agree.
    common = ["train.batch_size=16", "train.max_steps=1", "train.logging_steps=1"]
    logs = {}
    for packing in ("true", "false"):
        run(recipe(tmp_path / packing, deepseek_dir, chat_file, f"data.packing={packing}", *common))
        logs[packing] = next(m for m in read_metrics(tmp_path / packing / "metrics.jsonl") if "loss" in m)
    assert logs["true"]["loss"] == pytest.approx(logs["false"]["loss"], rel=1e-5)
    assert logs["true"]["grad_norm"] == pytest.approx(logs["false"]["grad_norm"], rel=1e-4)
    assert logs["true"]["num_input_tokens_seen"] == logs["false"]["num_input_tokens_seen"]
