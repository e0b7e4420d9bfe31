"""Export a model (or an adapter merged into its base) to the formats people deploy.

Formats are chosen by name through `FORMATS`; each is a plain function
`fn(model_path, out_dir, **options) -> Path` in its own module.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

from tailor.errors import TailorError
from tailor.export.gguf import export_gguf
from tailor.export.onnx import export_onnx
from tailor.export.safetensors import export_safetensors
from tailor.export.torchscript import export_torchscript

FORMATS: dict[str, Callable[..., Path]] = {
    "safetensors": export_safetensors,
    "onnx": export_onnx,
    "torchscript": export_torchscript,
    "gguf": export_gguf,
}


def run(model_path: str | Path, fmt: str, out_dir: str | Path, **options) -> Path:
    """Export MODEL to OUT in format `fmt` (safetensors, onnx, torchscript or gguf); returns the written path.

    `options` go to the format's function: `exporter` for onnx, `outtype` ("f16"/"q8_0") for gguf.
    `tailor.export.report.export_with_report` runs this between before/after measurements.
    """
    check_format(fmt)
    return FORMATS[fmt](model_path, out_dir, **options)


def check_format(fmt: str) -> str:
    """The format name, or an error naming the nearest valid one."""
    if fmt not in FORMATS:
        near = difflib.get_close_matches(str(fmt), list(FORMATS), n=1)
        raise TailorError(f"unknown export format '{fmt}'", where="--format",
                          fix=(f"did you mean '{near[0]}'? " if near else "") + "formats: " + ", ".join(FORMATS))
    return fmt
