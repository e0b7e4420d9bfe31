"""A run killed with SIGKILL at a random step and resumed ends with the same weights as an uninterrupted run.

The killed run is a real `tailor train` subprocess (so is the uninterrupted reference run); the kill step comes from a seeded RNG whose seed is printed
(rerun one with TAILOR_KILL_SEED=<seed>). Dropout, shuffling over several epochs, gradient accumulation, a warm-up
+ cosine schedule and an EMA of the weights make data order, RNG states, optimizer and scheduler all matter.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from tailor.config import load_recipe
from tailor.training.checkpoints import MANIFEST, checkpoint_step, list_checkpoints, read_manifest
from tailor.training import latest_checkpoint
from tailor.training import train as run
from tests.conftest import CONVERSATIONS, write_jsonl

STEPS = 16  # 16 rows, batch 2 x accumulation 2: 4 optimizer steps per epoch, 4 epochs


class StartStep(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
        self.step = state.global_step


def settings(model_dir, data, out):
    return {
        "model": {"path": str(model_dir)},
        "data": {"train": [str(data)], "max_length": 48},
        "adapter": {"method": "full"},
        "train": {"output_dir": str(out), "max_steps": STEPS, "batch_size": 2, "grad_accum": 2, "lr": 3e-3,
                  "warmup_ratio": 0.2, "scheduler": "cosine", "dropout": 0.1, "ema_decay": 0.9, "save_steps": 1,
                  "save_total_limit": 2, "logging_steps": 1, "seed": 3},
    }


def tensors(run_dir, sub):
    return load_file(str(run_dir / sub / "model.safetensors"))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs by up to {(a[k] - b[k]).abs().max().item():.3g}"


def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(tmp_path, llama_dir, caplog):
    seed = int(os.environ.get("TAILOR_KILL_SEED", random.SystemRandom().randrange(1_000_000)))
    rng = random.Random(seed)
    k, delay = rng.randint(2, STEPS // 2), rng.uniform(0, 0.3)  # the delay moves the kill anywhere in a step or a save
    print(f"TAILOR_KILL_SEED={seed}: SIGKILL {delay:.2f}s after checkpoint-{k} or a later one is complete")
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS] * 4)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for name, out in (("straight", straight), ("killed", killed)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(settings(llama_dir, data, out)))

    # Both runs are fresh `tailor train` processes, started together (the uninterrupted one is the reference).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TAILOR_TEST_THREADS": "1"}
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("straight", "killed")}
    procs = {name: subprocess.Popen([sys.executable, "-m", "tailor.cli", "train", str(tmp_path / f"{name}.yaml")],
                                    env=env, stdout=logs[name], stderr=subprocess.STDOUT) for name in logs}
    try:
        check_kill_and_resume(tmp_path, procs, k, delay, caplog)
        assert procs["straight"].wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        stop(procs, logs)
    assert_same(tensors(straight, "final"), tensors(killed, "final"))
    assert_same(tensors(straight, "final_ema"), tensors(killed, "final_ema"))
    # metrics.jsonl of the resumed run: each step once (rows the killed run logged past its checkpoint are
    # dropped on resume), with the same losses as the uninterrupted run
    from tailor.training.callbacks import read_metrics

    losses = {name: [(m["step"], m["loss"]) for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
              for name, out in (("straight", straight), ("killed", killed))}
    assert [s for s, _ in losses["killed"]] == list(range(1, STEPS + 1))
    assert losses["killed"] == losses["straight"]
    base = load_file(str(llama_dir / "model.safetensors"))
    assert any(not torch.equal(base[n], t) for n, t in tensors(killed, "final").items() if n in base)


def stop(procs: dict, logs: dict) -> None:
    """Kill what is still running of the processes this test started, close their logs."""
    for name, p in procs.items():
        if p.poll() is None:
            p.kill()
            p.wait()
        logs[name].close()


def check_kill_and_resume(tmp_path, procs, k, delay, caplog):
    """SIGKILL the `killed` run once checkpoint-k (or later) is sealed and `delay` has passed, then resume it here."""
    killed = tmp_path / "killed"
    proc = procs["killed"]
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if any(checkpoint_step(c) >= k and read_manifest(c) for c in list_checkpoints(killed)):
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    log_text = (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed (rc {proc.returncode}):\n{log_text[-3000:]}"
    assert not (killed / "final").exists()

    left = {c.name: read_manifest(c) is not None for c in list_checkpoints(killed)}
    resume_at = latest_checkpoint(killed)
    j = checkpoint_step(resume_at)
    assert k <= j < STEPS
    print(f"killed with checkpoints {left} on disk; resuming from {resume_at.name}")

    # A save cut short after the trainer state was written but before the weights were: it must not be used.
    partial = killed / f"checkpoint-{j + 1}"
    if not partial.exists():
        shutil.copytree(resume_at, partial)
        (partial / MANIFEST).unlink()
        weights = partial / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    start = StartStep()
    with caplog.at_level("WARNING", logger="tailor"):
        resumed = run(load_recipe(tmp_path / "killed.yaml", ["train.resume=true"]), callbacks=[start])
    assert f"skipping {partial}" in caplog.text
    assert start.step == j and resumed.metrics["steps"] == STEPS
    assert f"removing {partial} before saving it again" in caplog.text  # no stale file of it survives



ALIGN_STEPS = 6


def alignment_settings(objective, model_dir, data, out):
    """DPO with full training (the reference is a frozen copy) or GRPO with LoRA (the base with the adapter off)."""
    s = {"model": {"path": str(model_dir)}, "data": {"train": [str(data)], "max_length": 48, "val_ratio": 0.0},
         "adapter": {"method": "full"} if objective == "dpo" else {"method": "lora", "r": 4, "alpha": 8},
         "train": {"objective": objective, "output_dir": str(out), "max_steps": ALIGN_STEPS, "batch_size": 4,
                   "lr": 3e-3, "warmup_ratio": 0.2, "save_steps": 1, "save_total_limit": 2, "logging_steps": 1,
                   "seed": 3}}
    if objective == "grpo":
        s["grpo"] = {"num_generations": 4, "max_completion_length": 6, "rewards": [{"name": "numeric"}, {"name": "length", "options": {"target": 3}}]}
    return s


def final_tensors(run_dir):
    final = run_dir / "final"
    return load_file(str(final / ("adapter_model.safetensors" if (final / "adapter_model.safetensors").exists()
                                  else "model.safetensors")))


@pytest.mark.parametrize("objective", ["dpo", "grpo"])
def test_preference_and_grpo_runs_resume_after_sigkill_to_the_same_weights(tmp_path, llama_dir, objective):
    seed = int(os.environ.get("TAILOR_KILL_SEED", random.SystemRandom().randrange(1_000_000)))
    k = random.Random(seed).randint(1, ALIGN_STEPS - 2)
    print(f"TAILOR_KILL_SEED={seed}: SIGKILL after checkpoint-{k}")
    if objective == "dpo":
        rows = [{"messages": c[:-1], "chosen": c[-1]["content"], "rejected": "I do not know."} for c in CONVERSATIONS]
    else:
        rows = [{"prompt": f"What is {a} plus {b}?", "answer": str(a + b)} for a, b in ((2, 3), (4, 1), (6, 2), (1, 1))]
    data = write_jsonl(tmp_path / "data.jsonl", rows * 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TAILOR_TEST_THREADS": "1"}
    procs, logs = {}, {}
    for name in ("straight", "killed"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(alignment_settings(objective, llama_dir, data, tmp_path / name)))
        logs[name] = (tmp_path / f"{name}.log").open("w")
        procs[name] = subprocess.Popen([sys.executable, "-m", "tailor.cli", "train", str(tmp_path / f"{name}.yaml")],
                                       env=env, stdout=logs[name], stderr=subprocess.STDOUT)
    try:
        killed, proc, deadline = tmp_path / "killed", procs["killed"], time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if any(checkpoint_step(c) >= k and read_manifest(c) for c in list_checkpoints(killed)):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
        assert procs["straight"].wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        stop(procs, logs)
    start = StartStep()
    resumed = run(load_recipe(tmp_path / "killed.yaml", ["train.resume=true"]), callbacks=[start])
    assert 1 <= start.step < ALIGN_STEPS and resumed.metrics["steps"] == ALIGN_STEPS
    assert_same(final_tensors(tmp_path / "straight"), final_tensors(tmp_path / "killed"))
    from tailor.training.callbacks import read_metrics

    key = "rewards/margins" if objective == "dpo" else "reward"
    logged = {name: [(m["step"], m["loss"], m[key]) for m in read_metrics(tmp_path / name / "metrics.jsonl") if "loss" in m]
              for name in ("straight", "killed")}
    assert logged["killed"] == logged["straight"] and len(logged["killed"]) == ALIGN_STEPS
