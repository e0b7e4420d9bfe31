"""Quantization: arithmetic, save/load round trips through load_causal_lm, the CLI, measurements and bad input."""

import json

import pytest
import torch

from tailor.adapters.loading import load_causal_lm
from tailor.compression.quantize import MANIFEST, WEIGHTS, check_method, quantize, quantize_int4, quantize_int8
from tailor.errors import TailorError
from tailor.evaluation.measure import before_after_table, count_weights, measure
from tailor.models.loading import count_parameters, load_model
from tailor.runtime.quantized import Int8Experts, dequantize_int4

IDS = torch.tensor([[1, 5, 7, 9, 11, 20, 33, 40]])


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def test_int8_and_int4_round_trip_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(24, 64)
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.shape == (24,)
    assert ((q.float() * s[:, None] - w).abs() <= s[:, None] / 2 + 1e-6).all()
    packed, scale = quantize_int4(w, 16)
    assert packed.dtype == torch.uint8 and packed.shape == (24, 32) and scale.shape == (24, 4)
    err = (dequantize_int4(packed, scale) - w).abs().reshape(24, 4, 16)
    assert (err <= scale[..., None] / 2 + 1e-6).all()


@pytest.mark.parametrize("method,tol", [("int8-dynamic", 0.05), ("int8-weight", 0.02), ("int4-weight", 0.3)])
def test_deepseek_quantized_saves_and_loads_again(deepseek_dir, tmp_path, method, tol):
    ref = _logits(load_model(deepseek_dir))
    out = tmp_path / method
    manifest = quantize(deepseek_dir, method, out, group_size=16)
    assert (out / MANIFEST).is_file() and (out / WEIGHTS).is_file() and (out / "config.json").is_file()
    # the fused 3-D MoE experts are not nn.Linear: stored int8 (a quarter of their float bytes, plus scales),
    # kept int8 at run time (Int8Experts), within half a quantization step of the original
    assert any(k.endswith("experts.gate_up_proj") for k in manifest["quantized_experts"])
    assert not any("experts" in k for k in manifest["not_quantized"])
    assert manifest["expert_weight_bytes"]["ratio"] <= 0.30
    original = dict(load_model(deepseek_dir).named_parameters())
    loaded = load_causal_lm(out)
    for name in manifest["quantized_experts"]:
        parent, _, attr = name.rpartition(".")
        experts = loaded.get_submodule(parent)
        assert isinstance(experts, Int8Experts) and experts.gate_up_qweight.dtype == torch.int8
        part = attr.removesuffix("_proj")  # gate_up_proj -> gate_up_qweight, gate_up_scale
        q, s = getattr(experts, f"{part}_qweight"), getattr(experts, f"{part}_scale")
        w, got_w = original[name].detach(), q.float() * s.unsqueeze(-1)
        step = w.abs().amax(dim=-1, keepdim=True) / 127
        assert ((got_w - w).abs() <= step / 2 + 1e-6).all()
    assert not any(p.dim() == 3 for p in loaded.parameters())  # no float copy of the experts in memory
    assert "lm_head" in manifest["quantized"]
    if method.startswith("int8"):
        assert manifest["linear_weight_bytes"]["ratio"] <= 0.30
    model = load_causal_lm(out)
    got = _logits(model)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() < tol * ref.abs().max()
    assert torch.equal(got, _logits(load_causal_lm(out)))  # loading is deterministic
    total, _ = count_weights(model)
    assert total == count_parameters(load_model(deepseek_dir))[1]  # a quantized weight counts as the weights it stands for
    with pytest.raises(OSError):  # plain from_pretrained must not load a half-initialised model
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(out)


def test_decoding_defaults_come_from_generation_config(llama_dir, tmp_path):
    # A trained model's config.json often says use_cache=false (training switches the cache off); decoding
    # defaults must come from generation_config.json, as with from_pretrained, or decoding re-reads the sequence.
    src = tmp_path / "trained"
    model = load_model(llama_dir)
    model.config.use_cache = False
    model.save_pretrained(src)
    from tailor.models.loading import load_tokenizer

    load_tokenizer(llama_dir).save_pretrained(src)
    quantize(src, "int8-weight", tmp_path / "q")
    got, want = load_causal_lm(tmp_path / "q").generation_config, load_model(src).generation_config
    assert got.use_cache is not False and got.to_dict() == want.to_dict()


def test_tied_lm_head_is_kept_and_int4_group_size_checked(qwen2_dir, tmp_path):
    manifest = quantize(qwen2_dir, "int4-weight", tmp_path / "q", group_size=32)
    assert "lm_head" not in manifest["quantized"]
    assert "tied" in manifest["not_quantized"]["lm_head.weight"]
    model = load_causal_lm(tmp_path / "q")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.isfinite(_logits(model)).all()
    with pytest.raises(TailorError, match="even number"):
        quantize(qwen2_dir, "int4-weight", tmp_path / "bad", group_size=3)


def test_bad_methods_and_directories(llama_dir, tmp_path):
    with pytest.raises(TailorError, match="Did you mean 'int8-dynamic'"):
        check_method("int8-dynamik")
    if not torch.cuda.is_available():
        for m in ("bnb-8bit", "bnb-4bit"):
            with pytest.raises(TailorError, match="CUDA"):
                quantize(llama_dir, m, tmp_path / m)
            assert not (tmp_path / m).exists()
    with pytest.raises(TailorError, match="output directory is the model directory"):
        quantize(llama_dir, "int8-weight", llama_dir)
    out = tmp_path / "q"
    quantize(llama_dir, "int8-dynamic", out)
    with pytest.raises(TailorError, match="cannot be trained"):
        load_model(out, for_training=True)
    with pytest.raises(TailorError, match="load it with tailor.adapters.loading.load_any"):
        load_model(out)  # models/ loads what transformers loads; tailor's int8 layers are rebuilt by the runtime
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "method": "fp3"}))
    with pytest.raises(TailorError, match="unknown method"):
        load_causal_lm(out)
    (out / MANIFEST).write_text(json.dumps({**manifest, "quantized": manifest["quantized"] + ["model.extra"]}))
    with pytest.raises(TailorError, match="lacks the quantized weights of model.extra"):
        load_causal_lm(out)


def test_measure_and_table(llama_dir, chat_file, tmp_path):
    out = tmp_path / "q"
    quantize(llama_dir, "int8-dynamic", out)
    before = measure(llama_dir, [str(chat_file)], max_examples=3, max_new_tokens=3, decode_tokens=3)
    after = measure(out, [str(chat_file)], max_examples=3, max_new_tokens=3, decode_tokens=3)
    for m in (before, after):
        assert m["eval_task"] == "generation" and m["main_metric_name"] == "token_f1"
        assert m["perplexity"] > 1 and m["decode_tokens_per_s"] > 0 and m["ttft_ms"] > 0
    assert before["parameters"] == count_parameters(load_model(llama_dir))[1] == after["parameters"]
    assert after["size_on_disk_mb"] < before["size_on_disk_mb"]
    assert abs(after["perplexity"] / before["perplexity"] - 1) < 0.05
    rows = before_after_table(before, after, out=tmp_path / "table.json")
    saved = json.loads((tmp_path / "table.json").read_text())
    size = next(r for r in saved["rows"] if r["key"] == "size_on_disk_mb")
    assert size["after/before"] == pytest.approx(after["size_on_disk_mb"] / before["size_on_disk_mb"])
    assert [r["key"] for r in rows] == [r["key"] for r in saved["rows"]]


def test_cli_quantize_then_chat_and_eval(deepseek_dir, text_file, tmp_path, capsys):
    from tailor.cli import main

    out = tmp_path / "q"
    assert main(["quantize", str(deepseek_dir), "--method", "int8-weight", "--out", str(out), "--no-measure"]) == 0
    report = json.loads((out / "compression_report.json").read_text())
    assert report["details"]["method"] == "int8-weight" and report["before"] is None
    assert main(["chat", str(out), "--prompt", "hello", "--max-new-tokens", "3"]) == 0
    assert main(["eval", str(out), "--task", "lm", "--data", str(text_file)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["quantize", str(deepseek_dir), "--method", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown quantization method" in capsys.readouterr().err


def test_isolated_measurement_reports_user_errors(tmp_path):
    from tailor.evaluation.measure import measure_isolated

    with pytest.raises(TailorError, match="model directory not found"):
        measure_isolated(tmp_path / "missing")
