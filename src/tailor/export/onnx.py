"""ONNX export with dynamic batch/sequence axes and KV-cache inputs and outputs.

The graph takes `input_ids`, `attention_mask` (past + new positions), `position_ids` and one
`past_key_values.{layer}.{key|value}` tensor per layer and cache half, and returns `logits` and the
grown `present.{layer}.{key|value}` tensors. Feeding a past of length 0 makes the same graph the
prefill step, so one file serves both prefill and one-token decoding (`onnx_runtime.greedy`).

Cache shapes come from the model itself (a 2-token forward), not from the config, so architectures
with unusual caches (DeepSeek-V3's multi-head latent attention) export through the same code.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from tailor.errors import TailorError
from tailor.export.common import load_for_export, save_tokenizer_and_config, write_manifest

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
GRAPH_FILE = "model.onnx"


def past_names(n_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


class _WithCache(torch.nn.Module):
    """Flat tensors in and out, because ONNX graphs cannot take or return a transformers Cache object."""

    def __init__(self, model, n_layers: int):
        super().__init__()
        self.model, self.n_layers = model, n_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.n_layers)],
                             config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        flat = []
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def prepare_for_tracing(model) -> None:
    """Switch to implementations without data-dependent Python control flow, which tracing would freeze.

    SDPA attention builds its masks from tensors; the default MoE expert loop skips experts that got
    no tokens in the example input, so the batched-matmul experts implementation is used instead.
    """
    model.set_attn_implementation("sdpa")
    if getattr(model.config, "_experts_implementation", None) is not None:
        model.set_experts_implementation("batched_mm")


def cache_shapes(model) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per layer, the (key, value) cache shapes of one 2-token sequence: (1, heads, 2, dim) each."""
    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True)
    layers = getattr(out.past_key_values, "layers", None)
    if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
        raise TailorError(
            f"{type(model).__name__} does not use a key/value cache tailor can flatten for ONNX",
            fix="export it with --format torchscript or --format safetensors",
        )
    return [(tuple(layer.keys.shape), tuple(layer.values.shape)) for layer in layers]


def _example_inputs(shapes, batch: int, seq: int, past: int):
    ids = torch.randint(3, 50, (batch, seq))
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    pos = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    cache = []
    for k, v in shapes:
        cache += [torch.zeros(batch, k[1], past, k[3]), torch.zeros(batch, v[1], past, v[3])]
    return (ids, mask, pos, *cache)


def _export(wrapper, args, path: Path, n_layers: int, exporter: str, opset: int | None) -> None:
    inputs = ["input_ids", "attention_mask", "position_ids"] + past_names(n_layers)
    outputs = ["logits"] + present_names(n_layers)
    if exporter == "dynamo":
        shapes = ({0: "batch", 1: "seq"}, {0: "batch", 1: "total"}, {0: "batch", 1: "seq"},
                  tuple({0: "batch", 2: "past"} for _ in range(2 * n_layers)))
        torch.onnx.export(wrapper, args, str(path), dynamo=True, input_names=inputs, output_names=outputs,
                          dynamic_shapes=shapes, opset_version=opset or 18, optimize=True, verbose=False)
        return
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    axes.update({n: {0: "batch", 2: "past"} for n in past_names(n_layers)})
    axes.update({n: {0: "batch", 2: "total"} for n in present_names(n_layers)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated and says so at length
        torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=opset or 17)


def _unsupported(model_path, error) -> TailorError:
    """The error for a model holding an operator ONNX cannot express (e.g. the int8 kernels of `tailor quantize`)."""
    from tailor.models.loading import tailor_quantized

    quantized = tailor_quantized(model_path)
    return TailorError(f"{model_path} cannot be exported to ONNX: {str(error).splitlines()[0]}", where=str(model_path),
                       fix=("export the model from before `tailor quantize` (ONNX has no operator for its int8 kernels); for a "
                            "quantized file, export that model with --format gguf --gguf-type q8_0" if quantized else
                            "use --format torchscript, safetensors or gguf for this model"))


def export_onnx(model_path: str | Path, out_dir: str | Path, exporter: str = "auto", opset: int | None = None) -> Path:
    """Export MODEL to OUT/model.onnx (float32, KV cache in and out) plus tokenizer and configs.

    `exporter`: "dynamo" (torch.export-based, torch's recommended path), "torchscript" (the older
    tracing exporter, several times faster to run) or "auto" (dynamo, falling back to torchscript
    when dynamo fails; the one used is recorded in export.json). Returns the output directory.
    """
    if exporter not in EXPORTERS:
        raise TailorError(f"unknown ONNX exporter '{exporter}'", where="--onnx-exporter", fix=f"use one of {', '.join(EXPORTERS)}")
    model, tokenizer = load_for_export(model_path)
    prepare_for_tracing(model)
    shapes = cache_shapes(model)
    n_layers = len(shapes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GRAPH_FILE
    # Non-trivial example sizes (batch 2, 3 new tokens after 4 cached) so no axis is specialised to 0 or 1.
    args = _example_inputs(shapes, batch=2, seq=3, past=4)
    wrapper = _WithCache(model, n_layers).eval()
    used = "torchscript" if exporter == "torchscript" else "dynamo"
    try:
        try:
            _export(wrapper, args, path, n_layers, used, opset)
        except Exception as e:  # noqa: BLE001 - any exporter failure falls back, and is logged with its reason
            if exporter != "auto":
                raise
            log.warning("dynamo ONNX export failed (%s: %s); using the TorchScript-based exporter", type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "")
            used = "torchscript"
            for stale in out.glob(GRAPH_FILE + "*"):
                stale.unlink()
            _export(wrapper, args, path, n_layers, used, opset)
    except torch.onnx.errors.UnsupportedOperatorError as e:
        raise _unsupported(model_path, e) from None
    save_tokenizer_and_config(model, tokenizer, out)
    write_manifest(out, format="onnx", source=str(Path(model_path).resolve()), exporter=used, file=GRAPH_FILE,
                   num_layers=n_layers, dtype="float32", kv_cache=True,
                   inputs=["input_ids", "attention_mask", "position_ids", "past_key_values.{layer}.{key|value}"],
                   outputs=["logits", "present.{layer}.{key|value}"])
    return out
