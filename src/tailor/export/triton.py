"""Triton Inference Server model repository: the ONNX model, tokenizer pre/post-processing, an ensemble, a generator.

`export_triton(MODEL, OUT)` writes (NAME = `name`, default "tailor"):

    OUT/NAME_onnx/          platform onnxruntime_onnx: 1/model.onnx from `export_onnx` (KV cache in and out)
    OUT/NAME_preprocess/    python backend: TEXT -> input_ids, attention_mask, position_ids, empty past
    OUT/NAME_postprocess/   python backend: logits -> NEXT_TOKEN_ID, NEXT_TOKEN
    OUT/NAME/               ensemble: preprocess -> onnx -> postprocess (TEXT in, next token out)
    OUT/NAME_generate/      python backend: TEXT (+ MAX_TOKENS) -> GENERATED, greedy, the ONNX model called via BLS
    OUT/README.md

Each config.pbtxt declares inputs and outputs with the data types and dims of the ONNX graph (batch axis left
to max_batch_size), dynamic batching and an instance group. The python models are one file,
`tailor/export/triton_model.py`, told apart by their `role` parameter, each with a copy of the tokenizer.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from tailor.errors import TailorError
from tailor.export.common import write_manifest
from tailor.export.onnx import GRAPH_FILE, export_onnx

_MODEL_PY = Path(__file__).with_name("triton_model.py")
# onnx TensorProto element type -> Triton data type (model_config.proto's DataType).
_DTYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64",
           9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


def graph_tensors(onnx_path: Path) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of the graph: name, Triton data type and dims without the batch axis (-1 = variable)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def one(v) -> dict:
        t = v.type.tensor_type
        if t.elem_type not in _DTYPES:
            raise TailorError(f"ONNX tensor '{v.name}' has element type {t.elem_type}, which Triton's config cannot declare",
                              where=str(onnx_path), fix="export a float32 model (tailor export casts to float32)")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims or t.shape.dim[0].HasField("dim_value"):
            raise TailorError(f"ONNX tensor '{v.name}' has a fixed batch axis ({dims}), so Triton cannot batch it",
                              where=str(onnx_path), fix="re-export with --onnx-exporter torchscript")
        return {"name": v.name, "data_type": _DTYPES[t.elem_type], "dims": dims[1:]}

    return [one(v) for v in graph.input], [one(v) for v in graph.output]


def _tensor(t: dict, optional: bool = False) -> str:
    extra = " optional: true" if optional else ""
    return f'  {{ name: "{t["name"]}" data_type: {t["data_type"]} dims: [ {", ".join(map(str, t["dims"]))} ]{extra} }}'


def _io(key: str, tensors: list[dict], optional: tuple[str, ...] = ()) -> str:
    return f"{key} [\n" + ",\n".join(_tensor(t, t["name"] in optional) for t in tensors) + "\n]\n"


def _params(params: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}\n' for k, v in params.items())


def model_config(name: str, inputs: list[dict], outputs: list[dict], max_batch_size: int, *, platform: str | None = None,
                 backend: str | None = None, kind: str = "KIND_CPU", instances: int = 1, queue_delay_us: int = 100,
                 params: dict[str, str] | None = None, optional: tuple[str, ...] = ()) -> str:
    """A config.pbtxt (protobuf text of Triton's ModelConfig) for a model with dynamic batching."""
    head = f'name: "{name}"\n' + (f'platform: "{platform}"\n' if platform else f'backend: "{backend}"\n')
    return (head + f"max_batch_size: {max_batch_size}\n" + _io("input", inputs, optional) + _io("output", outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
            + f"instance_group [ {{ count: {instances} kind: {kind} }} ]\n" + _params(params or {}))


def ensemble_config(name: str, inputs: list[dict], outputs: list[dict], max_batch_size: int,
                    steps: list[tuple[str, dict[str, str], dict[str, str]]]) -> str:
    """An ensemble's config.pbtxt: steps are (model, {model input: ensemble tensor}, {model output: ensemble tensor})."""
    def maps(key, m):
        return "".join(f'      {key} {{ key: "{k}" value: "{v}" }}\n' for k, v in m.items())

    body = ",\n".join(f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps("input_map", i)}{maps("output_map", o)}    }}'
                      for model, i, o in steps)
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n' + _io("input", inputs)
            + _io("output", outputs) + f"ensemble_scheduling {{\n  step [\n{body}\n  ]\n}}\n")


def _python_model(out: Path, name: str, tokenizer_src: Path, config: str) -> None:
    version = out / name / "1"
    version.mkdir(parents=True)
    shutil.copyfile(_MODEL_PY, version / "model.py")
    shutil.copytree(tokenizer_src, version / "tokenizer")
    (out / name / "config.pbtxt").write_text(config, encoding="utf-8")


def export_triton(model_path: str | Path, out_dir: str | Path, exporter: str = "auto", name: str = "tailor",
                  max_batch_size: int = 8, max_tokens: int = 64) -> Path:
    """Export MODEL as a Triton model repository in OUT (layout in the module docstring); returns OUT.

    `exporter` goes to `export_onnx`; `max_batch_size` bounds each model's dynamic batches; `max_tokens` is the
    generator's default when a request sends no MAX_TOKENS. tritonserver itself is not needed to write it.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise TailorError(f"invalid Triton model name '{name}'", where="name", fix="use letters, digits, '_', '.', '-'")
    if max_batch_size < 1 or max_tokens < 1:
        raise TailorError("max_batch_size and max_tokens must be at least 1", where="export_triton")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise TailorError(f"{out} is not empty", where="--out", fix="choose a new or empty directory for the model repository")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        _write_repository(model_path, out, exporter, name, max_batch_size, max_tokens)
    except BaseException:
        if created:  # a refused model leaves no half-written repository behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def _write_repository(model_path, out: Path, exporter: str, name: str, max_batch_size: int, max_tokens: int) -> None:
    with tempfile.TemporaryDirectory(dir=out, prefix=".onnx-") as tmp:
        staged = Path(tmp)
        export_onnx(model_path, staged, exporter=exporter)
        manifest = json.loads((staged / "export.json").read_text(encoding="utf-8"))
        gen = json.loads((staged / "generation_config.json").read_text(encoding="utf-8"))
        inputs, outputs = graph_tensors(staged / GRAPH_FILE)
        onnx_version = out / f"{name}_onnx" / "1"
        onnx_version.mkdir(parents=True)
        for f in staged.glob(GRAPH_FILE + "*"):  # model.onnx and its external data, side by side as Triton expects
            shutil.move(str(f), onnx_version / f.name)
        tokenizer = staged / "tokenizer"
        tokenizer.mkdir()
        for f in staged.iterdir():
            if f.is_file() and f.name != "export.json":
                shutil.copy(f, tokenizer / f.name)
        _write_models(out, name, tokenizer, inputs, outputs, gen, max_batch_size, max_tokens)
    write_manifest(out, format="triton", source=str(Path(model_path).resolve()), exporter=manifest["exporter"],
                   models={"onnx": f"{name}_onnx", "preprocess": f"{name}_preprocess", "postprocess": f"{name}_postprocess",
                           "ensemble": name, "generate": f"{name}_generate"},
                   num_layers=manifest["num_layers"], max_batch_size=max_batch_size)
    (out / "README.md").write_text(readme(name, max_batch_size, max_tokens), encoding="utf-8")


def _write_models(out: Path, name: str, tokenizer: Path, inputs: list[dict], outputs: list[dict], gen: dict,
                  max_batch_size: int, max_tokens: int) -> None:
    from transformers import AutoTokenizer

    eos = gen.get("eos_token_id")
    eos = [] if eos is None else (eos if isinstance(eos, list) else [eos])
    past = {t["name"]: [t["dims"][0], t["dims"][2]] for t in inputs if t["name"].startswith("past_key_values.")}
    chat = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True).chat_template is not None
    common = {"pad_token_id": str(gen.get("pad_token_id") or 0), "eos_token_ids": json.dumps(eos),
              "past_shapes": json.dumps(past), "chat_template": "true" if chat else "false"}
    text = [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}]
    logits = [t for t in outputs if t["name"] == "logits"]
    nxt = [{"name": "NEXT_TOKEN_ID", "data_type": "TYPE_INT64", "dims": [1]},
           {"name": "NEXT_TOKEN", "data_type": "TYPE_STRING", "dims": [1]}]
    (out / f"{name}_onnx" / "config.pbtxt").write_text(
        model_config(f"{name}_onnx", inputs, outputs, max_batch_size, platform="onnxruntime_onnx", kind="KIND_AUTO"),
        encoding="utf-8")
    _python_model(out, f"{name}_preprocess", tokenizer, model_config(
        f"{name}_preprocess", text, inputs, max_batch_size, backend="python", params={"role": "preprocess", **common}))
    _python_model(out, f"{name}_postprocess", tokenizer, model_config(
        f"{name}_postprocess", logits, nxt, max_batch_size, backend="python", params={"role": "postprocess", **common}))
    _python_model(out, f"{name}_generate", tokenizer, model_config(
        f"{name}_generate", text + [{"name": "MAX_TOKENS", "data_type": "TYPE_INT32", "dims": [1]}],
        [{"name": "GENERATED", "data_type": "TYPE_STRING", "dims": [1]}], max_batch_size, backend="python",
        optional=("MAX_TOKENS",), params={"role": "generate", "onnx_model": f"{name}_onnx", "max_tokens": str(max_tokens),
                                          **common}))
    feeds = {t["name"]: t["name"] for t in inputs}
    steps = [(f"{name}_preprocess", {"TEXT": "TEXT"}, feeds), (f"{name}_onnx", feeds, {"logits": "logits"}),
             (f"{name}_postprocess", {"logits": "logits"}, {t["name"]: t["name"] for t in nxt})]
    (out / name / "1").mkdir(parents=True)  # an ensemble has no files, but Triton wants its version directory
    (out / name / "config.pbtxt").write_text(ensemble_config(name, text, nxt, max_batch_size, steps), encoding="utf-8")


def readme(name: str, max_batch_size: int, max_tokens: int) -> str:
    """The repository's README.md: its models and how to serve it."""
    return f"""# Triton model repository ({name})

Written by `tailor export --format triton`. **Not run in tritonserver by tailor's CI** (it has none): every
config.pbtxt is parsed against Triton's own schema (tritonclient's model_config_pb2), the python models' code
runs against a stand-in of `triton_python_backend_utils`, and the ONNX model's logits are compared with
PyTorch's in ONNX Runtime. The python models have also run in a real Triton 2.51.0 (python backend only);
the ONNX model, the ensemble and the generator have not run in Triton.

| model | backend | in | out |
|---|---|---|---|
| `{name}_onnx` | onnxruntime | input_ids, attention_mask, position_ids, past_key_values.* | logits, present.* |
| `{name}_preprocess` | python | TEXT | the ONNX model's inputs (left-padded, empty cache) |
| `{name}_postprocess` | python | logits | NEXT_TOKEN_ID, NEXT_TOKEN (greedy) |
| `{name}` | ensemble | TEXT | NEXT_TOKEN_ID, NEXT_TOKEN |
| `{name}_generate` | python (BLS) | TEXT, MAX_TOKENS (optional, default {max_tokens}) | GENERATED (greedy, KV cache) |

TEXT is one user message per row; when the tokenizer has a chat template it is applied, as `tailor serve`'s
`/generate` does. Every model batches dynamically (max_batch_size {max_batch_size}); the ONNX model batches
only requests of the same shape. `{name}_onnx` runs where Triton places it (KIND_AUTO: a GPU when there is
one), the python models on the CPU.

Serve it (the python models need `transformers` in Triton's Python environment):

    docker run --rm -p 8000:8000 -v $PWD:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
      bash -c "pip install transformers && tritonserver --model-repository=/models"

    curl -s localhost:8000/v2/models/{name}_generate/infer -d \\
      '{{"inputs": [{{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["How long can I return a laptop?"]}}]}}'
"""
