"""GGUF export for llama.cpp and Ollama (Llama, Qwen2 and DeepSeek-V3 architectures, f16 or q8_0).

Written with gguf-py, llama.cpp's own writer, following its `convert_hf_to_gguf.py` conventions:
tensor names from `gguf.TensorNameMap`, Llama's q/k rows permuted back to llama.cpp's rotary layout
(Qwen2 uses the NeoX layout transformers already has), 1-D tensors (norms, biases) kept in float32,
and the byte-level BPE tokenizer stored as a "gpt2" vocabulary with merges and token types.
DeepSeek-V3 (llama.cpp's `deepseek2`: latent attention, routed + shared experts) is mapped in
gguf_deepseek.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tailor.errors import TailorError
from tailor.export.common import load_for_export, special_ids, write_manifest

OUTTYPES = ("f16", "q8_0")
# HF model_type -> (gguf architecture name, whether q/k need llama.cpp's rotary permutation)
ARCHITECTURES = {"llama": ("llama", True), "qwen2": ("qwen2", False)}  # deepseek_v3: gguf_deepseek.py
# llama.cpp's pre-tokenizer closest to tailor's: digits split in groups of 1-3 before the byte-level
# regex, CJK runs apart from Latin text (tailor isolates each CJK character, but no BPE merge spans
# two of them, so grouping runs gives the same tokens).
PRE_TOKENIZER = "deepseek-v3"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved rotary layout (as convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _check_supported(config) -> tuple[str, bool]:
    model_type = config.model_type
    if model_type not in ARCHITECTURES:
        raise TailorError(
            f"GGUF export supports {', '.join([*ARCHITECTURES, 'deepseek_v3'])} models, not '{model_type}'",
            where="--format gguf",
            fix="export --format safetensors and convert that directory with llama.cpp's convert_hf_to_gguf.py, "
                "or use --format onnx / torchscript",
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise TailorError(
            f"GGUF export handles plain rotary embeddings only; this model uses rope_type '{rope['rope_type']}'",
            where="config.json rope_parameters",
            fix="export --format safetensors and convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    return ARCHITECTURES[model_type]


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _add_hparams(writer, config) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    import gguf

    vocab = tokenizer.get_vocab()
    if len(vocab) > vocab_size:
        raise TailorError(f"the tokenizer has {len(vocab)} tokens but the model only {vocab_size} embeddings",
                          fix="resize the model's embeddings to the tokenizer before exporting")
    by_id = {i: t for t, i in vocab.items()}
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        tok = by_id.get(i)
        if tok is None:  # embedding rows past the tokenizer (padded vocabularies)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif tok in added:
            tokens.append(tok)
            types.append(gguf.TokenType.CONTROL if added[tok].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(tok)
            types.append(gguf.TokenType.NORMAL)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise TailorError(f"GGUF export needs a byte-level BPE tokenizer, this one is {model.get('type')}",
                          fix="use a tokenizer from `tailor tokenizer train`, or llama.cpp's convert_hf_to_gguf.py")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    ids = special_ids(tokenizer)
    if ids["bos_token_id"] is not None:
        writer.add_bos_token_id(ids["bos_token_id"])
    if ids["eos_token_id"] is not None:
        writer.add_eos_token_id(ids["eos_token_id"])
    if ids["pad_token_id"] is not None:
        writer.add_pad_token_id(ids["pad_token_id"])
    # tailor's chat template writes the BOS itself and plain encoding adds none; llama.cpp must not add one.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _tensor(name: str, data: np.ndarray, outtype: str):
    """(array to write, its GGML type): 1-D, norms and the MoE router in float32 (as llama.cpp's
    converter), and MLA's k_b/v_b (see gguf_deepseek.F32_TENSORS: AMX); matrices in f16, or q8_0 when rows
    split into 32-blocks."""
    import gguf

    from tailor.export.gguf_deepseek import F32_TENSORS

    if data.ndim == 1 or name.endswith("_norm.weight") or name.endswith(F32_TENSORS):
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if outtype == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        q = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data.astype(np.float32), q), q
    return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def _dense_tensors(model, arch: str, permute: bool):
    """(GGUF name, float32 array) for a Llama or Qwen2 model, names from gguf's TensorNameMap."""
    import gguf

    config = model.config
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    names = gguf.get_tensor_name_map(_arch_enum(arch), config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise TailorError(f"no GGUF name for tensor '{hf_name}' of this {config.model_type} model",
                              fix="export --format safetensors and use llama.cpp's convert_hf_to_gguf.py")
        data = tensor.detach().float().numpy()
        if permute and hf_name.endswith("self_attn.q_proj.weight"):
            data = _permute(data, n_head)
        elif permute and hf_name.endswith("self_attn.k_proj.weight"):
            data = _permute(data, n_kv)
        yield new, data


def export_gguf(model_path: str | Path, out_dir: str | Path, outtype: str = "f16") -> Path:
    """Write OUT/model-{outtype}.gguf and an Ollama Modelfile next to it; returns the .gguf path.

    `outtype` "f16" stores matrices in float16, "q8_0" in llama.cpp's 8-bit blocks (a float16 scale
    per 32 weights); matrices whose rows do not split into 32-blocks stay f16 (counted in export.json).
    Llama and Qwen2 models become llama.cpp's `llama` / `qwen2`, DeepSeek-V3 its `deepseek2`.
    """
    import gguf

    from tailor.export import gguf_deepseek
    from tailor.export.ollama import write_modelfile

    if outtype not in OUTTYPES:
        raise TailorError(f"unknown GGUF type '{outtype}'", where="--gguf-type", fix=f"use one of {', '.join(OUTTYPES)}")
    model, tokenizer = load_for_export(model_path)
    config = model.config
    if config.model_type == "deepseek_v3":
        gguf_deepseek.check_deepseek(config)
        arch, tensors = gguf_deepseek.ARCH, gguf_deepseek.deepseek_tensors(model.state_dict(), config)
    else:
        arch, permute = _check_supported(config)
        tensors = _dense_tensors(model, arch, permute)
    # Mapped in full before the file is opened, so a tensor without a GGUF name leaves no partial file
    # (GGUFWriter holds every tensor in memory until it writes them anyway).
    tensors = list(tensors)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"model-{outtype}.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(Path(model_path).resolve().name)
    if arch == gguf_deepseek.ARCH:
        gguf_deepseek.add_deepseek_hparams(writer, config)
    else:
        _add_hparams(writer, config)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    _add_tokenizer(writer, tokenizer, config.vocab_size)
    counts: dict[str, int] = {}
    for name, data in tensors:
        data, qtype = _tensor(name, data, outtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    modelfile = write_modelfile(out, path.name, tokenizer)
    write_manifest(out, format="gguf", source=str(Path(model_path).resolve()), file=path.name, outtype=outtype,
                   architecture=arch, tensor_types=counts, modelfile=modelfile.name, pre_tokenizer=PRE_TOKENIZER)
    return path


def _arch_enum(arch: str):
    import gguf

    return next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
