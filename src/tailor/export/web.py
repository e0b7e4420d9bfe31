"""The browser export: a static folder whose page answers chat questions with the model, offline, no server code.

    OUT/index.html, OUT/chat.js       the page and its script (tailor/export/web_assets)
    OUT/web.json                      what the script reads: graph, cache inputs, special tokens, eos, limits
    OUT/model/model.onnx              `export_onnx`'s KV-cache graph, float32 (or int8 weights)
    OUT/model/tokenizer.json, tokenizer_config.json, chat_template.jinja, config.json, generation_config.json
    OUT/runtime/                      onnxruntime-web, @huggingface/tokenizers, @huggingface/jinja (web_runtime)
    OUT/export.json                   what was exported, how, from where, file sizes

The script renders the conversation with the model's own chat template (Jinja), tokenizes it with the model's
tokenizer.json, and decodes greedily with the graph's KV cache (one prefill run, then one run per token), the
steps of `tailor.models.generation.generate`; with float32 weights its tokens are PyTorch's. Serve the folder
with any static server (`python -m http.server -d OUT`); browsers refuse WebAssembly and module scripts from
file:// pages. Without cross-origin isolation headers (http.server sends none) WebAssembly runs one thread.
"""

from __future__ import annotations

import json
import logging
import shutil
from importlib import resources
from pathlib import Path

from tailor.errors import TailorError
from tailor.export import web_runtime
from tailor.export.common import write_manifest
from tailor.export.onnx import GRAPH_FILE, export_onnx

WEIGHTS = ("fp32", "int8")
ASSETS = ("index.html", "chat.js")
MANIFEST = "web.json"
MODEL_DIR = "model"
# The page's WebAssembly memory is 32-bit: 4 GiB for the weights, the KV cache and the runtime together.
MAX_GRAPH_BYTES = 3 * 2**30


def _source_dirs(model_path: Path) -> tuple[Path, Path]:
    """(the directory whose config.json describes the architecture, the tokenizer's directory)."""
    from tailor.adapters.loading import adapter_base, is_adapter_dir, tokenizer_dir

    if is_adapter_dir(model_path):
        return Path(adapter_base(model_path)), Path(tokenizer_dir(model_path))
    return model_path, model_path


def _check_size(model_path: Path, arch_dir: Path, weights: str) -> None:
    """Refuse a model whose graph cannot fit onnxruntime-web's 32-bit WebAssembly memory (4 GiB in all)."""
    import torch

    from tailor.export.common import stored_dtype

    stored = sum(p.stat().st_size for pattern in ("*.safetensors", "*.bin") for p in arch_dir.glob(pattern))
    fp32 = stored * 4 // torch.empty(0, dtype=stored_dtype(model_path)).element_size()
    need = fp32 if weights == "fp32" else fp32 // 4  # int8: a lower bound (embeddings and norms stay float)
    if need > MAX_GRAPH_BYTES:
        raise TailorError(f"{model_path} needs about {need / 2**30:.1f} GiB of {weights} weights in the page; "
                          f"onnxruntime-web's WebAssembly memory holds at most 4 GiB in all (limit here "
                          f"{MAX_GRAPH_BYTES / 2**30:.0f} GiB for the graph)", where="--format web",
                          fix="export with --web-weights int8, or a smaller model" if weights == "fp32" else
                          "export a smaller model (tailor distill), or serve it with `tailor serve`")


def check_source(model_path: str | Path, weights: str = "fp32"):
    """The tokenizer of MODEL, after refusing what the page cannot run (before anything slow happens)."""
    from tailor.models.loading import load_tokenizer
    from tailor.models.vision import is_vision_model_dir

    path = Path(model_path)
    if not path.exists():
        raise TailorError(f"model not found: {path}", where=str(path), fix="pass a model directory or an adapter directory")
    arch_dir, tok_dir = _source_dirs(path)
    if is_vision_model_dir(arch_dir):
        raise TailorError(f"{path} is a vision-language model; the web export runs text-only causal language models",
                          where="--format web",
                          fix="export it with --format safetensors, or export a text-only model")
    _check_size(path, arch_dir, weights)
    tokenizer = load_tokenizer(tok_dir)
    if not getattr(tokenizer, "is_fast", False):
        raise TailorError(f"the tokenizer of {path} is a slow (Python) tokenizer without tokenizer.json, which the "
                          "page's tokenizer reads", where=str(tok_dir),
                          fix="convert it to a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True)."
                          "save_pretrained(DIR)) or train one with `tailor tokenizer train`")
    if not _template(tokenizer):
        raise TailorError(f"the tokenizer of {path} has no chat template, so the page cannot build prompts",
                          where=str(tok_dir),
                          fix="train with data.chat_template=deepseek (or chatml), or add chat_template.jinja to the model")
    return tokenizer


def _template(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the page uses the default one, as apply_chat_template does
        template = template.get("default")
    return template or None


def _cache_inputs(graph: Path) -> list[dict]:
    """Name, heads and head size of each past_key_values input (the page feeds empty ones to the prefill run)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    out = []
    for inp in model.graph.input:
        if inp.name.startswith("past_key_values."):
            dims = inp.type.tensor_type.shape.dim
            out.append({"name": inp.name, "present": inp.name.replace("past_key_values.", "present."),
                        "heads": dims[1].dim_value, "dim": dims[3].dim_value})
    return out


def quantize_int8(graph: Path) -> None:
    """Replace GRAPH by onnxruntime's dynamic int8 quantization of its MatMul weights (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = graph.with_name("model.int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic's root-logger hint to pre-process (shape inference for static
    try:                          # quantization) does not apply to dynamic MatMul weights; the user cannot act on it
        quantize_dynamic(str(graph), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)
    for old in graph.parent.glob(GRAPH_FILE + "*"):
        old.unlink()
    tmp.rename(graph)


def _manifest(out: Path, tokenizer, config: dict, weights: str, name: str) -> dict:
    model = out / MODEL_DIR
    tokens = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    info = {
        "name": name, "weights": weights, "graph": f"{MODEL_DIR}/{GRAPH_FILE}",
        "external_data": [f"{MODEL_DIR}/{p.name}" for p in sorted(model.glob(GRAPH_FILE + ".*"))],
        "tokenizer": f"{MODEL_DIR}/tokenizer.json", "tokenizer_config": f"{MODEL_DIR}/tokenizer_config.json",
        "chat_template": f"{MODEL_DIR}/chat_template.jinja", "special_tokens": tokens,
        # tailor's generate stops at the tokenizer's eos only (models.generation.decoding_kwargs): so does the page
        "eos_token_ids": [eos] if eos is not None else [], "pad_token_id": pad,
        "max_positions": config.get("max_position_embeddings") or tokenizer.model_max_length,
        "max_new_tokens": 256, "cache": _cache_inputs(model / GRAPH_FILE),
    }
    (out / MANIFEST).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def export_web(model_path: str | Path, out_dir: str | Path, exporter: str = "auto", weights: str = "fp32") -> Path:
    """Export MODEL to the static chat page OUT (see the module docstring); returns OUT.

    `exporter` is export_onnx's; `weights` "fp32" (greedy tokens identical to PyTorch) or "int8" (onnxruntime's
    quantize_dynamic of the MatMul weights: about 4x smaller transformer weights, tokens may differ).
    """
    if weights not in WEIGHTS:
        raise TailorError(f"unknown web weights '{weights}'", where="--web-weights", fix=f"use one of {', '.join(WEIGHTS)}")
    tokenizer = check_source(model_path, weights)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TailorError(f"{out} is a file", where="--out", fix="pass a directory (it is created when missing)")
    runtime = web_runtime.install(out / "runtime")  # first: a missing npm costs no export
    for stale in (out / MODEL_DIR).glob(GRAPH_FILE + "*"):  # an earlier export's graph or external data
        stale.unlink()
    export_onnx(model_path, out / MODEL_DIR, exporter=exporter)
    graph_info = json.loads((out / MODEL_DIR / "export.json").read_text(encoding="utf-8"))
    if weights == "int8":
        quantize_int8(out / MODEL_DIR / GRAPH_FILE)
        write_manifest(out / MODEL_DIR, **{**graph_info, "dtype": "int8 MatMul weights (quantize_dynamic), float32 else"})
    (out / MODEL_DIR / "chat_template.jinja").write_text(_template(tokenizer), encoding="utf-8")
    config = json.loads((out / MODEL_DIR / "config.json").read_text(encoding="utf-8"))
    _manifest(out, tokenizer, config, weights, Path(model_path).resolve().name)
    assets = resources.files("tailor.export") / "web_assets"
    for name in ASSETS:
        shutil.copyfile(str(assets / name), out / name)
    sizes = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    write_manifest(out, format="web", source=str(Path(model_path).resolve()), exporter=graph_info["exporter"],
                   weights=weights, graph=f"{MODEL_DIR}/{GRAPH_FILE}", kv_cache=True, runtime=runtime,
                   total_mb=round(sum(sizes.values()) / 2**20, 2), files=sizes,
                   serve=f"python -m http.server -d {out} 8000, then open http://127.0.0.1:8000/")
    return out
