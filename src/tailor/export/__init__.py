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
from tailor.export.triton import export_triton
from tailor.export.web import export_web

FORMATS: dict[str, Callable[..., Path]] = {
    "safetensors": export_safetensors,
    "onnx": export_onnx,
    "torchscript": export_torchscript,
    "gguf": export_gguf,
    "web": export_web,
    "triton": export_triton,
}


def run(model_path: str | Path, fmt: str, out_dir: str | Path, **options) -> Path:
    """Export MODEL to OUT in format `fmt` (safetensors, onnx, torchscript, gguf, web or triton); returns the written path.

    `options` go to the format's function: `exporter` for onnx, web and triton, `weights` ("fp32"/"int8") for web,
    `outtype` ("f16"/"q8_0") for gguf.
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


# flag -> (the formats it applies to, their functions' option it sets, the flag's default, the option when unset)
_FLAGS = {"onnx_exporter": (("onnx", "web", "triton"), "exporter", "auto", "auto"),
          "web_weights": (("web",), "weights", "fp32", "fp32"), "gguf_type": (("gguf",), "outtype", None, "f16")}


def format_options(fmt: str, **flags) -> dict:
    """The options of `run` from the command's flags; a flag set for a format it does not apply to is an error."""
    options = {}
    for name, value in flags.items():
        formats, option, default, unset = _FLAGS[name]
        if fmt in formats:
            options[option] = unset if value is None else value
        elif value != default:
            flag = "--" + name.replace("_", "-")
            names = " and ".join(formats) if len(formats) < 3 else ", ".join(formats[:-1]) + " and " + formats[-1]
            raise TailorError(f"{flag} applies to --format {names} only", where=flag)
    return options
