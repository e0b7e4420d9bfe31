"""bitsandbytes quantization end to end on a GPU (skipped elsewhere), and its clear refusal on a CPU."""

import json

import pytest
import torch

from tailor.errors import TailorError
from tailor.models.loading import load_model, load_tokenizer


def _fake_bnb_dir(src, dst):
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_bnb_directory_on_a_cpu_names_the_fix(tmp_path, llama_dir):
    d = _fake_bnb_dir(llama_dir, tmp_path / "bnb")
    with pytest.raises(TailorError, match="CUDA GPUs only") as e:
        load_model(d, device="cpu")
    assert "int8-dynamic" in e.value.fix


@pytest.mark.auto_device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes needs a CUDA GPU")
@pytest.mark.parametrize("method", ["bnb-4bit", "bnb-8bit"])
@pytest.mark.parametrize("fixture", ["llama_dir", "deepseek_dir"])
def test_bnb_quantized_model_saves_loads_and_decodes(tmp_path, method, fixture, request):
    pytest.importorskip("bitsandbytes")
    from tailor.compression.quantize import quantize

    src = request.getfixturevalue(fixture)
    manifest = quantize(src, method, tmp_path / "q")
    assert manifest["quantized"]  # real bitsandbytes layers, listed
    model = load_model(tmp_path / "q")  # auto device: the GPU
    tok = load_tokenizer(tmp_path / "q")
    ids = torch.tensor([tok("How long can I return a laptop?")["input_ids"]], device=model.device)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # decode steps, not only prefill
    assert out.shape[1] == ids.shape[1] + 8
    kinds = {type(m).__name__ for m in model.modules()}
    assert ("Linear4bit" if method == "bnb-4bit" else "Linear8bitLt") in kinds
