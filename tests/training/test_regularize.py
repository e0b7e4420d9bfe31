"""Optimizers, schedules and regularization options of the training stage: each changes the run measurably."""

import functools

import pytest
import torch
from safetensors.torch import load_file
from transformers import PretrainedConfig, Trainer, TrainerCallback, TrainingArguments

from tailor.cli import main
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training.callbacks import read_metrics
from tailor.training.regularize import Adversarial, apply_dropout
from tailor.training.trainer import TailorTrainer
from tailor.training import train as run


def recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=4", "train.logging_steps=1", "train.save_steps=100", "data.max_length=48",
                              "adapter.method=full", "train.warmup_ratio=0", *extra])


class Capture(TrainerCallback):
    """Keeps the optimizer and a copy of the trainable weights at the start and after each step."""

    def __init__(self):
        self.optimizer, self.weights = None, []

    def _keep(self, model):
        self.weights.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kw):
        self.optimizer = optimizer
        self._keep(model)

    def on_step_end(self, args, state, control, model=None, **kw):
        self._keep(model)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adafactor", "Adafactor"), ("adamw", torch.optim.AdamW)])
def test_optimizer_choice(tmp_path, llama_dir, chat_file, name, cls):
    cap = Capture()
    run(recipe(tmp_path, llama_dir, chat_file, "train.max_steps=1", f"train.optimizer={name}", "train.momentum=0.7"),
        callbacks=[cap])
    opt = getattr(cap.optimizer, "optimizer", cap.optimizer)  # accelerate wraps it
    if isinstance(cls, str):
        assert type(opt).__name__ == cls
    else:
        assert type(opt) is cls
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.7


def test_cosine_with_restarts_raises_the_lr_again(tmp_path, llama_dir, chat_file):
    run(recipe(tmp_path, llama_dir, chat_file, "train.max_steps=8", "train.scheduler=cosine_with_restarts",
               "train.num_cycles=2"))
    lrs = [m["learning_rate"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "learning_rate" in m]
    assert len(lrs) == 8
    assert lrs[3] < lrs[1] and lrs[4] > lrs[3] * 2  # second cycle starts at the peak again


def test_early_stopping_stops_when_eval_loss_rises_and_plateau_cuts_the_lr(tmp_path, llama_dir, chat_file):
    r = run(recipe(tmp_path / "es", llama_dir, chat_file, f"data.eval=[{chat_file}]", "train.max_steps=20",
                   "train.lr=3", "train.eval_steps=1", "train.early_stopping_patience=1"))
    assert r.metrics["steps"] < 20
    evals = [m["eval_loss"] for m in read_metrics(tmp_path / "es" / "run" / "metrics.jsonl") if "eval_loss" in m]
    # the validation loss rose (so training stopped early), and the best checkpoint was reloaded at the end:
    # the final evaluation (the last row) scores the best weights again
    assert min(evals[:-1]) < evals[-2]
    assert evals[-1] == pytest.approx(min(evals[:-1]), rel=1e-5)
    run(recipe(tmp_path / "pl", llama_dir, chat_file, f"data.eval=[{chat_file}]", "train.max_steps=5", "train.lr=3",
               "train.eval_steps=1", "train.scheduler=reduce_on_plateau", "train.plateau_patience=0"))
    lrs = [m["learning_rate"] for m in read_metrics(tmp_path / "pl" / "run" / "metrics.jsonl") if "learning_rate" in m]
    assert lrs[0] == 3 and min(lrs) <= 0.3 + 1e-9


def test_label_smoothing_changes_the_loss_of_the_same_batch(tmp_path, llama_dir, chat_file):
    losses = []
    for ls in (0.0, 0.5):
        run(recipe(tmp_path / str(ls), llama_dir, chat_file, "train.max_steps=1", f"train.label_smoothing={ls}"))
        losses.append(read_metrics(tmp_path / str(ls) / "run" / "metrics.jsonl")[0]["loss"])
    # Same seed, same first batch: only the smoothed target differs. On this untrained, near-uniform model the
    # smoothed loss is slightly below the plain one (6.018 vs 6.032), so the test asserts a change, not a rise.
    assert abs(losses[1] - losses[0]) > 5e-3


def test_ema_weights_are_saved_and_equal_a_hand_computed_average(tmp_path, llama_dir, chat_file):
    cap = Capture()
    result = run(recipe(tmp_path, llama_dir, chat_file, f"data.eval=[{chat_file}]", "train.max_steps=2",
                        "train.lr=1e-2", "train.ema_decay=0.5"), callbacks=[cap])
    w0, w1, w2 = cap.weights
    ema = load_file(str(tmp_path / "run" / "final_ema" / "model.safetensors"))
    final = load_file(str(result.final_dir / "model.safetensors"))
    assert (tmp_path / "run" / "final_ema" / "config.json").is_file()
    name = "model.layers.0.mlp.down_proj.weight"
    expected = 0.5 * (0.5 * w0[name] + 0.5 * w1[name]) + 0.5 * w2[name]
    torch.testing.assert_close(ema[name], expected)
    assert not torch.equal(ema[name], final[name])
    assert "eval_loss_ema" in result.metrics and result.metrics["eval_loss_ema"] != result.metrics["eval_loss"]


def _model_and_batch(llama_dir, chat_file, tokenizer):
    import json

    from transformers import AutoModelForCausalLM

    from tailor.data.packing import PadCollator
    from tailor.data.tokenize import sft_dataset

    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    rows = [json.loads(line) for line in chat_file.read_text().splitlines()][:4]
    ds = sft_dataset(rows, tokenizer, 48)
    return model, PadCollator(tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])


def test_dropout_override_changes_training_forward_and_rejects_configs_without_dropout(llama_dir, chat_file, tokenizer):
    model, batch = _model_and_batch(llama_dir, chat_file, tokenizer)
    model.train()
    torch.manual_seed(0)
    a, b = model(**batch).loss, model(**batch).loss
    assert torch.equal(a, b)  # the preset has dropout 0
    assert "attention_dropout" in apply_dropout(model, 0.5)
    assert model.config.attention_dropout == 0.5
    assert not torch.equal(model(**batch).loss, model(**batch).loss)
    bare = torch.nn.Linear(2, 2)
    bare.config = PretrainedConfig()
    with pytest.raises(TailorError, match="declares no dropout rate"):
        apply_dropout(bare, 0.1)


def test_fgm_step_differs_from_plain_step_and_restores_embeddings(tmp_path, llama_dir, chat_file, tokenizer):
    grads = {}
    for fgm in (False, True):
        model, batch = _model_and_batch(llama_dir, chat_file, tokenizer)
        trainer = TailorTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / str(fgm)), use_cpu=True,
                                                                    report_to="none"),
                                adversarial=Adversarial("fgm", 1.0) if fgm else None)
        trainer.current_gradient_accumulation_steps = 1  # set by the train loop, which this test skips
        emb = model.get_input_embeddings().weight
        before = emb.detach().clone()
        trainer.training_step(model, batch)
        assert torch.equal(emb, before)  # restored bit for bit
        grads[fgm] = model.model.layers[0].mlp.down_proj.weight.grad.clone()
    assert not torch.allclose(grads[False], grads[True])


def test_pgd_ascends_inside_the_epsilon_ball_and_adds_only_the_last_steps_gradient(tmp_path, llama_dir, chat_file,
                                                                                   tokenizer):
    """PGD: K projected ascent steps; the K-1 intermediate passes touch no parameter gradient, the last adds its own;
    the perturbation the last pass sees lies in the epsilon ball and raises the loss over the clean one."""
    epsilon, steps = 0.5, 3
    model, batch = _model_and_batch(llama_dir, chat_file, tokenizer)
    trainer = TailorTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "pgd"), use_cpu=True,
                                                                report_to="none"),
                            adversarial=Adversarial("pgd", epsilon, alpha=0.4, steps=steps))
    trainer.current_gradient_accumulation_steps = 1
    emb = model.get_input_embeddings().weight
    before = emb.detach().clone()
    seen = []  # (embedding matrix, loss) of every forward, in order
    forward = model.forward

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.append((emb.detach().clone(), out.loss.item()))
        return out

    model.forward = spy
    clean_step = functools.partial(Trainer.training_step, trainer)  # the plain step of the same trainer
    trainer.training_step(model, batch)
    model.forward = forward
    assert torch.equal(emb, before)  # restored bit for bit
    assert len(seen) == 1 + steps  # the clean pass, then one per ascent step
    norms = [(m - before).norm().item() for m, _ in seen]
    assert norms[0] == 0 and norms[1] == pytest.approx(0.4, rel=1e-4)  # the first step has size alpha
    assert all(n <= epsilon * (1 + 1e-5) for n in norms) and norms[-1] == pytest.approx(epsilon, rel=1e-4)  # projected
    assert seen[-1][1] > seen[0][1]  # the adversarial embeddings raise the loss
    weight = model.model.layers[0].mlp.down_proj.weight
    pgd_grad = weight.grad.clone()

    # The same gradient comes from the clean backward plus one backward at the last perturbation alone: the
    # intermediate passes left the parameter gradients untouched.
    model.zero_grad()
    clean_step(model, dict(batch))
    clean_grad = weight.grad.clone()
    with torch.no_grad():
        emb.copy_(seen[-1][0])
    clean_step(model, dict(batch))
    with torch.no_grad():
        emb.copy_(before)
    torch.testing.assert_close(weight.grad, pgd_grad)
    assert not torch.allclose(clean_grad, pgd_grad)


def test_fgm_run_trains_with_grad_accumulation_on_lora(tmp_path, llama_dir, chat_file):
    result = run(recipe(tmp_path, llama_dir, chat_file, "adapter.method=lora", "adapter.r=4", "train.max_steps=2",
                        "train.grad_accum=2", "train.adversarial=fgm"))
    assert result.metrics["steps"] == 2 and (result.final_dir / "adapter_config.json").is_file()
    pgd = run(recipe(tmp_path / "pgd", llama_dir, chat_file, "adapter.method=lora", "adapter.r=4", "train.max_steps=2",
                     "train.grad_accum=2", "train.adversarial=pgd", "train.adversarial_steps=2"))
    assert pgd.metrics["steps"] == 2 and pgd.metrics["train_loss"] > 0
    # train.adversarial_alpha reaches the PGD step: another step size, other weights after the same steps
    finals = []
    for alpha in ("0.05", "0.5"):
        r = run(recipe(tmp_path / f"alpha{alpha}", llama_dir, chat_file, "train.max_steps=1", "train.adversarial=pgd",
                       "train.adversarial_steps=2", f"train.adversarial_alpha={alpha}"))
        finals.append(load_file(str(r.final_dir / "model.safetensors")))
    assert any(not torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


@pytest.mark.parametrize("overrides,match", [
    (["train.optimizer=adamw_8bit", "train.device=cpu"], "adamw_8bit needs a CUDA GPU"),
    (["train.scheduler=reduce_on_plateau"], "no validation data"),
    (["train.early_stopping_patience=2"], "no validation data"),
])
def test_bad_settings_are_clear_errors_with_cli_exit_2(tmp_path, llama_dir, chat_file, capsys, overrides, match):
    with pytest.raises(TailorError, match=match):
        run(recipe(tmp_path, llama_dir, chat_file, "train.max_steps=1", *overrides))
    args = [f"model.path={llama_dir}", f"data.train=[{chat_file}]", f"train.output_dir={tmp_path / 'cli'}",
            "train.max_steps=1", *overrides]
    assert main(["train", str(_empty_recipe(tmp_path)), *args]) == 2
    assert match in capsys.readouterr().err


def _empty_recipe(tmp_path):
    p = tmp_path / "recipe.yaml"
    p.write_text("{}\n")
    return p
