"""train.optimizer=lamb: pytorch-optimizer's Lamb drives the Trainer (trust ratio per tensor), the loss falls."""

import sys

import pytest
import torch
from transformers import TrainerCallback

from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training import train as run
from tailor.training.callbacks import read_metrics


class SeeOptimizer(TrainerCallback):
    def __init__(self):
        self.optimizer = None

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it


def _recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=8", "train.logging_steps=2", "train.save_steps=100", "data.max_length=48",
                              "train.max_steps=12", "adapter.method=full", "train.warmup_ratio=0", *extra])


def test_lamb_trains_with_a_trust_ratio_per_tensor(tmp_path, llama_dir, chat_file):
    pytest.importorskip("pytorch_optimizer")
    from pytorch_optimizer import Lamb

    seen = SeeOptimizer()
    run(_recipe(tmp_path, llama_dir, chat_file, "train.optimizer=lamb", "train.lr=1e-2", "train.weight_decay=0.01"),
        callbacks=[seen])
    opt = seen.optimizer
    assert isinstance(opt, Lamb)
    decays = sorted({g["weight_decay"] for g in opt.param_groups})
    assert decays == [0.0, 0.01] and all(g["lr"] >= 0 for g in opt.param_groups)  # the Trainer's no-decay group kept
    losses = [m["loss"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    assert losses[-1] < losses[0] * 0.9

    # LAMB's defining step: a tensor's update is Adam's direction rescaled by the trust ratio ||w|| / ||adam update||,
    # so its norm follows the weights' norm (capped at 10, the paper's phi), whatever the gradient's scale.
    def update_norm(value, grad_scale):
        w = torch.nn.Parameter(torch.full((8, 8), value))
        lamb = Lamb([w], lr=1e-2, weight_decay=0.0, eps=1e-6)
        before = w.detach().clone()
        w.grad = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) * grad_scale
        lamb.step()
        return (w.detach() - before).norm().item()

    small = update_norm(0.25, 1e-3)  # ||w|| = 2
    assert update_norm(0.25, 1e2) == pytest.approx(small, rel=1e-4)
    assert update_norm(0.5, 1e-3) == pytest.approx(2 * small, rel=1e-4)  # ||w|| = 4
    assert update_norm(3.0, 1e-3) == pytest.approx(5 * small, rel=1e-4)  # ||w|| = 24, capped at 10


def test_lamb_without_its_package_is_a_clear_error(tmp_path, llama_dir, chat_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytorch_optimizer" else real(name, *a))
    with pytest.raises(TailorError, match="train.optimizer=lamb needs the pytorch-optimizer package") as e:
        run(_recipe(tmp_path, llama_dir, chat_file, "train.optimizer=lamb"))
    assert ".[optim]" in e.value.fix
