"""`tailor plan` with train.tensor_parallel = N: per process, the split matrices (and their gradients and optimizer
state) are 1/N, norms whole; the attention and MLP activations are 1/N; the N processes share one batch."""

from dataclasses import replace

import pytest

from tailor.config import TrainRecipe
from tailor.errors import TailorError
from tailor.plan import RunSettings, compare_methods, estimate_memory, plan_run
from tailor.plan.memory import activation_bytes
from tests.plan.common import KVD, H, I, L, tiny_llama_shape


@pytest.fixture(scope="module")
def shape():
    return tiny_llama_shape()


def test_tensor_parallel_splits_matrices_but_not_norms(shape):
    one = RunSettings(method="full", device="cuda")
    m1, _, _ = estimate_memory(shape, one, 0)
    m2, _, _ = estimate_memory(shape, replace(one, nproc=2, tensor_parallel=2), 0)
    norms = (2 * L + 1) * H
    per_process = norms + (shape.parameters - norms) / 2  # embedding, attention, MLP and head split in two
    assert m2.weights == int(per_process * 4)
    assert m2.gradients == int(per_process * 4) and m2.optimizer == int(2 * per_process * 4)  # AdamW: 2 states
    # No gradient buckets (no DDP), no gathered blocks (no FSDP): the temporaries are the one process's
    assert m2.temporary == m1.temporary


def test_tensor_parallel_splits_the_attention_and_mlp_activations(shape):
    one = RunSettings(method="full", device="cuda", batch_size=2, seq_len=16)
    saved1, loss1 = activation_bytes(shape, one)
    saved2, loss2 = activation_bytes(shape, replace(one, nproc=2, tensor_parallel=2))
    split_per_token = L * ((2 * H + 2 * KVD) * 4 + 4 * I * 4)  # fp32: q, attention output, k, v; gate, up, act, product
    assert saved1 - saved2 == 2 * 16 * split_per_token // 2
    assert loss2 == loss1  # the head's logits are gathered whole on every process


def test_plan_run_takes_the_processes_from_the_setting_and_counts_one_batch():
    r = TrainRecipe.model_validate({"data": {"max_length": 1024}, "train": {"batch_size": 1, "tensor_parallel": 2},
                                    "adapter": {"method": "full"}})
    plan = plan_run(r, "cuda", memory_gb=80, model="qwen2.5-7b", measure=False)
    single = plan_run(TrainRecipe.model_validate({"data": {"max_length": 1024}, "train": {"batch_size": 1},
                                                  "adapter": {"method": "full"}}),
                      "cuda", memory_gb=80, model="qwen2.5-7b", measure=False)
    assert plan.settings.nproc == 2 and plan.settings.distributed == "none"  # not turned into ddp
    assert plan.tokens_per_step == single.tokens_per_step == 1024  # both processes train on the same batch
    assert 0.5 < plan.memory.weights / single.memory.weights < 0.51  # the 7B's norms are a sliver
    assert any("tensor parallel x 2" in n for n in plan.not_modelled)
    assert plan_run(r, "cuda", memory_gb=80, nproc=2, model="qwen2.5-7b", measure=False).peak_bytes == plan.peak_bytes
    with pytest.raises(TailorError, match="--nproc 4 with train.tensor_parallel=2"):
        plan_run(r, "cuda", memory_gb=80, nproc=4, model="qwen2.5-7b", measure=False)


def test_compare_methods_recommends_only_what_tensor_parallel_trains():
    r = TrainRecipe.model_validate({"data": {"max_length": 512}, "train": {"batch_size": 1, "tensor_parallel": 2}})
    plans = compare_methods(r, "cuda", memory_gb=80, model="qwen2.5-7b", measure=False)
    recommended = next(p for p in plans if p.recommended)
    assert recommended.settings.method in ("full", "freeze") and recommended.settings.tensor_parallel == 2
