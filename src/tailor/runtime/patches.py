"""The runtime patches, each with its guard, and the one switch inference paths call: `enable(model)`.

A patch replaces library internals for speed on CPU inference. It installs only where (1) the model sits on a
CPU: on GPUs the shortcuts' host-side control flow would sync once per layer, and transformers' own kernels are
the faster path there; (2) the installed versions of the libraries whose internals it reads are in the tested
range (`guard.TESTED`); and (3) the private names it reads exist. Otherwise the plain library path runs, and
one warning per process says which check failed. Every patch gives the same greedy tokens as the plain path
(tests/runtime), and `disable` restores the library's own code. Packed attention, a training speed-up, is
guarded the same way inside `tailor.runtime.packed_attention.use_packed_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from tailor.runtime import decode_step, experts, guard, kernels
from tailor.runtime.instance import patched


@dataclass(frozen=True)
class Patch:
    """One speed-up: what it replaces, whose internals it reads, and how to install and remove it."""

    name: str
    replaces: str
    libraries: tuple[str, ...]  # whose installed version must be in guard.TESTED
    private_names: tuple[str, ...]  # dotted names it reads that the libraries do not promise to keep
    install: Callable[[nn.Module], int]  # -> modules changed (0: nothing in this model to speed up)
    remove: Callable[[nn.Module], int]
    installed_on: Callable[[nn.Module], bool]  # one module


PATCHES = (
    Patch("decode_step", "DeepseekV3Model.forward (per instance) for one decoded token of one sequence",
          ("transformers", "torch"), decode_step.PRIVATE_NAMES,
          decode_step.use_fast_decode, decode_step.use_transformers_decode, partial(patched, key=decode_step.KEY)),
    Patch("routed_experts", "the forward of transformers' fused MoE experts modules (per instance)",
          ("transformers",), experts.PRIVATE_NAMES,
          experts.use_decode_experts, experts.use_transformers_experts, partial(patched, key=experts.KEY)),
    Patch("int8_int4_kernels", "the dequantizing products of tailor's int8/int4 layers, by torch's private CPU ops",
          ("torch",), kernels.PRIVATE_NAMES,
          kernels.use_kernels, kernels.use_plain_kernels, kernels.installed_on),
)


def on_cpu(model: nn.Module) -> bool:
    """Whether `model`'s weights are on the CPU (a model with no tensors counts as on the CPU)."""
    for tensor in model.parameters():
        return tensor.device.type == "cpu"
    for tensor in model.buffers():
        return tensor.device.type == "cpu"
    return True


def enable(model: nn.Module) -> list[str]:
    """Install every runtime patch that applies to `model` (CPU only, guarded); returns the names of the patches
    this call installed (empty on a GPU, for a model with nothing to speed up, or outside the tested versions)."""
    if not on_cpu(model):
        return []
    installed, refused = [], []
    for patch in PATCHES:
        why = guard.refusal(patch.libraries, patch.private_names)
        if why:
            refused.append(f"{patch.name} ({why})")
        elif patch.install(model):
            installed.append(patch.name)
    if refused:
        guard.warn_once("tailor.runtime: running the plain library path instead of " + "; ".join(refused)
                        + ". Install the tested versions (pip install -c constraints.txt) to get the speed-ups back.")
    return installed


def disable(model: nn.Module) -> list[str]:
    """Remove every runtime patch from `model` (the libraries' own code again); returns the names removed."""
    return [patch.name for patch in PATCHES if patch.remove(model)]


def installed(model: nn.Module) -> list[str]:
    """The names of the runtime patches installed on `model` now (whoever called `enable`)."""
    modules = list(model.modules())
    return [patch.name for patch in PATCHES if any(patch.installed_on(m) for m in modules)]
