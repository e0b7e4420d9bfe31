"""Loading local checkpoints safely; device, dtype and parameter counting."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from tailor.errors import TailorError
from tailor.models import loading
from tailor.models.loading import (
    count_parameters,
    is_model_dir,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("fixture", ["deepseek_dir", "llama_dir", "qwen2_dir"])
def test_saved_preset_loads_identically_both_ways(fixture, request, tokenizer):
    from transformers import AutoModelForCausalLM

    path = request.getfixturevalue(fixture)
    assert is_model_dir(path)
    ours = load_model(path, dtype="float32", device="cpu")
    theirs = AutoModelForCausalLM.from_pretrained(path)
    assert ours.dtype == torch.float32 and not ours.training
    ids = torch.tensor([tokenizer.encode("The return window is 30 days. 退货期限是30天。")])
    with torch.no_grad():
        a, b = ours(ids).logits, theirs.eval()(ids).logits
    assert torch.equal(a, b)
    assert load_model(path, device="cpu", for_training=True).training


def test_auto_dtype_on_cpu_is_float32(deepseek_dir):
    assert load_model(deepseek_dir, device="cpu").dtype == torch.float32


def test_load_tokenizer_keeps_trained_ids_for_qwen2_dirs(qwen2_dir, tokenizer):
    # transformers 5 forces its Qwen2Tokenizer onto qwen2 directories; ours must come back as saved.
    text = "Order 1234567 ships in 3 to 5 days. 发往北部地区"
    loaded = load_tokenizer(qwen2_dir)
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.chat_template == tokenizer.chat_template


def test_load_tokenizer_falls_back_to_eos_for_pad(tokenizer, tmp_path):
    from transformers import PreTrainedTokenizerFast

    no_pad = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token=tokenizer.eos_token)
    no_pad.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == tokenizer.eos_token


def test_missing_paths_and_tokenizer_files(tmp_path):
    with pytest.raises(TailorError, match="model directory not found") as e:
        load_model("deepseek-ai/DeepSeek-V3")
    assert "offline" in str(e.value) and "local" in str(e.value)
    with pytest.raises(TailorError, match="tokenizer directory not found"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(TailorError, match="no tokenizer files") as e:
        load_tokenizer(tmp_path)
    assert "tailor tokenizer train" in str(e.value) and "model.tokenizer=DIR" in str(e.value)


def test_dir_without_config_is_not_a_model_dir(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert not is_model_dir(tmp_path)
    with pytest.raises(TailorError, match="not a model directory"):
        load_model(tmp_path)


def _config_only(deepseek_dir, tmp_path, **changes):
    config = json.loads((deepseek_dir / "config.json").read_text())
    config.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_pickle_only_weights_are_refused_without_unpickling(deepseek_dir, tmp_path):
    path = _config_only(deepseek_dir, tmp_path)
    # Not a valid pickle: if anything tried to unpickle it, the error would be different.
    (path / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(TailorError, match="only pickle weights") as e:
        load_model(path)
    assert "safetensors" in str(e.value) and "convert" in str(e.value)


def test_no_weights_at_all(deepseek_dir, tmp_path):
    with pytest.raises(TailorError, match="no model weights"):
        load_model(_config_only(deepseek_dir, tmp_path))


def test_unsupported_and_remote_code_architectures(deepseek_dir, tmp_path):
    path = _config_only(deepseek_dir, tmp_path, model_type="deepseek_v99")
    with pytest.raises(TailorError, match="not supported by the installed transformers"):
        load_model(path)
    _config_only(deepseek_dir, tmp_path, model_type="deepseek_v99", auto_map={"AutoConfig": "x.Y"})
    with pytest.raises(TailorError, match="custom code") as e:
        load_model(path)
    assert "trust_remote_code" in str(e.value)
    _config_only(deepseek_dir, tmp_path, model_type="t5")  # an encoder-decoder: no causal-LM class
    with pytest.raises(TailorError, match="no causal-LM"):
        load_model(path)


def test_bf16_on_cpu_without_support_is_refused(monkeypatch, deepseek_dir):
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: False)
    with pytest.raises(TailorError, match="100x slower") as e:
        resolve_dtype("bfloat16", CPU)
    assert "dtype=float32" in str(e.value)
    with pytest.raises(TailorError, match="bfloat16"):
        load_model(deepseek_dir, dtype="bfloat16", device="cpu")
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: True)
    assert resolve_dtype("bf16", CPU) == torch.bfloat16


def test_resolve_dtype_rules():
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("auto", CPU, for_training=True) == torch.float32
    assert resolve_dtype("float32", CPU) == torch.float32
    assert resolve_dtype("float16", CPU) == torch.float16
    with pytest.raises(TailorError, match="master weights"):
        resolve_dtype("float16", CPU, for_training=True)
    with pytest.raises(TailorError, match="unknown dtype 'float8'"):
        resolve_dtype("float8", CPU)


def test_cpuinfo_parsing():
    flags = loading._cpuinfo_flags("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse\n")
    assert flags == {"fpu", "avx2", "avx512f", "avx512_bf16", "sse"}
    assert "amx_bf16" in loading._cpuinfo_flags("flags : fpu amx_bf16 amx_tile\n")
    assert loading._cpuinfo_flags("") == frozenset()
    loading.cpu_flags.cache_clear()
    assert isinstance(loading.cpu_supports_bf16(), bool)


@pytest.mark.auto_device
def test_resolve_device(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device().type == expected
    assert resolve_device("cpu") == CPU
    with pytest.raises(TailorError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(TailorError, match="no CUDA GPU"):
            resolve_device("cuda")
    monkeypatch.setenv("TAILOR_DEVICE", "cpu")  # keeps every command off the GPU; an explicit device still wins
    assert resolve_device() == CPU and resolve_device("auto") == CPU
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    monkeypatch.setenv("TAILOR_DEVICE", "gpu0")
    with pytest.raises(TailorError, match="unknown device") as e:
        resolve_device()
    assert e.value.where == "environment variable TAILOR_DEVICE"
    assert resolve_device("cpu") == CPU


def test_count_parameters_counts_tied_weights_once(qwen2_dir):
    model = load_model(qwen2_dir, device="cpu")
    assert model.config.tie_word_embeddings
    trainable, total = count_parameters(model)
    with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    embedding = model.get_input_embeddings().weight.numel()
    assert total == trainable == with_duplicates - embedding
    model.get_input_embeddings().weight.requires_grad_(False)
    assert count_parameters(model) == (total - embedding, total)
