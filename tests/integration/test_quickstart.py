"""The whole quickstart pipeline at toy size: real stages, real training, asserted numbers."""

import io
import json

from rich.console import Console
from transformers import AutoModelForCausalLM

from tailor.config import QuickstartConfig
from tailor.quickstart import run
from tailor.training.callbacks import read_metrics


def test_quickstart_toy_run(tmp_path):
    cfg = QuickstartConfig(
        out_dir=str(tmp_path / "qs"), preset="deepseek-v3-micro", model_overrides=["hidden_size=128"], vocab_size=512,
        languages=["en"], max_facts=4, doc_variants=4, train_per_fact=12,
        pretrain_overrides=["train.epochs=40", "train.lr=3e-3", "train.batch_size=8", "train.logging_steps=5"],
        sft_overrides=["train.epochs=20", "train.lr=3e-3", "train.batch_size=8", "train.logging_steps=5",
                       "eval.max_new_tokens=24"],
    )
    console = Console(file=io.StringIO(), width=160)
    result = run(cfg, console=console)
    for stage in ("pretrain", "sft"):
        losses = [m["loss"] for m in read_metrics(tmp_path / "qs" / stage / "metrics.jsonl") if "loss" in m]
        assert losses[-1] < losses[0], stage
    assert result.tuned_metrics["fact_accuracy"] > result.base_metrics["fact_accuracy"]
    assert result.tuned_metrics["answer_perplexity"] < result.base_metrics["answer_perplexity"]
    assert result.info["merge_max_abs_logit_diff"] < 1e-3
    AutoModelForCausalLM.from_pretrained(result.merged_dir)
    saved = json.loads((tmp_path / "qs" / "quickstart_results.json").read_text())
    assert saved["tuned"]["fact_accuracy"] == result.tuned_metrics["fact_accuracy"]
    text = console.file.getvalue()
    assert "What the customization achieved" in text and f"tailor chat {result.merged_dir}" in text
