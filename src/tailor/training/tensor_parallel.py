"""Tensor parallelism (`train.tensor_parallel: N`, launched with `tailor train RECIPE --nproc N`).

Megatron-style splitting as transformers ships it: `from_pretrained(distributed_config=DistributedConfig(tp_size=N))`
applies the architecture's `base_model_tp_plan` (attention q/k/v and MLP gate/up split by output column, o/down
by input row, embeddings by vocabulary row, the head by vocabulary column), so each process holds 1/N of those
weights as DTensors and reads only its shard from the checkpoint; the Trainer leaves such a model unwrapped and
gives every process of the group the same batch. Checkpoints and final/ hold the gathered weights
(save_pretrained gathers the shards, rank 0 writes), which load in one process with plain from_pretrained.

This module refuses what cannot run (before any process loads weights) and, on CPUs, supplies the accelerate
configuration that lets the run go over gloo.
"""

from __future__ import annotations

import accelerate
from accelerate import ParallelismConfig
from accelerate.utils import DistributedType

from tailor.config import Recipe
from tailor.errors import TailorError

# accelerate releases whose ParallelismConfig validation CpuParallelism was tested with (constraints.txt pins 1.15.0).
CPU_TP_ACCELERATE = ("1.15",)


# Adapter methods whose trained weights are the model's own: peft's layers wrap an nn.Linear and build their
# A/B matrices from its shape, which under tensor parallelism is a DTensor split across processes.
TP_METHODS = ("full", "freeze")
TP_OBJECTIVES = ("pretrain", "sft")  # recipes/lm.py, the recipe that loads through phases.load_causal_lm


def check_tensor_parallel(recipe: Recipe, launched: bool, processes: int) -> None:
    """Refuse train.tensor_parallel settings that cannot run: no launcher, a process count other than N, another
    engine beside it, an adapter, an objective other than pretrain/sft, a model without a tensor-parallel plan
    or whose heads / MLP / vocabulary N does not divide."""
    t, n = recipe.train, recipe.train.tensor_parallel
    where = "train.tensor_parallel"
    if not launched:
        raise TailorError(f"train.tensor_parallel={n} splits the model across {n} processes, and this is one process",
                          where=where, fix=f"run `tailor train RECIPE --nproc {n}`, or set train.tensor_parallel=1")
    if processes != n:
        raise TailorError(f"train.tensor_parallel={n} with {processes} processes: every process holds 1/{n} of each "
                          "matrix, so the run needs exactly that many (tensor x data parallel is not offered)",
                          where=where, fix=f"launch with --nproc {n}, or set train.tensor_parallel={processes}")
    if t.distributed != "none":
        raise TailorError(f"train.tensor_parallel={n} with train.distributed={t.distributed}: the tensor-parallel "
                          f"model is split at load time and cannot also be wrapped by {t.distributed}",
                          where=where, fix="set train.distributed=none (the processes are the tensor-parallel group), "
                                           "or train.tensor_parallel=1")
    if recipe.adapter.method not in TP_METHODS:
        raise TailorError(f"adapter.method={recipe.adapter.method} with train.tensor_parallel: peft's adapter layers "
                          "are built on whole nn.Linear weights, not on weights split across processes",
                          where="adapter.method", fix="use adapter.method=full or freeze with tensor parallelism, or "
                                                      f"{recipe.adapter.method} with train.distributed=fsdp or ddp")
    teacher = getattr(getattr(recipe, "distill", None), "teacher", None)
    if t.objective not in TP_OBJECTIVES or teacher:
        raise TailorError(f"train.tensor_parallel is offered for train.objective pretrain and sft (tailor train), "
                          f"not {'tailor distill' if teacher else t.objective}",
                          where=where, fix="set train.tensor_parallel=1 and use train.distributed=fsdp to shard it")
    if t.resume:
        raise TailorError("train.resume with train.tensor_parallel: its checkpoints hold the gathered weights only "
                          "(transformers does not checkpoint the optimizer state of a model split at load time)",
                          where="train.resume", fix="start a new run (train.resume=false), or train with fsdp to resume")
    if t.ema_decay or t.adversarial != "none":
        key = "train.ema_decay" if t.ema_decay else "train.adversarial"
        raise TailorError(f"{key} with train.tensor_parallel: it works on whole weight matrices, which are split "
                          "across processes", where=key, fix=f"turn {key} off, or use train.distributed=ddp")
    check_tp_model(recipe, n)


def check_tp_model(recipe: Recipe, n: int) -> None:
    """The model ships a tensor-parallel plan, and N divides every dimension the plan splits."""
    from transformers import AutoConfig

    from tailor.models.loading import is_model_dir
    from tailor.models.vision import is_vision_model_dir

    m = recipe.model
    if not m.path:
        raise TailorError("train.tensor_parallel with model.preset: every process loads its shard of a saved model",
                          where="model.preset", fix=f"build it once with `tailor model init {m.preset} --tokenizer "
                                                    "TOKENIZER --out DIR` and set model.path=DIR")
    if not is_model_dir(m.path):
        return  # loading it reports what is missing
    if is_vision_model_dir(m.path):
        raise TailorError(f"train.tensor_parallel: {m.path} is a vision-language model; tensor parallelism is "
                          "offered for text models", where="model.path", fix="use train.distributed=fsdp for it")
    config = AutoConfig.from_pretrained(m.path, trust_remote_code=m.trust_remote_code, local_files_only=True)
    config = getattr(config, "text_config", None) or config
    if not getattr(config, "base_model_tp_plan", None):
        raise TailorError(f"train.tensor_parallel: {config.model_type} models ship no tensor-parallel plan "
                          "(base_model_tp_plan) in transformers", where="model.path",
                          fix="use train.distributed=fsdp for this architecture, or a model that has one "
                              "(Llama, Qwen2, Mistral, Gemma, ...)")
    heads = getattr(config, "num_attention_heads", None)
    dims = {"num_attention_heads": heads, "num_key_value_heads": getattr(config, "num_key_value_heads", None) or heads,
            "intermediate_size": getattr(config, "intermediate_size", None), "vocab_size": config.vocab_size}
    bad = {k: v for k, v in dims.items() if v and v % n}
    if bad:
        listed = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise TailorError(f"train.tensor_parallel={n} does not divide the model's {listed}: each process must hold "
                          "whole attention heads and equal slices", where="train.tensor_parallel",
                          fix=f"choose N dividing {', '.join(str(v) for v in dims.values() if v)}")


class CpuParallelism(ParallelismConfig):
    """accelerate's ParallelismConfig for a tensor-parallel run on CPUs (gloo).

    The Trainer hands a tensor-parallel model's size to accelerate as a ParallelismConfig, whose device mesh makes
    the data loader give every process of the group the same batch. accelerate 1.15 accepts one only under FSDP2,
    DeepSpeed or its list of accelerator types, which leaves out MULTI_CPU, although torch's DTensor collectives run
    over gloo (the 2-process CPU run matches the one-process losses: tests/training/test_tensor_parallel.py). This
    lets MULTI_CPU through after the same process-count check; every other case is accelerate's own validation.
    A module-level class: the Trainer pickles its arguments into each checkpoint.
    """

    def _validate_accelerator(self, accelerator):
        if accelerator.distributed_type != DistributedType.MULTI_CPU:
            return super()._validate_accelerator(accelerator)
        if self.total_size != accelerator.num_processes:
            raise ValueError(f"tensor parallel over {self.total_size} processes, but {accelerator.num_processes} "
                             "were started")
        return None


def cpu_tensor_parallel(n: int) -> CpuParallelism:
    """The TrainingArguments.parallelism_config of an N-way tensor-parallel run on CPUs. It overrides a private
    method of accelerate, so it is used only with the accelerate releases it was tested with."""
    if not accelerate.__version__.startswith(tuple(v + "." for v in CPU_TP_ACCELERATE)):
        raise TailorError(f"train.tensor_parallel on CPUs needs accelerate {' or '.join(CPU_TP_ACCELERATE)}.x; "
                          f"this is accelerate {accelerate.__version__}", where="train.tensor_parallel",
                          fix="install the accelerate version in constraints.txt, or run it on GPUs")
    return CpuParallelism(tp_size=n)
