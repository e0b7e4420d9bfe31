"""train.logits=loss: the output layer runs only where the loss reads it, with the same loss and gradients."""

import json

import pytest
import torch

from tailor.config import load_recipe
from tailor.training import train as run
from tailor.training.callbacks import read_metrics


def recipe(out, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}",
                              "train.objective=sft", "train.save_steps=1000", "data.max_length=128",
                              "train.batch_size=16", "train.max_steps=1", "train.logging_steps=1", *extra])


class HeadRows:
    """Counts the rows the output layer projects (patched onto lm_head's forward for one run)."""

    def __init__(self, monkeypatch):
        self.rows = []
        linear_forward = torch.nn.Linear.forward

        def counting(module, x):
            if getattr(module, "_tailor_count_rows", False):
                self.rows.append(x.reshape(-1, x.shape[-1]).shape[0])
            return linear_forward(module, x)

        monkeypatch.setattr(torch.nn.Linear, "forward", counting)


@pytest.mark.parametrize("fixture,method,packing", [("deepseek_dir", "lora", "true"), ("llama_dir", "full", "false")])
def test_same_loss_and_gradient_with_fewer_head_rows(tmp_path, request, monkeypatch, chat_file, fixture, method,
                                                     packing):
    model_dir = request.getfixturevalue(fixture)
    counter = HeadRows(monkeypatch)
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained

    def loading(*args, **kwargs):  # mark the loaded model's head so the counter sees its rows
        model = original(*args, **kwargs)
        model.get_output_embeddings()._tailor_count_rows = True
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", loading)
    logs, rows, summaries = {}, {}, {}
    for logits in ("all", "loss"):
        counter.rows.clear()
        out = tmp_path / logits
        run(recipe(out, model_dir, chat_file, f"adapter.method={method}", f"data.packing={packing}",
                   f"train.logits={logits}"))
        logs[logits] = next(m for m in read_metrics(out / "metrics.jsonl") if "loss" in m)
        rows[logits] = sum(counter.rows)
        summaries[logits] = json.loads((out / "train_summary.json").read_text())["logits"]
    assert logs["loss"]["loss"] == pytest.approx(logs["all"]["loss"], rel=1e-5)
    assert logs["loss"]["grad_norm"] == pytest.approx(logs["all"]["grad_norm"], rel=1e-4)
    # The answers are a fraction of each chat: the head saw fewer rows, but at least one per loss-bearing token.
    assert 0 < rows["loss"] < 0.8 * rows["all"]
    assert summaries == {"all": "all positions (train.logits: all)", "loss": "loss positions"}


def test_falls_back_to_every_position_where_the_loss_needs_it(tmp_path, llama_dir, chat_file):
    run(recipe(tmp_path / "smooth", llama_dir, chat_file, "train.label_smoothing=0.1"))
    summary = json.loads((tmp_path / "smooth" / "train_summary.json").read_text())
    assert summary["logits"].startswith("all positions (train.label_smoothing")
    run(recipe(tmp_path / "prompt", llama_dir, chat_file, "adapter.method=prompt", "adapter.num_virtual_tokens=4"))
    summary = json.loads((tmp_path / "prompt" / "train_summary.json").read_text())
    assert summary["logits"] == "all positions (prompt tuning prepends virtual tokens to every row)"


def test_bad_value_is_refused_with_the_choices():
    with pytest.raises(Exception, match="loss"):
        load_recipe(None, ["train.logits=some"])
