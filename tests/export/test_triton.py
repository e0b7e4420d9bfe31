"""`tailor export --format triton`: a model repository whose configs parse against Triton's own schema, whose python
models run (against a stand-in of triton_python_backend_utils) and whose ONNX model gives PyTorch's logits.

tritonserver is not available where these tests run, so the repository is never loaded by Triton itself.
"""

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch

from tailor.cli import main
from tailor.errors import TailorError
from tailor.export import run

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is in the dev extra")
from google.protobuf import json_format, text_format  # noqa: E402

TEXTS = ["How long can I return a laptop?", "笔记本电脑可以退货多久？", "Shipping north?"]
MODELS = ("tailor_onnx", "tailor_preprocess", "tailor_postprocess", "tailor", "tailor_generate")


@pytest.fixture(scope="module")
def repo(llama_dir, tmp_path_factory):
    return run(llama_dir, "triton", tmp_path_factory.mktemp("triton") / "repo", exporter="torchscript")


def _config(repo, name) -> "pb2.ModelConfig":
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), pb2.ModelConfig())


def _tensors(entries) -> dict:
    return {t.name: (pb2.DataType.Name(t.data_type), list(t.dims)) for t in entries}


# --- A stand-in for Triton's python backend module -------------------------------------------------------------------

class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _Error:
    def __init__(self, message):
        self._message = message

    def message(self):
        return self._message


class _Response:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error_ = output_tensors, error

    def has_error(self):
        return self.error_ is not None

    def error(self):
        return self.error_


class _Request:
    def __init__(self, tensors):
        self.inputs = tensors


def fake_pb_utils(models: dict) -> types.ModuleType:
    """triton_python_backend_utils with the calls model.py makes; BLS requests go to `models[name](feeds, outputs)`."""
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor, m.TritonError, m.InferenceResponse = _Tensor, _Error, _Response

    def by_name(holder, name):
        tensors = holder.inputs if isinstance(holder, _Request) else holder.output_tensors
        return next((t for t in tensors if t.name() == name), None)

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs):
            self.model, self.outputs, self.inputs = model_name, requested_output_names, inputs

        def exec(self):
            arrays = models[self.model]({t.name(): t.as_numpy() for t in self.inputs}, self.outputs)
            return _Response([_Tensor(n, a) for n, a in zip(self.outputs, arrays)])

    m.get_input_tensor_by_name = m.get_output_tensor_by_name = by_name
    m.InferenceRequest = InferenceRequest
    return m


def load_python_model(repo, name, monkeypatch, models=None):
    """The repository's NAME/1/model.py, imported and initialized as Triton would (model_config as JSON)."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(models or {}))
    spec = importlib.util.spec_from_file_location(f"triton_{name}", repo / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = json_format.MessageToJson(_config(repo, name), preserving_proto_field_name=True)
    model.initialize({"model_config": config, "model_repository": str(repo / name), "model_version": "1",
                      "model_name": name, "model_instance_kind": "CPU"})
    return model


def _text(rows):
    return _Request([_Tensor("TEXT", np.array([[t.encode()] for t in rows], dtype=np.object_))])


def _outputs(response) -> dict:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors}


# --- Tests -----------------------------------------------------------------------------------------------------------

def test_repository_layout_and_configs_parse_against_tritons_schema(repo):
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == sorted(MODELS)
    assert (repo / "README.md").is_file() and "Not run in tritonserver by tailor's CI" in (repo / "README.md").read_text()
    assert (repo / "tailor_onnx" / "1" / "model.onnx").is_file() and (repo / "tailor" / "1").is_dir()
    for name in ("tailor_preprocess", "tailor_postprocess", "tailor_generate"):
        assert (repo / name / "1" / "model.py").is_file() and (repo / name / "1" / "tokenizer" / "tokenizer.json").is_file()
    configs = {name: _config(repo, name) for name in MODELS}
    for name, c in configs.items():
        assert c.name == name and c.max_batch_size == 8
        if name != "tailor":
            assert c.HasField("dynamic_batching") and len(c.instance_group) == 1 and c.instance_group[0].count == 1
    assert configs["tailor_onnx"].platform == "onnxruntime_onnx"
    assert pb2.ModelInstanceGroup.Kind.Name(configs["tailor_onnx"].instance_group[0].kind) == "KIND_AUTO"
    assert all(configs[n].backend == "python" for n in ("tailor_preprocess", "tailor_postprocess", "tailor_generate"))
    assert [i.optional for i in configs["tailor_generate"].input] == [False, True]
    # A typo in a field name or an enum value is a parse error: the schema is really checked.
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\nmax_batch_sise: 8\n', pb2.ModelConfig())
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\ninput [ { name: "a" data_type: TYPE_FLOAT dims: [ 1 ] } ]\n', pb2.ModelConfig())


def test_onnx_config_matches_the_graph(repo):
    import onnxruntime as ort

    onnx_types = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
    session = ort.InferenceSession(str(repo / "tailor_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    c = _config(repo, "tailor_onnx")
    for declared, actual in ((c.input, session.get_inputs()), (c.output, session.get_outputs())):
        assert list(_tensors(declared)) == [a.name for a in actual]
        for a in actual:
            dims = [d if isinstance(d, int) else -1 for d in a.shape[1:]]  # the batch axis is max_batch_size's
            assert _tensors(declared)[a.name] == (onnx_types[a.type], dims), a.name
    assert _tensors(c.input)["past_key_values.0.key"][1][1] == -1 and _tensors(c.output)["logits"][1][0] == -1


def test_ensemble_wiring_matches_its_models(repo):
    """Each step reads all its model's inputs from tensors an earlier step (or the request) made, with the same type."""
    configs = {name: _config(repo, name) for name in MODELS}
    ens = configs["tailor"]
    assert ens.platform == "ensemble" and len(ens.ensemble_scheduling.step) == 3
    made = {name: dtype for name, (dtype, _) in _tensors(ens.input).items()}  # ensemble tensor -> data type
    for step in ens.ensemble_scheduling.step:
        inputs, outputs = _tensors(configs[step.model_name].input), _tensors(configs[step.model_name].output)
        assert set(step.input_map) == set(inputs), step.model_name
        for key, value in step.input_map.items():
            assert made.get(value) == inputs[key][0], f"{step.model_name}.{key} <- {value}"
        for key, value in step.output_map.items():
            made[value] = outputs[key][0]
    assert all(made.get(name) == dtype for name, (dtype, _) in _tensors(ens.output).items())


def test_python_models_tokenize_score_and_generate(repo, llama_dir, monkeypatch):
    """preprocess -> the ONNX model (onnxruntime) -> postprocess, as the ensemble runs them; the logits equal PyTorch's;
    the generator's BLS loop gives transformers' greedy tokens."""
    import onnxruntime as ort

    from tailor.models.loading import load_model, load_tokenizer

    tok, model = load_tokenizer(llama_dir), load_model(llama_dir, dtype="float32", device="cpu")
    session = ort.InferenceSession(str(repo / "tailor_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx = {"tailor_onnx": lambda feeds, outputs: session.run(outputs, feeds)}

    pre = load_python_model(repo, "tailor_preprocess", monkeypatch)
    feeds = _outputs(pre.execute([_text(TEXTS)])[0])
    ids = [list(tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True,
                                        return_dict=False)) for t in TEXTS]
    width = max(map(len, ids))
    for row, mask, pos, p in zip(feeds["input_ids"], feeds["attention_mask"], feeds["position_ids"], ids):
        assert row[width - len(p):].tolist() == p and mask.tolist() == [0] * (width - len(p)) + [1] * len(p)
        assert pos[width - len(p):].tolist() == list(range(len(p)))  # left-padded chat-template ids
    assert feeds["past_key_values.0.key"].shape[2] == 0
    # Dynamic batching hands execute() several requests: one response each, each padded on its own.
    one, two = (_outputs(r) for r in pre.execute([_text(TEXTS[:1]), _text(TEXTS[1:])]))
    assert one["input_ids"].tolist() == [ids[0]] and two["input_ids"].shape == (2, max(map(len, ids[1:])))

    logits = session.run(["logits"], feeds)[0]
    with torch.no_grad():
        for i, p in enumerate(ids):
            expected = model(torch.tensor([p])).logits[0, -1].numpy()
            np.testing.assert_allclose(logits[i, -1], expected, atol=1e-4, rtol=1e-4)

    post = load_python_model(repo, "tailor_postprocess", monkeypatch)
    nxt = _outputs(post.execute([_Request([_Tensor("logits", logits)])])[0])
    assert nxt["NEXT_TOKEN_ID"][:, 0].tolist() == logits[:, -1].argmax(-1).tolist()
    assert [w[0].decode() for w in nxt["NEXT_TOKEN"]] == [tok.decode([int(t)]) for t in nxt["NEXT_TOKEN_ID"][:, 0]]

    gen = load_python_model(repo, "tailor_generate", monkeypatch, models=onnx)
    limit = _Tensor("MAX_TOKENS", np.array([[10]] * len(TEXTS), dtype=np.int32))
    out = _outputs(gen.execute([_Request(_text(TEXTS).inputs + [limit])])[0])["GENERATED"]
    with torch.no_grad():
        for p, got in zip(ids, out):
            seq = model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)[0, len(p):]
            assert got[0].decode() == tok.decode(seq.tolist(), skip_special_tokens=True)
    assert any(got[0] for got in out)
    # Without MAX_TOKENS the config's default (64) applies; a bad MAX_TOKENS answers that request with an error.
    assert len(_outputs(gen.execute([_text(TEXTS[:1])])[0])["GENERATED"]) == 1
    bad = gen.execute([_Request(_text(TEXTS[:1]).inputs + [_Tensor("MAX_TOKENS", np.array([[0]], dtype=np.int32))])])[0]
    assert bad.has_error() and "MAX_TOKENS must be at least 1" in bad.error().message()


def test_bad_input(llama_dir, repo, tmp_path):
    with pytest.raises(TailorError, match="is not empty"):
        run(llama_dir, "triton", repo)
    with pytest.raises(TailorError, match="invalid Triton model name"):
        run(llama_dir, "triton", tmp_path / "a", name="my model")
    (tmp_path / "notes").mkdir()
    with pytest.raises(TailorError, match="neither a model directory"):
        run(tmp_path / "notes", "triton", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_model_the_onnx_path_cannot_take(llama_dir, tmp_path):
    """tailor quantize's int8-dynamic kernels have no ONNX operator: a TailorError saying so, not the exporter's traceback."""
    assert main(["quantize", str(llama_dir), "--method", "int8-dynamic", "--out", str(tmp_path / "q"), "--no-measure"]) == 0
    with pytest.raises(TailorError, match="cannot be exported to ONNX: .*quantized::linear_dynamic") as e:
        run(tmp_path / "q", "triton", tmp_path / "repo")
    assert "before `tailor quantize`" in e.value.fix
    assert not (tmp_path / "repo").exists()  # no half-written repository


def test_cli(llama_dir, tmp_path, capsys):
    assert main(["export", str(llama_dir), "--format", "triton", "--out", str(tmp_path / "r"), "--no-measure",
                 "--onnx-exporter", "torchscript"]) == 0
    assert json.loads((tmp_path / "r" / "export.json").read_text())["models"]["ensemble"] == "tailor"
    assert main(["export", str(llama_dir), "--format", "triton", "--web-weights", "int8", "--out", str(tmp_path / "x")]) == 2
    assert "--web-weights applies to --format web only" in capsys.readouterr().err


def test_before_after_report_runs_the_repositorys_onnx_model(llama_dir, chat_file, tmp_path, monkeypatch):
    """export_with_report measures the repository's model.onnx (with the python models' tokenizer) against PyTorch."""
    import io

    from rich.console import Console

    from tailor.evaluation import measure
    from tailor.export import report

    monkeypatch.setattr(measure, "measure_isolated", measure.measure)  # in this process: no fresh interpreters
    monkeypatch.setattr(report, "measure_runtime_isolated", report.measure_runtime)
    res = report.export_with_report(llama_dir, "triton", tmp_path / "repo", eval_data=[str(chat_file)], max_examples=4,
                                    console=Console(file=io.StringIO(), width=250), exporter="torchscript")
    assert res.after["runtime"].startswith("ONNX Runtime") and "tritonserver itself not run" in res.after["runtime"]
    assert res.after["model_dir"] == str(tmp_path / "repo" / "tailor_onnx" / "1")
    assert res.after["greedy_agreement"] == 1.0 and len(res.after["greedy_tokens"]) == 4
    assert res.report == tmp_path / "repo" / report.REPORT_FILE and res.report.is_file()
