"""Replace one module instance's forward and put the original back: the mechanism the forward patches share.

Only the instance changes (its class, and every other model, keep transformers' code). The original forward is
kept in the instance's __dict__ under a key the patch names, which also marks the instance as patched.
"""

from __future__ import annotations

from torch import nn


def install_forward(module: nn.Module, key: str, forward) -> None:
    """Make `forward` (a function taking the module first) this instance's forward, keeping the original under `key`."""
    module.__dict__[key] = module.forward
    module.forward = forward.__get__(module)


def restore_forward(module: nn.Module, key: str) -> bool:
    """Undo `install_forward`; True when the module had been patched under `key`."""
    original = module.__dict__.pop(key, None)
    if original is None:
        return False
    if getattr(original, "__func__", None) is getattr(type(module), "forward", None):
        del module.forward  # the class's own forward again, as the loader returned it
    else:
        module.forward = original  # a forward another library set on the instance (e.g. accelerate's hooks)
    return True


def patched(module: nn.Module, key: str) -> bool:
    """Whether `install_forward` replaced this module's forward under `key`."""
    return key in module.__dict__
