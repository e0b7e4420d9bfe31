"""Opt-in speed-ups that replace transformers/torch internals, each guarded by the tested library versions.

    model = tailor.adapters.loading.load_any(path)[0]   # an untouched Hugging Face model
    installed = tailor.runtime.enable(model)             # e.g. ["decode_step", "routed_experts"]
    tailor.runtime.installed(model)                      # what is installed now
    tailor.runtime.disable(model)                        # the libraries' own code again

`patches.PATCHES` lists what `enable` may install (decode step, routed experts, int8/int4 kernels) with the
private names each reads; `guard.TESTED` holds the tested ranges (pyproject.toml states the same).
`packed_attention.use_packed_attention` is the training-side speed-up, guarded the same way.
"""

from tailor.runtime.patches import PATCHES, Patch, disable, enable, installed

__all__ = ["PATCHES", "Patch", "disable", "enable", "installed"]
