"""DeepSeek-V3 -> llama.cpp `deepseek2` GGUF: layout read back with gguf-py, refusals, llama.cpp parity."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from tailor.cli import main
from tailor.errors import TailorError
from tailor.export import run
from tailor.export.gguf_deepseek import _pairs, check_deepseek, deepseek_tensors

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def _field(reader, key):
    f = reader.fields[key]
    if len(f.types) > 1 or f.types[0].name == "ARRAY":
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


@pytest.fixture(scope="session")
def deepseek_variant_dir(tmp_path_factory, tokenizer):
    """The other branches of the mapping: plain q projection, rotate-half rope, 2 expert groups,
    unnormalised and scaled routing weights, tied embeddings, a non-zero selection bias."""
    from tailor.models.presets import init_model

    out = tmp_path_factory.mktemp("deepseek-variant")
    model = init_model("deepseek-v3-micro", tokenizer, seed=1, q_lora_rank=None, kv_lora_rank=32,
                       rope_interleave=False, n_group=2, topk_group=1, norm_topk_prob=False,
                       routed_scaling_factor=2.5, tie_word_embeddings=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers[model.config.first_k_dense_replace:]:
            layer.mlp.gate.e_score_correction_bias.copy_(torch.randn(4, generator=g) * 0.3)
            layer.mlp.gate.weight.mul_(20)  # spread router scores so the bias and groups decide something
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_deepseek_gguf_layout_and_metadata(deepseek_dir, tmp_path, outtype, reference):
    import gguf

    path = run(deepseek_dir, "gguf", tmp_path / "gguf", outtype=outtype)
    _, _, _, model = reference(deepseek_dir)
    sd = model.state_dict()
    r = gguf.GGUFReader(str(path))
    meta = {
        "general.architecture": "deepseek2", "deepseek2.block_count": 2, "deepseek2.attention.head_count": 4,
        "deepseek2.attention.head_count_kv": 1, "deepseek2.attention.key_length": 16 + 8,
        "deepseek2.attention.value_length": 16, "deepseek2.attention.key_length_mla": 8 + 8,
        "deepseek2.attention.value_length_mla": 8, "deepseek2.attention.q_lora_rank": 32,
        "deepseek2.attention.kv_lora_rank": 16, "deepseek2.rope.dimension_count": 8,
        "deepseek2.leading_dense_block_count": 1, "deepseek2.expert_count": 4,
        "deepseek2.expert_used_count": 2, "deepseek2.expert_shared_count": 1,
        "deepseek2.expert_feed_forward_length": 32, "deepseek2.feed_forward_length": 128,
        "deepseek2.expert_gating_func": 2,  # sigmoid; without it llama.cpp assumes softmax
        "deepseek2.expert_weights_norm": True, "deepseek2.expert_weights_scale": 1.0,
        "deepseek2.expert_group_count": 1, "general.file_type": 1 if outtype == "f16" else 7,
        "tokenizer.ggml.pre": "deepseek-v3",
    }
    assert {k: _field(r, k) for k in meta} == meta
    tensors = {t.name: t for t in r.tensors}
    attn = ["attn_norm", "attn_q_a", "attn_q_a_norm", "attn_q_b", "attn_kv_a_mqa", "attn_kv_a_norm",
            "attn_k_b", "attn_v_b", "attn_output", "ffn_norm"]
    moe = ["ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_shexp", "ffn_up_shexp",
           "ffn_down_shexp"]
    expected = {"token_embd.weight", "output_norm.weight", "output.weight", "blk.1.exp_probs_b.bias"}
    expected |= {f"blk.{i}.{n}.weight" for i in range(2) for n in attn}
    expected |= {f"blk.0.{n}.weight" for n in ("ffn_gate", "ffn_up", "ffn_down")} | {f"blk.1.{n}.weight" for n in moe}
    assert set(tensors) == expected

    f32, f16, q8 = (gguf.GGMLQuantizationType[n] for n in ("F32", "F16", "Q8_0"))
    matrix = f16 if outtype == "f16" else q8
    assert tensors["blk.1.ffn_gate_inp.weight"].tensor_type == f32  # the router stays exact
    assert tensors["blk.1.exp_probs_b.bias"].tensor_type == f32
    assert tensors["blk.0.attn_kv_a_norm.weight"].tensor_type == f32
    assert tensors["blk.1.ffn_up_exps.weight"].tensor_type == matrix
    # MLA's batched k_b/v_b stay f32: llama.cpp's AMX buffer takes no f32 weight (its graph would abort there)
    assert tensors["blk.0.attn_k_b.weight"].tensor_type == f32 and tensors["blk.0.attn_v_b.weight"].tensor_type == f32

    # kv_b_proj [head * (nope + v), kv_rank] -> k_b [head, kv_rank, nope] (transposed) and v_b [head, v, kv_rank]
    kv_b = sd["model.layers.0.self_attn.kv_b_proj.weight"].numpy().reshape(4, 16, 16)
    gate_up = sd["model.layers.1.mlp.experts.gate_up_proj"].numpy()
    checks = {
        "blk.0.attn_k_b.weight": kv_b[:, :8, :].transpose(0, 2, 1),
        "blk.0.attn_v_b.weight": kv_b[:, 8:, :],
        "blk.1.ffn_gate_exps.weight": gate_up[:, :32, :],  # gate rows first, as transformers' .chunk(2)
        "blk.1.ffn_up_exps.weight": gate_up[:, 32:, :],
        "blk.1.ffn_down_exps.weight": sd["model.layers.1.mlp.experts.down_proj"].numpy(),
        "blk.1.ffn_gate_inp.weight": sd["model.layers.1.mlp.gate.weight"].numpy(),
        # rope_interleave: the rotary rows are already in llama.cpp's pair order
        "blk.1.attn_q_b.weight": sd["model.layers.1.self_attn.q_b_proj.weight"].numpy(),
        "output.weight": sd["lm_head.weight"].numpy(),
    }
    for name, original in checks.items():
        t = tensors[name]
        assert list(t.shape[::-1]) == list(original.shape), name  # GGUF lists dims fastest-first
        back = gguf.quants.dequantize(t.data, t.tensor_type).reshape(original.shape)
        tol = np.abs(original).max() / 127 if t.tensor_type == q8 else 1e-3 if t.tensor_type == f16 else 0
        assert np.abs(back - original).max() <= tol, name
    manifest = json.loads((path.parent / "export.json").read_text())
    assert manifest["architecture"] == "deepseek2" and sum(manifest["tensor_types"].values()) == len(expected)
    assert (path.parent / "Modelfile").read_text(encoding="utf-8").startswith(f"FROM ./{path.name}\n")


def test_deepseek_variant_layout(deepseek_variant_dir, tmp_path, reference):
    import gguf

    path = run(deepseek_variant_dir, "gguf", tmp_path / "gguf", outtype="q8_0")
    _, _, _, model = reference(deepseek_variant_dir)
    sd = model.state_dict()
    r = gguf.GGUFReader(str(path))
    assert _field(r, "deepseek2.attention.q_lora_rank") == 0  # 0 selects the plain attn_q projection
    assert _field(r, "deepseek2.expert_group_count") == 2 and _field(r, "deepseek2.expert_group_used_count") == 1
    assert _field(r, "deepseek2.expert_weights_norm") is False
    assert _field(r, "deepseek2.expert_weights_scale") == 2.5
    tensors = {t.name: t for t in r.tensors}
    assert "output.weight" not in tensors and "blk.0.attn_q_a.weight" not in tensors  # tied; no q latent
    assert tensors["blk.1.attn_v_b.weight"].tensor_type == gguf.GGMLQuantizationType.F32  # not q8_0 (AMX buffer)
    back = gguf.quants.dequantize(tensors["blk.1.exp_probs_b.bias"].data, gguf.GGMLQuantizationType.F32)
    assert np.array_equal(back, sd["model.layers.1.mlp.gate.e_score_correction_bias"].numpy())
    # rotate-half rope: the last 8 rows of each head's 16 q rows (and of the kv_a output) become pairs
    named = dict(deepseek_tensors(sd, model.config))
    q = sd["model.layers.0.self_attn.q_proj.weight"].numpy().reshape(4, 16, 64)
    got = named["blk.0.attn_q.weight"].reshape(4, 16, 64)
    assert np.array_equal(got[:, :8], q[:, :8]) and not np.array_equal(got[:, 8:], q[:, 8:])
    assert all(np.array_equal(got[h, 8:], _pairs(q[h, 8:])) for h in range(4))
    kv_a = sd["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"].numpy()
    assert np.array_equal(named["blk.0.attn_kv_a_mqa.weight"][32:], _pairs(kv_a[32:]))


def test_pair_permutation_turns_rotate_half_rope_into_pairwise_rope():
    rng = np.random.default_rng(0)
    d, pos, theta = 8, 5.0, 10000.0
    x = rng.standard_normal(d)
    angles = pos * theta ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(angles), np.sin(angles)
    half = np.concatenate([x[: d // 2] * cos - x[d // 2:] * sin, x[d // 2:] * cos + x[: d // 2] * sin])  # HF
    p = _pairs(x)
    pairwise = np.empty(d)
    pairwise[0::2], pairwise[1::2] = p[0::2] * cos - p[1::2] * sin, p[1::2] * cos + p[0::2] * sin  # llama.cpp
    assert np.allclose(pairwise, _pairs(half))


@pytest.mark.parametrize("change, match", [
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}}, "rope_type 'yarn'"),
    ({"scoring_func": "softmax"}, "scoring_func 'softmax'"),
    ({"topk_method": "greedy"}, "topk_method 'greedy'"),
    ({"hidden_act": "gelu"}, "uses SiLU"),
    ({"attention_bias": True}, "no attention biases"),
    ({"n_shared_experts": 0}, "always adds a shared expert"),
    ({"n_group": 4, "topk_group": 1}, "groups of at least 2"),
    ({"routed_scaling_factor": 0.0}, "must be positive"),
    ({"num_hidden_layers": 27}, "as DeepSeek-V2-Lite"),
])
def test_configs_llama_cpp_would_compute_differently_are_refused(deepseek_dir, change, match):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(deepseek_dir)
    check_deepseek(config)  # the fixture itself is fine
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(TailorError, match=match) as e:
        check_deepseek(config)
    assert e.value.where.startswith("config.json") and e.value.fix


def test_cli_refuses_with_exit_2_and_writes_nothing(deepseek_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(deepseek_dir, model_dir)
    raw = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**raw, "scoring_func": "softmax"}))
    assert main(["export", str(model_dir), "--format", "gguf", "--out", str(tmp_path / "out")]) == 2
    assert "scoring_func 'softmax'" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_unknown_tensor_is_an_error_not_dropped(deepseek_dir, reference):
    _, _, _, model = reference(deepseek_dir)
    sd = dict(model.state_dict())
    sd["model.layers.2.eh_proj.weight"] = torch.zeros(64, 128)  # a multi-token-prediction layer
    with pytest.raises(TailorError, match="no GGUF name for tensor 'model.layers.2.eh_proj.weight'"):
        list(deepseek_tensors(sd, model.config))


def test_other_architectures_are_refused(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM, MistralConfig

    cfg = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    with pytest.raises(TailorError, match="supports llama, qwen2, deepseek_v3 models, not 'mistral'") as e:
        run(tmp_path / "m", "gguf", tmp_path / "out")
    assert "convert_hf_to_gguf.py" in e.value.fix and not (tmp_path / "out").exists()


def _llama_greedy(llm, prompts, eos, new_tokens=10):
    out = []
    for p in prompts:
        new = []
        for t in llm.generate(p, top_k=1, top_p=1.0, temp=0.0, reset=True):
            new.append(int(t))
            if t == eos or len(new) == new_tokens:
                break
        out.append(new)
    return out


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
@pytest.mark.parametrize("fixture", ["deepseek_dir", "deepseek_variant_dir"])
def test_llama_cpp_matches_pytorch(fixture, outtype, request, tmp_path, reference):
    from llama_cpp import Llama

    model_dir = request.getfixturevalue(fixture)
    prompts, expected, tok, model = reference(model_dir)
    path = run(model_dir, "gguf", tmp_path / "gguf", outtype=outtype)
    llm = Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False, logits_all=True)
    try:
        for text in ["The return window for laptops is", "12345 tents and 笔记本电脑"]:
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok(text).input_ids
        # next-token logits at every position of the longest prompt, not only the argmax
        prompt = max(prompts, key=len)
        llm.reset()
        llm.eval(prompt)
        got = np.array(llm.scores[: len(prompt)])
        with torch.no_grad():
            want = model(torch.tensor([prompt])).logits[0].numpy()
        scale = np.abs(want).max()
        err = np.abs(got - want).max(-1) / scale  # per position, relative to the largest logit
        assert err.max() < (2e-3 if outtype == "f16" else 5e-2), err
        if fixture == "deepseek_dir" and outtype == "q8_0":
            # This random router scores experts within 2e-4 of each other at some positions (sigmoid
            # scores all near 0.5): q8_0's rounding of the hidden state flips the 2nd expert there
            # (error 3% at that position against under 1% elsewhere), and its random logits are as
            # close, so greedy tokens can part. Here: most positions at q8_0's plain rounding error.
            # Exact greedy tokens in q8_0 are checked on the variant (a router with distinct
            # scores) and on the trained quickstart model (README).
            assert np.median(err) < 1.5e-2, err
        else:
            assert _llama_greedy(llm, prompts, tok.eos_token_id) == expected
    finally:
        llm.close()
