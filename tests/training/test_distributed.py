"""Scale-out: `tailor train --nproc N` through torchrun, DDP and FSDP over gloo on CPU, DeepSpeed checks.

Every multi-process run here is real: 2 worker processes (1 torch thread each) started by torchrun, talking over
gloo. The one-process reference runs in this process with the per-process batch doubled, so both see the same
global batches (see test_ddp_...).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tailor.cli import main
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training import args as args_module
from tailor.training.callbacks import read_metrics
from tailor.training.distributed import (check_distributed, check_launch, distributed_arguments, load_deepspeed_config,
                                        torchrun_args)
from tailor.training import train as run
from tests.conftest import CONVERSATIONS, write_jsonl

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"
STEPS = 6  # 16 conversations, 4 per global batch: 4 steps per epoch, so the run reshuffles once
# fp32 on one CPU; the only difference between the runs is the order of additions (two half-batch gradients
# all-reduced vs one batch), about 1e-7 relative per step. Adam scales small gradient differences up a little;
# measured: losses agree to 2e-7 relative and final weights to 3e-6 after 6 steps at lr 3e-3. 1e-4 is 30x that,
# while the same per-process batch in one process (the control below) differs by more than 1e-2.
TOL = 1e-4


def settings(model_dir, data, out, **train):
    return {"model": {"path": str(model_dir)}, "data": {"train": [str(data)], "max_length": 48},
            "adapter": {"method": "full"},
            "train": {"output_dir": str(out), "max_steps": STEPS, "batch_size": 2, "lr": 3e-3, "warmup_ratio": 0.0,
                      "scheduler": "constant", "dropout": 0.0, "logging_steps": 1, "save_steps": 3,
                      "mfu_probe_seconds": 0, **train}}


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def losses(out: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    write_jsonl(d / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS] * 4)
    return d


@pytest.fixture(scope="module")
def reference(workdir, llama_dir):
    """One process, batch 4: the run that 2 processes x batch 2 must reproduce."""
    out = workdir / "one"
    run(load_recipe(write_recipe(workdir / "one.yaml", settings(llama_dir, workdir / "chat.jsonl", out, batch_size=4))))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_nodes_follow_the_one_process_loss_curve(workdir, llama_dir, reference, caplog):
    """2 processes x batch 2 reproduce 1 process x batch 4, step by step.

    Why the batches are the same: the Trainer lets accelerate prepare its DataLoader. In both runs the order is
    one permutation from a SeedableRandomSampler seeded with data_seed + epoch; with 2 processes it is cut into
    batches of 2 and batch i goes to rank i % 2 (BatchSamplerShard), so global step k holds batches 2k and 2k+1
    = the one-process batch k of size 4. (A torch DistributedSampler would draw its own permutation, and the
    curves would differ from the first step for that reason alone.) The loss is a mean over
    loss-bearing tokens: with average_tokens_across_devices (on by default) each rank divides by the global
    token count, so the all-reduced gradient equals the one-process one even when the ranks' SFT batches hold
    different numbers of tokens.

    Launched as two single-process "nodes" (--nnodes 2 --node-rank r --master-addr), the multi-node command
    of the README run on one machine (node 1 a subprocess, node 0 this process); train.distributed=none with
    2 processes becomes ddp.
    """
    out = workdir / "ddp"
    recipe = write_recipe(workdir / "ddp.yaml", settings(llama_dir, workdir / "chat.jsonl", out))
    node = ["train", str(recipe), "--nproc", "1", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port",
            str(free_port())]
    other = subprocess.Popen([sys.executable, "-m", "tailor.cli", *node, "--node-rank", "1"],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        code = main([*node, "--node-rank", "0"])
    finally:
        log = other.communicate(timeout=300)[0]
    assert (code, other.returncode) == (0, 0), log
    assert "2 processes with train.distributed=none: training with ddp" in caplog.text

    two, one = losses(out), losses(reference)
    # The control: one process with the per-process batch (2) follows another curve; the comparison can fail.
    control = workdir / "control"
    run(load_recipe(write_recipe(workdir / "control.yaml", settings(llama_dir, workdir / "chat.jsonl", control))))
    curves = f"\n1 process x 4: {one}\n2 processes x 2: {two}\n1 process x 2: {losses(control)}"
    print(curves)
    assert len(two) == len(one) == STEPS, curves
    assert max(abs(a - b) for a, b in zip(one, two)) < TOL, curves
    assert max(abs(a - b) for a, b in zip(losses(control), two)) > 100 * TOL, curves
    assert max_diff(load_file(str(reference / "final/model.safetensors")), load_file(str(out / "final/model.safetensors"))) < TOL

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["distributed"] == "ddp"
    assert summary["tokens_seen"] == json.loads((reference / "train_summary.json").read_text())["tokens_seen"]
    # Only rank 0 writes run files: one metrics row per step, one TensorBoard event file.
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m] == list(range(1, STEPS + 1))
    assert len(list((out / "tensorboard").rglob("events.out.tfevents*"))) == 1
    assert load_recipe(out / "config.yaml").train.distributed == "ddp"


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_run_saves_a_model_that_loads_in_one_process(workdir, llama_dir, reference, method, capfd):
    """FSDP2 over gloo, 2 processes: the final model loads with plain from_pretrained (full) or as a peft adapter.

    full: checkpoints in FULL_STATE_DICT form; the run's own rank-0 gather (checkpoint-6/pytorch_model_fsdp.bin,
    written by accelerate's FSDP save) gives bit-identical logits to final/, and both match the one-process run.
    lora: SHARDED_STATE_DICT checkpoints (one shard per rank); final/ is still a normal adapter.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = workdir / f"fsdp_{method}"
    extra = {"fsdp_state_dict": "full" if method == "full" else "sharded"}
    recipe = settings(llama_dir, workdir / "chat.jsonl", out, distributed="fsdp", **extra)
    recipe["adapter"] = {"method": method, "r": 4}
    path = write_recipe(workdir / f"fsdp_{method}.yaml", recipe)
    code = main(["train", str(path), "--nproc", "2"])
    assert code == 0, capfd.readouterr().err[-3000:]

    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    base = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
    if method == "full":
        assert (out / "checkpoint-6" / "pytorch_model_fsdp.bin").is_file()  # accelerate's FSDP checkpoint: sharded run
        final = AutoModelForCausalLM.from_pretrained(out / "final").eval()
        gathered = AutoModelForCausalLM.from_pretrained(llama_dir)
        gathered.load_state_dict(torch.load(out / "checkpoint-6" / "pytorch_model_fsdp.bin", weights_only=True))
        with torch.no_grad():
            logits, saved_logits = final(ids).logits, gathered.eval()(ids).logits
        assert torch.equal(logits, saved_logits)
        assert max_diff(load_file(str(reference / "final/model.safetensors")), load_file(str(out / "final/model.safetensors"))) < TOL
    else:
        assert len(list((out / "checkpoint-6").glob("pytorch_model_fsdp_0/*"))) >= 2  # one shard file per rank
        final = PeftModel.from_pretrained(base, out / "final").eval()
        with torch.no_grad():
            logits = final(ids).logits
        one = run(load_recipe(write_recipe(workdir / "one_lora.yaml", {
            **settings(llama_dir, workdir / "chat.jsonl", workdir / "one_lora", batch_size=4),
            "adapter": {"method": "lora", "r": 4}})))
        assert max_diff(load_file(str(one.final_dir / "adapter_model.safetensors")),
                        load_file(str(out / "final/adapter_model.safetensors"))) < TOL
    assert not torch.allclose(logits, base_logits, atol=1e-3)  # it trained
    assert json.loads((out / "train_summary.json").read_text())["processes"] == 2


def test_launcher_refuses_bad_flags_before_starting_workers(tmp_path, llama_dir, chat_file, capsys, monkeypatch):
    path = write_recipe(tmp_path / "r.yaml", settings(llama_dir, chat_file, tmp_path / "run"))

    def fails(*args, expect):  # key=value overrides first: argparse takes no positionals after the flags
        overrides = [a for a in args if "=" in a and not a.startswith("-")]
        flags = [a for a in args if a not in overrides]
        assert main(["train", str(path), *overrides, *flags]) == 2
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err, err

    fails("--nproc", "0", expect="--nproc: Input should be greater than or equal to 1 (got 0)")  # the flag's schema
    with pytest.raises(TailorError, match="--nproc 0: the number of processes per node must be at least 1"):
        check_launch(0, 1, 0, None, None)  # the same check for Python callers of launch()
    fails("--nproc", "1", "--nnodes", "2", "--node-rank", "1", expect="--nnodes 2 needs --master-addr")
    fails("--nproc", "1", "--nnodes", "2", "--node-rank", "2", "--master-addr", "h", expect="--node-rank 2 is outside 0..1")
    fails("--nproc", "2", "--master-port", "70000", expect="--master-port 70000 is not a TCP port")
    fails("--nnodes", "2", expect="--nnodes without --nproc")
    fails("train.distributed=fsdp", expect="train.distributed=fsdp needs worker processes started by a launcher")
    fails("--nproc", "2", "train.distributed=fsdp", "adapter.method=qlora", expect="adapter.method=qlora with train.distributed=fsdp")
    fails("--nproc", "2", "train.distributed=fsdp", "train.ema_decay=0.9", expect="train.ema_decay with train.distributed=fsdp")
    fails("--nproc", "2", "train.distributed=fsdp", "train.adversarial=fgm", expect="train.adversarial=fgm with train.distributed=fsdp")
    fails("--nproc", "2", "train.deepspeed_config=x.json", expect="train.deepspeed_config applies to train.distributed=deepspeed")
    fails("--nproc", "2", "train.distributed=deepspeed", expect="needs train.deepspeed_config")
    fails("--nproc", "2", "train.distributed=deepspeed", f"train.deepspeed_config={tmp_path / 'none.json'}",
          expect="DeepSpeed config " + str(tmp_path / "none.json") + " not found")
    monkeypatch.setenv("LOCAL_RANK", "0")
    fails("--nproc", "2", expect="--nproc inside a process that torchrun already started")
    assert not (tmp_path / "run").exists()  # nothing started


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_deepspeed_is_refused_clearly_here(tmp_path, llama_dir, chat_file, capsys, monkeypatch):
    """DeepSpeed is not installed on this CPU machine; and accelerate only runs it on accelerator devices."""
    import importlib.util

    zero2 = str(CONFIGS / "zero2.json")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", settings(llama_dir, chat_file, tmp_path / "run",
                                                                    distributed="deepspeed", deepspeed_config=zero2)))
    if importlib.util.find_spec("deepspeed") is None:
        assert main(["train", str(tmp_path / "r.yaml"), "--nproc", "2"]) == 2
        assert "needs the deepspeed package, which is not installed" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "deepspeed" else real(name, *a))
    with pytest.raises(TailorError, match="runs on CUDA GPUs; this run is on cpu"):
        check_distributed(recipe, "cpu", launched=True)


@pytest.mark.parametrize("name, stage", [("zero2.json", 2), ("zero3.json", 3)])
def test_shipped_deepspeed_configs(name, stage, monkeypatch):
    cfg = load_deepspeed_config(str(CONFIGS / name))
    assert cfg["zero_optimization"]["stage"] == stage
    # The values transformers' HfTrainerDeepSpeedConfig fills from TrainingArguments (i.e. from train.*).
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "gradient_clipping"):
        assert cfg[key] == "auto", key
    assert cfg["bf16"]["enabled"] == cfg["fp16"]["enabled"] == "auto"
    assert cfg["zero_optimization"]["reduce_bucket_size"] == "auto"
    if stage == 3:
        assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # final/ is a full model
    # No optimizer/scheduler sections: the Trainer builds train.optimizer and train.scheduler and hands them over.
    assert "optimizer" not in cfg and "scheduler" not in cfg
    monkeypatch.setenv("WORLD_SIZE", "2")
    t = load_recipe(None, ["train.distributed=deepspeed", f"train.deepspeed_config={CONFIGS / name}"]).train
    assert distributed_arguments(t, "cuda") == {"deepspeed": str(CONFIGS / name)}


def test_deepspeed_config_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 2},\n  "bf16": }')
    with pytest.raises(TailorError, match="not valid JSON: .* at line 2"):
        load_deepspeed_config(str(bad))
    bad.write_text('{"zero_optimization": {"stage": 5}}')
    with pytest.raises(TailorError, match="zero_optimization.stage=5"):
        load_deepspeed_config(str(bad))
    bad.write_text('{"train_batch_size": "auto"}')
    with pytest.raises(TailorError, match="zero_optimization.stage=None"):
        load_deepspeed_config(str(bad))


def test_training_arguments_and_torchrun_flags(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    t = load_recipe(None, ["train.distributed=fsdp", "train.fsdp_sharding=shard_grad_op", "train.fsdp_auto_wrap=none",
                           "train.fsdp_state_dict=sharded", "train.gradient_checkpointing=true"]).train
    kw = distributed_arguments(t, "cpu")
    assert kw["ddp_backend"] == "gloo" and kw["fsdp"] is True
    # FSDP's own checkpointing replaces the Trainer's (which would add an all-gather to the backward pass); the
    # keywords are read as passed (building TrainingArguments for FSDP would start a process group)
    monkeypatch.setattr(args_module, "TrainingArguments", lambda **keywords: keywords)
    assert args_module.training_arguments(t, "out", torch.device("cpu"), "fp32", False)["activation_checkpointing"] is False
    assert kw["fsdp_config"] == {"version": 2, "reshard_after_forward": False, "auto_wrap_policy": "NO_WRAP",
                                 "state_dict_type": "SHARDED_STATE_DICT", "activation_checkpointing": True}
    assert distributed_arguments(load_recipe(None, ["train.distributed=ddp"]).train, "cuda") == {}  # nccl: accelerate's default
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed_arguments(load_recipe(None, []).train, "cpu") == {}  # a plain run is untouched
    assert torchrun_args(2, 1, 0, None, None) == ["--standalone", "--nproc-per-node=2"]
    assert torchrun_args(4, 2, 1, "10.0.0.1", None) == ["--nproc-per-node=4", "--nnodes=2", "--node-rank=1",
                                                        "--master-addr=10.0.0.1", "--master-port=29500"]


@pytest.mark.auto_device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA GPUs (DeepSpeed and NCCL FSDP); not run on CPU")
@pytest.mark.parametrize("engine", ["fsdp", "deepspeed-zero2", "deepspeed-zero3"])
def test_gpu_engines_train_and_save_a_loadable_model(tmp_path, llama_dir, chat_file, engine):
    import importlib.util

    from transformers import AutoModelForCausalLM

    if engine.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    extra = {"distributed": "fsdp"} if engine == "fsdp" else {
        "distributed": "deepspeed", "deepspeed_config": str(CONFIGS / f"{engine.split('-')[1]}.json")}
    path = write_recipe(tmp_path / "r.yaml", settings(llama_dir, chat_file, tmp_path / "run", **extra))
    assert main(["train", str(path), "--nproc", str(min(2, torch.cuda.device_count()))]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    assert losses(tmp_path / "run")[-1] < losses(tmp_path / "run")[0]
    assert sum(p.numel() for p in model.parameters()) > 0
