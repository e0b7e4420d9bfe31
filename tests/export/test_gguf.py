"""GGUF export: read back with gguf-py (metadata, tensors, q8_0 values), Modelfile, llama.cpp parity."""

import importlib.util
import json

import numpy as np
import pytest

from tailor.export import run
from tailor.export.gguf import _permute
from tailor.models.tokenizer import DEEPSEEK_CHAT_TEMPLATE


def _field(reader, key):
    f = reader.fields[key]
    if len(f.types) > 1 or f.types[0].name == "ARRAY":
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_llama_gguf_reads_back(llama_dir, tmp_path, outtype, reference):
    import gguf

    path = run(llama_dir, "gguf", tmp_path / "gguf", outtype=outtype)
    assert path.name == f"model-{outtype}.gguf"
    _, _, tok, model = reference(llama_dir)
    cfg = model.config
    r = gguf.GGUFReader(str(path))
    assert _field(r, "general.architecture") == "llama"
    assert _field(r, "llama.block_count") == cfg.num_hidden_layers
    assert _field(r, "llama.attention.head_count_kv") == cfg.num_key_value_heads
    assert _field(r, "llama.embedding_length") == cfg.hidden_size
    assert _field(r, "general.file_type") == (1 if outtype == "f16" else 7)
    assert _field(r, "tokenizer.ggml.model") == "gpt2"
    tokens = _field(r, "tokenizer.ggml.tokens")
    assert tokens == [tok.convert_ids_to_tokens(i) for i in range(cfg.vocab_size)]
    types = _field(r, "tokenizer.ggml.token_type")
    assert types[tok.eos_token_id] == gguf.TokenType.CONTROL and types[300] == gguf.TokenType.NORMAL
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    assert len(_field(r, "tokenizer.ggml.merges")) == len(merges) > 0
    assert _field(r, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert _field(r, "tokenizer.ggml.padding_token_id") == tok.pad_token_id
    assert _field(r, "tokenizer.ggml.add_bos_token") is False
    assert _field(r, "tokenizer.chat_template") == DEEPSEEK_CHAT_TEMPLATE

    tensors = {t.name: t for t in r.tensors}
    n = cfg.num_hidden_layers
    per_layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    assert set(tensors) == {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{p}.weight" for i in range(n) for p in per_layer}
    matrix_type = gguf.GGMLQuantizationType.F16 if outtype == "f16" else gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.ffn_down.weight"].tensor_type == matrix_type
    assert tensors["blk.1.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    sd = model.state_dict()
    checks = {
        "token_embd.weight": sd["model.embed_tokens.weight"].numpy(),
        "blk.1.ffn_down.weight": sd["model.layers.1.mlp.down_proj.weight"].numpy(),
        # q/k rows are stored in llama.cpp's rotary order
        "blk.0.attn_q.weight": _permute(sd["model.layers.0.self_attn.q_proj.weight"].numpy(), cfg.num_attention_heads),
        "blk.0.attn_k.weight": _permute(sd["model.layers.0.self_attn.k_proj.weight"].numpy(), cfg.num_key_value_heads),
        "blk.0.attn_norm.weight": sd["model.layers.0.input_layernorm.weight"].numpy(),
    }
    for name, original in checks.items():
        t = tensors[name]
        assert list(t.shape[::-1]) == list(original.shape)  # GGUF lists dims fastest-first
        back = gguf.quants.dequantize(t.data, t.tensor_type).reshape(original.shape)
        # q8_0: one f16 scale per 32 weights, so the error is at most half a step of absmax/127
        tol = np.abs(original).max() / 127 if t.tensor_type == gguf.GGMLQuantizationType.Q8_0 else 1e-3
        assert np.abs(back - original).max() <= tol, name
    assert not np.allclose(checks["blk.0.attn_q.weight"], sd["model.layers.0.self_attn.q_proj.weight"].numpy())

    modelfile = (path.parent / "Modelfile").read_text(encoding="utf-8")
    assert modelfile.startswith(f"FROM ./{path.name}\n")
    assert 'PARAMETER stop "<｜end▁of▁sentence｜>"' in modelfile
    assert "<｜User｜>{{ .Content }}" in modelfile and '(ne .Role "assistant") }}<｜Assistant｜>' in modelfile


def test_qwen2_gguf_tied_embeddings_and_biases(qwen2_dir, tmp_path):
    import gguf

    path = run(qwen2_dir, "gguf", tmp_path / "gguf", outtype="q8_0")
    r = gguf.GGUFReader(str(path))
    assert _field(r, "general.architecture") == "qwen2"
    tensors = {t.name: t for t in r.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    manifest = json.loads((path.parent / "export.json").read_text())
    assert manifest["tensor_types"]["Q8_0"] == 1 + 2 * 7 and manifest["architecture"] == "qwen2"


def test_modelfile_without_tailor_template_has_no_guessed_template(llama_dir, tmp_path, tokenizer):
    from tailor.export.ollama import modelfile_text

    tok = tokenizer.__class__.from_pretrained(llama_dir)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    text = modelfile_text("m.gguf", tok)
    assert "TEMPLATE \"\"\"" not in text and "TEMPLATE omitted" in text and "PARAMETER stop" in text


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
@pytest.mark.parametrize("arch", ["llama_dir", "qwen2_dir"])
def test_llama_cpp_greedy_matches_pytorch(arch, outtype, request, tmp_path, reference):
    from llama_cpp import Llama

    model_dir = request.getfixturevalue(arch)
    prompts, expected, tok, _ = reference(model_dir)
    path = run(model_dir, "gguf", tmp_path / "gguf", outtype=outtype)
    llm = Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False, logits_all=False)
    for text_prompt in ["The return window for laptops is", "12345 tents and 笔记本电脑"]:
        assert llm.tokenize(text_prompt.encode(), add_bos=False, special=True) == tok(text_prompt).input_ids
    got = []
    for p in prompts:
        new = []
        for t in llm.generate(p, top_k=1, top_p=1.0, temp=0.0, reset=True):
            new.append(int(t))
            if t == tok.eos_token_id or len(new) == 10:
                break
        got.append(new)
    assert got == expected
