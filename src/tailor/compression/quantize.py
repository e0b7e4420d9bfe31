"""Quantization backends, chosen by name: `quantize(model_dir, method, out_dir)`.

Methods (`METHODS`):

- int8-dynamic: int8 per-output-channel weights run by PyTorch's dynamic-quantized Linear
  (`torch.ao.nn.quantized.dynamic.Linear`, fbgemm/x86 kernels): activations are quantized on the
  fly, so matrix products run in int8. CPU only.
- int8-weight: int8 per-output-channel weights kept int8 in memory. On CPU the products run in
  `torch._weight_int8pack_mm` (weight-only int8, bfloat16 activations inside the kernel; see
  `tailor.runtime.kernels`, once `tailor.runtime.enable` switched them on); elsewhere the weight is
  dequantized inside the layer.
- int4-weight: int4 weights in groups of `group_size` input channels (one scale per group), two
  weights packed per byte. On CPU the products run in `torch._weight_int4pack_mm_for_cpu` where the
  shape allows (`tailor.runtime.kernels.int4_linear`); elsewhere the weight is dequantized inside the layer.
- bnb-8bit / bnb-4bit: bitsandbytes through transformers' `BitsAndBytesConfig`; CUDA only.

The tailor methods write config.json, tokenizer files, `model.quantized.safetensors` (int8 or packed
uint8 weights plus float scales; every other tensor as it was) and `tailor_quantization.json` (the
method and which weights were and were not quantized, with reasons). The layers that run them and their
loader live in `tailor.runtime.quantized` (`load_quantized`); `tailor.adapters.loading.load_any` calls it
when that file is present, so `tailor chat`/`tailor eval` accept the directory.

`nn.Linear` layers are quantized as the method says. DeepSeek-V3 MoE experts in transformers 5 are
fused 3-D parameters used inside one module's forward: every tailor method stores them int8 (one scale
per expert output row, listed under `quantized_experts`), and at load they become
`tailor.runtime.quantized.Int8Experts`, which keeps them int8 in memory and, for the few tokens of a decoding step, runs
only the routed experts' int8 products. Expert layouts that module does not cover (their own gate,
biases, transposed weights) are dequantized to float at load instead. The router, embeddings and an
lm_head tied to the embeddings stay in float and are listed under `not_quantized` with the reason.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import torch
from torch import nn

from tailor.errors import TailorError
from tailor.runtime.quantized import BNB_METHODS as _BNB, FORMAT_VERSION, MANIFEST, METHODS, WEIGHTS


# ---------------------------------------------------------------------------------------------
# Quantization arithmetic (symmetric, round to nearest)


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weights, float32 scale per output row): w ≈ q * scale[:, None]."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=-1) / 127).clamp(min=1e-12)
    q = torch.round(w / scale.unsqueeze(-1)).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 with two 4-bit weights per byte [out, in/2], float32 scales [out, in/group]) for w [out, in]."""
    out_f, in_f = w.shape
    g = w.detach().float().reshape(out_f, in_f // group_size, group_size)
    scale = (g.abs().amax(dim=-1) / 7).clamp(min=1e-12)
    q = (torch.round(g / scale.unsqueeze(-1)).clamp(-8, 7) + 8).to(torch.uint8).reshape(out_f, in_f)
    return q[:, 0::2] | (q[:, 1::2] << 4), scale


# ---------------------------------------------------------------------------------------------
# Quantize and save


def check_method(method: str) -> str:
    """The method name, or a TailorError naming the nearest valid one."""
    if method not in METHODS:
        near = difflib.get_close_matches(str(method), METHODS, n=1)
        raise TailorError(f"unknown quantization method '{method}'." + (f" Did you mean '{near[0]}'?" if near else ""),
                          where="--method", fix=f"use one of: {', '.join(METHODS)}")
    if method in _BNB and not torch.cuda.is_available():
        raise TailorError(f"{method} (bitsandbytes) runs on CUDA GPUs only, and no CUDA GPU is available here",
                          where="--method",
                          fix="on a CPU use int8-weight, int8-dynamic or int4-weight; or run on a machine with a CUDA GPU")
    return method


def _tied_lm_head(model) -> bool:
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    return out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight


def plan(model, method: str, group_size: int = 32) -> tuple[list[str], dict[str, str]]:
    """(names of nn.Linear modules to quantize, {weight name: reason} for float weights left as they are)."""
    tied_head = _tied_lm_head(model)
    head = model.get_output_embeddings()
    chosen, kept, covered = [], {}, set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            kept[f"{name}.weight"] = "embedding (a lookup table, no matrix product to speed up)"
            covered.add(f"{name}.weight")
        elif isinstance(module, nn.Linear):
            covered.add(f"{name}.weight")
            if module is head and tied_head:
                kept[f"{name}.weight"] = "lm_head tied to the input embeddings (quantizing it would untie them)"
            elif method == "int4-weight" and module.in_features % group_size:
                kept[f"{name}.weight"] = f"in_features={module.in_features} is not a multiple of group_size={group_size}"
            else:
                chosen.append(name)
    for name, p in model.named_parameters():
        if p.dim() == 2 and name not in covered:
            kept[name] = "not an nn.Linear weight (e.g. an MoE router), kept in float"
    return chosen, kept


def fused_experts(model) -> list[str]:
    """Names of the fused 3-D MoE expert weights ([experts, out, in]) that are stored int8 on disk."""
    return [name for name, p in model.named_parameters() if p.dim() == 3]


def quantize(model_dir: str | Path, method: str, out_dir: str | Path, group_size: int = 32,
             trust_remote_code: bool = False) -> dict:
    """Quantize the model in `model_dir` with `method` and save it to `out_dir`; return the manifest."""
    check_method(method)
    if method == "int4-weight" and (group_size < 2 or group_size % 2):
        raise TailorError(f"group_size={group_size} must be an even number >= 2", where="--group-size",
                          fix="use 32, 64 or 128")
    out = Path(out_dir)
    if out.resolve() == Path(model_dir).resolve():
        raise TailorError("the output directory is the model directory", where="--out", fix="pass a new directory")
    if method in _BNB:
        return _quantize_bnb(model_dir, method, out, trust_remote_code)
    from safetensors.torch import save_file

    from tailor.models.loading import load_model, load_tokenizer

    model = load_model(model_dir, dtype="float32", device="cpu", trust_remote_code=trust_remote_code)
    chosen, kept = plan(model, method, group_size)
    if not chosen:
        raise TailorError(f"no nn.Linear layer in {model_dir} can be quantized with {method}", where=str(model_dir))
    tensors, seen, tied = {}, {}, {}
    fp32_bytes = q_bytes = 0
    modules = dict(model.named_modules())
    for name in chosen:
        w = modules[name].weight
        q, s = quantize_int4(w, group_size) if method == "int4-weight" else quantize_int8(w)
        tensors[f"{name}.qweight"], tensors[f"{name}.scale"] = q.contiguous(), s.contiguous()
        fp32_bytes += w.numel() * 4
        q_bytes += q.numel() * q.element_size() + s.numel() * 4
    experts = fused_experts(model)
    expert_fp32 = expert_q = 0
    params = dict(model.named_parameters())
    for name in experts:  # int8, one scale per expert output row; dequantized when the model loads
        w = params[name].detach()
        q, s = quantize_int8(w.reshape(-1, w.shape[-1]))
        tensors[f"{name}.qweight"], tensors[f"{name}.scale"] = q.reshape(w.shape).contiguous(), s.reshape(w.shape[:-1]).contiguous()
        expert_fp32 += w.numel() * 4
        expert_q += q.numel() + s.numel() * 4
    skip = {f"{n}.weight" for n in chosen} | set(experts)
    for key, t in model.state_dict().items():
        if key in skip:
            continue
        ptr = t.data_ptr()
        if ptr in seen:  # safetensors stores a shared tensor once; record the alias
            tied[key] = seen[ptr]
            continue
        seen[ptr] = key
        tensors[key] = t.detach().contiguous()
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    load_tokenizer(model_dir, trust_remote_code=trust_remote_code).save_pretrained(out)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt", "tailor_quantization": method})
    manifest = {"format_version": FORMAT_VERSION, "method": method, "source": str(Path(model_dir).resolve()),
                "group_size": group_size if method == "int4-weight" else None,
                "scheme": "symmetric, round to nearest; " + ("one scale per group of input channels" if method == "int4-weight"
                                                              else "one scale per output channel"),
                "quantized": chosen, "not_quantized": kept, "tied": tied,
                "quantized_experts": experts,
                "expert_weight_bytes": {"float32": expert_fp32, "quantized": expert_q,
                                        "ratio": expert_q / expert_fp32 if expert_fp32 else None,
                                        "note": "int8 on disk and at run time (Int8Experts) where the "
                                                "layout allows, else dequantized to float when the model loads"},
                "linear_weight_bytes": {"float32": fp32_bytes, "quantized": q_bytes,
                                        "ratio": q_bytes / fp32_bytes if fp32_bytes else None}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _quantize_bnb(model_dir, method: str, out: Path, trust_remote_code: bool) -> dict:
    # transformers serializes bitsandbytes weights itself, with a quantization_config in config.json,
    # so such a directory loads through the plain from_pretrained path of load_model.
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TailorError(f"{method} needs the bitsandbytes package", where="--method",
                          fix="pip install 'tailor[compress]' (or pip install bitsandbytes)") from None
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    from tailor.models.loading import load_tokenizer

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=trust_remote_code)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if method == "bnb-8bit":
        # LLM.int8's matmul takes 2-D/3-D inputs only; DeepSeek's multi-head latent attention feeds kv_b_proj a 4-D
        # tensor (seen on an H100: "Only two or three dimensional matrices are supported"), so it stays unquantized.
        skip = ["lm_head"] + (["kv_b_proj"] if "deepseek" in str(config.model_type) else [])
        bnb = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    else:
        skip = ["lm_head"]
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    # Everything bitsandbytes does not quantize (embeddings, norms, fused MoE experts, skipped layers) is stored in the
    # compute dtype: float32 experts next to bf16 activations fail in the experts' batched matmul (seen on an H100).
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, quantization_config=bnb, device_map={"": 0},
                                                 dtype=compute, use_safetensors=True, local_files_only=True,
                                                 trust_remote_code=trust_remote_code)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(model_dir, trust_remote_code=trust_remote_code).save_pretrained(out)
    quantized = sorted(n for n, m in model.named_modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt"))
    kept = {n: str(p.dtype).replace("torch.", "") for n, p in model.named_parameters()
            if p.is_floating_point() and p.ndim >= 2}
    manifest = {"format_version": FORMAT_VERSION, "method": method, "source": str(Path(model_dir).resolve()),
                "loader": "transformers (quantization_config in config.json)", "quantized": quantized,
                "skipped_modules": skip,
                "not_quantized": {n: f"kept in {d} (bitsandbytes quantizes nn.Linear layers only; fused MoE experts "
                                     f"and embeddings stay in the compute dtype)" for n, d in kept.items()}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest
