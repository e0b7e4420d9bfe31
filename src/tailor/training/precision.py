"""Pick the training precision from what the device supports, never from assumptions."""

from __future__ import annotations

import torch

from tailor.errors import TailorError


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str | None]:
    """(precision, notice): 'fp32' | 'bf16' | 'fp16', and a one-line notice when auto chose for the user."""
    from tailor.models.loading import cpu_supports_bf16

    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return ("bf16", None) if bf16_ok else ("fp16", "this GPU has no bf16: training in fp16 with dynamic loss scaling")
        if requested == "bf16" and not bf16_ok:
            raise TailorError("train.precision=bf16 but this GPU does not support bf16", where="train.precision",
                              fix="use train.precision=fp16 or auto")
        return requested, None
    if requested == "fp16":
        raise TailorError(f"train.precision=fp16 needs a CUDA GPU; this run is on {device.type}", where="train.precision",
                          fix="use train.precision=auto or fp32")
    if requested == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise TailorError("train.precision=bf16 on a CPU without bf16 instructions would run about 100x slower",
                          where="train.precision", fix="use train.precision=auto or fp32")
    if requested == "auto":
        return "fp32", f"training in fp32 on {device.type} (no GPU with bf16/fp16 found)"
    return requested, None
