"""Bad input to `tailor export` gives clear TailorErrors (and exit code 2 from the CLI)."""

import pytest

from tailor.cli import main
from tailor.errors import TailorError
from tailor.export import FORMATS, run


def test_unknown_format_names_the_nearest(llama_dir, tmp_path):
    with pytest.raises(TailorError, match="unknown export format 'onxx'") as e:
        run(llama_dir, "onxx", tmp_path / "out")
    assert "did you mean 'onnx'" in e.value.fix and not (tmp_path / "out").exists()
    assert set(FORMATS) == {"safetensors", "onnx", "torchscript", "gguf", "web", "triton"}


@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_not_a_model_dir(tmp_path, fmt):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    with pytest.raises(TailorError, match="neither a model directory"):
        run(tmp_path / "notes", fmt, tmp_path / "out")
    with pytest.raises(TailorError, match="model not found"):
        run(tmp_path / "missing", fmt, tmp_path / "out")


def test_bad_options(llama_dir, tmp_path):
    with pytest.raises(TailorError, match="unknown GGUF type 'q4'"):
        run(llama_dir, "gguf", tmp_path / "out", outtype="q4")
    with pytest.raises(TailorError, match="unknown ONNX exporter"):
        run(llama_dir, "onnx", tmp_path / "out", exporter="jit")


def test_cli(llama_dir, tmp_path, capsys):
    assert main(["export", str(llama_dir), "--format", "tflite", "--out", str(tmp_path / "x")]) == 2
    assert "unknown export format 'tflite'" in capsys.readouterr().err
    assert main(["export", str(llama_dir), "--format", "gguf", "--onnx-exporter", "dynamo", "--out", str(tmp_path / "x")]) == 2
    assert "--onnx-exporter applies to --format onnx, web and triton only" in capsys.readouterr().err
    assert main(["export", str(llama_dir), "--format", "gguf", "--gguf-type", "q8_0", "--out", str(tmp_path / "g"),
                 "--no-measure"]) == 0
    assert (tmp_path / "g" / "model-q8_0.gguf").is_file() and (tmp_path / "g" / "Modelfile").is_file()
