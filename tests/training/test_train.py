import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training.callbacks import read_metrics
from tailor.training import latest_checkpoint
from tailor.training import train as run


def recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=4", "train.logging_steps=2", "train.save_steps=100", "data.max_length=48",
                              *extra])


def test_pretraining_from_scratch_lowers_the_loss(tmp_path, deepseek_dir, text_file):
    r = recipe(tmp_path, deepseek_dir, text_file, "train.objective=pretrain", "adapter.method=full",
               "train.max_steps=30", "train.lr=3e-3", "data.max_length=32")
    result = run(r)
    losses = [m["loss"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    assert losses[-1] < losses[0] * 0.8
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_second"} <= set(rows[1])
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents*"))
    assert load_recipe(tmp_path / "run" / "config.yaml") == r
    assert (result.final_dir / "model.safetensors").is_file() and result.metrics["precision"] == "fp32"


@pytest.mark.parametrize("fixture", ["llama_dir", "qwen2_dir", "deepseek_dir"])
def test_lora_sft_on_each_architecture(tmp_path, request, chat_file, fixture):
    model_dir = request.getfixturevalue(fixture)
    result = run(recipe(tmp_path, model_dir, chat_file, "train.max_steps=4", "adapter.r=4"))
    cfg = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(model_dir.resolve())
    assert result.metrics["trainable_parameters"] < result.metrics["total_parameters"] / 2
    assert (result.final_dir / "tokenizer.json").is_file()


def test_freeze_trains_only_the_last_blocks_and_head(tmp_path, llama_dir, chat_file):
    result = run(recipe(tmp_path, llama_dir, chat_file, "adapter.method=freeze", "adapter.freeze_last_n=1",
                        "train.max_steps=3", "train.lr=1e-2"))
    before = load_file(str(llama_dir / "model.safetensors"))
    after = load_file(str(result.final_dir / "model.safetensors"))
    n_layers = json.loads((llama_dir / "config.json").read_text())["num_hidden_layers"]
    last = f"layers.{n_layers - 1}."
    for name, w in before.items():
        changed = not torch.equal(w, after[name])
        should_train = last in name or name.startswith("lm_head") or name == "model.norm.weight"
        if "embed_tokens" in name and "lm_head.weight" not in before:
            should_train = True  # tied head
        assert changed == should_train, name


class Crash(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise RuntimeError("simulated crash")


def test_resumed_run_ends_with_the_same_weights(tmp_path, llama_dir, chat_file):
    common = ["train.max_steps=6", "train.save_steps=3", "adapter.method=full", "train.lr=5e-3"]
    straight = run(recipe(tmp_path / "a", llama_dir, chat_file, *common))
    crashed = recipe(tmp_path / "b", llama_dir, chat_file, *common)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed, callbacks=[Crash(4)])
    assert latest_checkpoint(tmp_path / "b" / "run").name == "checkpoint-3"
    with pytest.raises(TailorError, match="train.resume=true"):
        run(crashed)
    resumed = run(recipe(tmp_path / "b", llama_dir, chat_file, *common, "train.resume=true"))
    a = load_file(str(straight.final_dir / "model.safetensors"))
    b = load_file(str(resumed.final_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_bad_training_inputs(tmp_path, llama_dir, chat_file, text_file):
    with pytest.raises(TailorError, match="no usable training"):
        run(recipe(tmp_path, llama_dir, text_file, "train.max_steps=1"))  # sft on raw text only
    with pytest.raises(TailorError, match="not found"):
        run(recipe(tmp_path, llama_dir, tmp_path / "missing.jsonl"))
    with pytest.raises(TailorError):
        run(recipe(tmp_path, tmp_path, chat_file))  # not a model directory
    with pytest.raises(TailorError, match="freeze_last_n"):
        run(recipe(tmp_path / "f", llama_dir, chat_file, "adapter.method=freeze", "adapter.freeze_last_n=99"))
    with pytest.raises(TailorError, match="target_modules"):
        run(recipe(tmp_path / "t", llama_dir, chat_file, "adapter.target_modules=[nosuch_proj]"))


def test_validation_split_schedule_and_checkpointing(tmp_path, llama_dir, chat_file):
    r = recipe(tmp_path, llama_dir, chat_file, "train.max_steps=4", "data.val_ratio=0.25", "train.eval_steps=2",
               "train.scheduler=constant", "train.warmup_ratio=0", "train.gradient_checkpointing=true",
               "data.system_prompt=You are a support agent.")
    result = run(r)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in rows if "eval_loss" in m][:2] == [2, 4]
    lrs = {m["learning_rate"] for m in rows if "learning_rate" in m}
    assert lrs == {r.train.lr}
    assert "eval_loss" in result.metrics and result.metrics["train_sequences"] == 12  # 16 rows, 4 held out


def test_gradient_checkpointing_gives_the_same_loss(tmp_path, llama_dir, chat_file):
    losses = []
    for flag in ("false", "true"):
        result = run(recipe(tmp_path / flag, llama_dir, chat_file, "train.max_steps=2", "adapter.method=full",
                            f"train.gradient_checkpointing={flag}"))
        losses.append(result.metrics["train_loss"])
    assert abs(losses[0] - losses[1]) < 1e-4


def test_fixed_seed_reproduces_the_run_and_tensorboard_gets_throughput(tmp_path, llama_dir, chat_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    finals = [run(recipe(tmp_path / n, llama_dir, chat_file, "train.max_steps=4", "adapter.method=full")).final_dir
              for n in ("a", "b")]
    a, b = (load_file(str(f / "model.safetensors")) for f in finals)
    assert all(torch.equal(a[k], b[k]) for k in a)
    events = EventAccumulator(str(tmp_path / "a" / "run" / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert any("tokens_per_second" in t for t in tags) and any(t.endswith("loss") for t in tags)
