"""Tensor parallelism (`train.tensor_parallel: N`, `tailor train RECIPE --nproc N`): 2 real processes over gloo.

The two processes each hold half of every attention and MLP matrix (transformers' Llama plan) and train on the
same batches; the one-process run with the same batch is the reference. Bad settings are refused before any
process starts.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from tailor.cli import main
from tailor.config import TrainRecipe, load_recipe
from tailor.errors import TailorError
from tailor.training import train as run
from tailor.training.distributed import check_distributed, distributed_arguments
from tailor.training.precision import resolve_precision
from tailor.training.preflight import as_trained
from tailor.training.tensor_parallel import CpuParallelism
from tests.conftest import CONVERSATIONS, write_jsonl
from tests.training.test_distributed import STEPS, losses, write_recipe
from tests.training.test_distributed import settings as distributed_settings

# fp32 on CPUs; the split matmuls add their halves in another order than one matmul (all-reduce of the row-split
# o_proj / down_proj outputs), about 1e-7 relative per step, which Adam at lr 3e-3 grows to ~1e-5 in the weights
# after 6 steps (measured: losses equal to 1e-6, weights to 1.04e-5). A batch drawn differently changes the loss
# in the first decimals.
LOSS_TOL, WEIGHT_TOL = 1e-4, 1e-4


def settings(model_dir, data, out, **train):
    """test_distributed's recipe (6 steps, lr 3e-3, constant) with batches of 4."""
    return distributed_settings(model_dir, data, out, **{"batch_size": 4, **train})


def test_two_processes_train_like_one_and_save_a_model_that_loads_in_one(tmp_path, llama_dir, capfd):
    """Same losses step by step as the one-process run on the same batches, a falling loss, and final/ (gathered
    from the shards) holding the one-process run's weights, loadable with plain from_pretrained."""
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS] * 4)
    out = tmp_path / "tp"
    recipe = write_recipe(tmp_path / "tp.yaml", settings(llama_dir, data, out, tensor_parallel=2))
    code = main(["train", str(recipe), "--nproc", "2"])
    assert code == 0, capfd.readouterr().err[-3000:]

    one = tmp_path / "one"
    run(load_recipe(write_recipe(tmp_path / "one.yaml", settings(llama_dir, data, one))))

    two_curve, one_curve = losses(out), losses(one)
    print(f"\n1 process: {one_curve}\n2 processes, tensor parallel: {two_curve}")
    assert len(two_curve) == len(one_curve) == STEPS
    assert max(abs(a - b) for a, b in zip(one_curve, two_curve)) < LOSS_TOL
    assert two_curve[-1] < two_curve[0] - 0.5

    # final/ and the checkpoints are whole tensors (not DTensor shards) of the one-process shapes and values.
    reference = load_file(str(one / "final/model.safetensors"))
    for folder in (out / "final", out / f"checkpoint-{STEPS}"):
        saved = load_file(str(folder / "model.safetensors"))
        assert saved.keys() == reference.keys()
        assert all(saved[k].shape == reference[k].shape for k in saved)
        assert max((saved[k] - reference[k]).abs().max().item() for k in saved) < WEIGHT_TOL
    model = AutoModelForCausalLM.from_pretrained(out / "final")  # one process, no distributed setup
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        got = model(ids).logits
        want = AutoModelForCausalLM.from_pretrained(one / "final")(ids).logits
    assert (got - want).abs().max().item() < 1e-3

    summary = json.loads((out / "train_summary.json").read_text())
    reference_summary = json.loads((one / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["tensor_parallel"] == 2
    # Both processes see the same batch: it is counted once.
    assert summary["tokens_seen"] == reference_summary["tokens_seen"]
    assert summary["loss_bearing_tokens"] == reference_summary["loss_bearing_tokens"]
    assert summary["precision"] == "fp32"  # tests set TAILOR_PRECISION=fp32 (conftest); both runs train in fp32


def _recipe(tmp_path, model_dir, **train):
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATIONS[0]}])
    return settings(model_dir, data, tmp_path / "out", **train)


@pytest.mark.parametrize("change, processes, launched, message", [
    ({}, 2, False, "splits the model across 2 processes, and this is one process"),
    ({}, 4, True, "train.tensor_parallel=2 with 4 processes"),
    ({"train.distributed": "fsdp"}, 2, True, "with train.distributed=fsdp: the tensor-parallel model is split at load"),
    ({"adapter.method": "lora"}, 2, True, "adapter.method=lora with train.tensor_parallel: peft's adapter layers"),
    ({"train.objective": "dpo"}, 2, True, "offered for train.objective pretrain and sft .*not dpo"),
    ({"train.resume": True}, 2, True, "train.resume with train.tensor_parallel"),
    ({"train.ema_decay": 0.99}, 2, True, "train.ema_decay with train.tensor_parallel"),
    ({"train.tensor_parallel": 3}, 3, True, r"=3 does not divide the model's num_attention_heads=4, num_key_value_heads=2, "
                                            r"intermediate_size=128, vocab_size=400"),
])
def test_settings_that_cannot_run_are_refused(tmp_path, llama_dir, change, processes, launched, message):
    data = _recipe(tmp_path, llama_dir, tensor_parallel=2)
    for key, value in change.items():
        section, name = key.split(".")
        data[section][name] = value
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", data))
    with pytest.raises(TailorError, match=message):
        check_distributed(recipe, "cpu", launched=launched, processes=processes)


def test_models_without_a_plan_or_saved_weights_are_refused(tmp_path, llama_dir, tokenizer_dir):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_head": 4, "n_embd": 64, "vocab_size": 400}))
    recipe = load_recipe(write_recipe(tmp_path / "g.yaml", _recipe(tmp_path, gpt2, tensor_parallel=2)))
    with pytest.raises(TailorError, match="gpt2 models ship no tensor-parallel plan"):
        check_distributed(recipe, "cpu", launched=True, processes=2)
    data = _recipe(tmp_path, llama_dir, tensor_parallel=2)
    data["model"] = {"preset": "llama-micro", "tokenizer": str(tokenizer_dir)}
    recipe = load_recipe(write_recipe(tmp_path / "p.yaml", data))
    with pytest.raises(TailorError, match="tailor model init llama-micro"):
        check_distributed(recipe, "cpu", launched=True, processes=2)


def test_launcher_refuses_a_process_count_other_than_n(tmp_path, llama_dir, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", _recipe(tmp_path, llama_dir, tensor_parallel=2))
    assert main(["train", str(recipe), "--nproc", "3"]) == 2
    assert "train.tensor_parallel=2 with 3 processes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # no worker started


def test_auto_precision_does_not_measure_under_tensor_parallelism(monkeypatch):
    monkeypatch.delenv("TAILOR_PRECISION", raising=False)

    def probe():
        raise AssertionError("measured")

    choice = resolve_precision("auto", torch.device("cpu"), flags={"avx512_bf16"}, probe=probe, measure=False)
    assert choice.name == "fp32" and not choice.confirm
    assert resolve_precision("bf16", torch.device("cpu"), flags={"avx512_bf16"}, measure=False).name == "bf16"
    # `tailor plan` resolves auto as the run will: measured for one process, fp32 for a tensor-parallel one
    monkeypatch.setattr("tailor.models.loading.cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setattr("tailor.training.precision.bf16_speedup", lambda device: 3.0)
    for n, expected in ((1, "bf16"), (2, "fp32")):
        recipe = TrainRecipe.model_validate({"train": {"tensor_parallel": n}})
        as_trained(recipe, "cpu")
        assert recipe.train.precision == expected


def test_training_arguments_of_a_cpu_run(tmp_path, llama_dir, monkeypatch):
    """Checkpoints hold the model only (the Trainer cannot checkpoint the optimizer state of a model split at
    load time), and accelerate gets a tensor-parallel config it accepts on CPUs (the 2-process run above uses it)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    t = load_recipe(write_recipe(tmp_path / "r.yaml", _recipe(tmp_path, llama_dir, tensor_parallel=2))).train
    kw = distributed_arguments(t, "cpu")
    assert kw["save_only_model"] is True and kw["ddp_backend"] == "gloo"
    assert isinstance(kw["parallelism_config"], CpuParallelism) and kw["parallelism_config"].tp_size == 2
    assert "parallelism_config" not in distributed_arguments(t, "cuda")  # the Trainer builds accelerate's own


def test_mfu_divides_by_the_peak_of_every_process():
    """Tokens/s count the whole run (a tensor-parallel group's batch once, DDP's batches all), so the peak they are
    measured against is every process's: 2 processes reaching 1/4 of their peaks each read 0.25, not 0.5."""
    from types import SimpleNamespace

    from tailor.training.telemetry import Throughput

    t = Throughput(probe_seconds=0)
    t.peak_flops, t._fpt[10] = 1e9, 1e6
    for world, expected in ((1, 0.5), (2, 0.25)):
        t._trainer = SimpleNamespace(args=SimpleNamespace(world_size=world))
        assert t._mfu(tokens=500, seconds=1.0, lengths=20, batches=2) == pytest.approx(expected)
