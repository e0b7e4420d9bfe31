"""Shared by the runtime tests: a model loaded as `tailor eval` loads it."""

from tailor import runtime
from tailor.adapters.loading import load_causal_lm


def enabled(path, **kwargs):
    """`load_causal_lm(path, **kwargs)` with the runtime speed-ups installed (`tailor.runtime.enable`)."""
    model = load_causal_lm(path, **kwargs)
    runtime.enable(model)
    return model
