"""The modules of a tailor-quantized checkpoint and their loader: `load_quantized(model_dir)`.

`tailor quantize` (tailor.compression.quantize) writes config.json, tokenizer files, `model.quantized.safetensors`
(int8 or packed uint8 weights plus float scales; every other tensor as it was) and `tailor_quantization.json`
(the method and which weights were and were not quantized, with reasons). `load_quantized` rebuilds the model
from config.json and puts these layers back: `Int8WeightLinear` (int8-weight), `Int4WeightLinear` (int4-weight),
torch's dynamic-quantized Linear (int8-dynamic, CPU only) and `Int8Experts` for fused MoE experts (every
method stores them int8; layouts it does not cover are dequantized to float at load). The weight file is
deliberately not named model.safetensors: plain `from_pretrained` then fails loudly instead of loading a
half-initialised model.

The int8/int4 layers compute with public torch operations (the weight dequantized per product) until
`tailor.runtime.enable` switches them to the private CPU kernels (`tailor.runtime.kernels`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tailor.errors import TailorError
from tailor.models.loading import QUANTIZED_MANIFEST as MANIFEST
from tailor.runtime.experts import PAIR_LOOP_MAX, experts_forward, is_fused_experts
from tailor.runtime.kernels import KernelModule, int4_linear, int8_linear, int8pack_ok, own_int8

WEIGHTS = "model.quantized.safetensors"
FORMAT_VERSION = 1
TAILOR_METHODS = ("int8-dynamic", "int8-weight", "int4-weight")  # rebuilt by load_quantized
BNB_METHODS = ("bnb-8bit", "bnb-4bit")  # saved and loaded by transformers (quantization_config in config.json)
METHODS = TAILOR_METHODS + BNB_METHODS


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Inverse of `quantize_int4` (up to rounding): a [out, in] weight in `dtype`."""
    out_f = packed.shape[0]
    q = torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(out_f, -1).to(dtype) - 8
    groups = scale.shape[1]
    return (q.reshape(out_f, groups, -1) * scale.to(dtype).unsqueeze(-1)).reshape(out_f, -1)


class Int8WeightLinear(KernelModule):
    """A Linear whose weight is stored int8 with one scale per output channel (`int8_linear`)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", own_int8(qweight))
        self.register_buffer("scale", scale)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def _prepare(self):
        return (self.qweight, self.scale.to(torch.bfloat16)) if int8pack_ok(self.qweight) else False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ready = self._kernel()
        if not ready:
            return int8_linear(x, self.qweight, self.scale, bias=self.bias, kernel=self.kernels)
        if x.dim() == 2:
            y = torch._weight_int8pack_mm(x.to(torch.bfloat16), *ready).to(x.dtype)
        else:
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).to(torch.bfloat16), *ready)
            y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int4WeightLinear(KernelModule):
    """A Linear whose weight is stored as packed int4 with one scale per group of input channels."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = qweight.shape[0], qweight.shape[1] * 2
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int4_linear(self, x, dequantize_int4, kernel=self.kernels)


class Int8Experts(KernelModule):
    """Fused MoE experts with int8 weights (one scale per expert output row). Without kernels (and for shapes the
    kernel refuses) each routed expert's weights are dequantized for its products (`experts_forward`)."""

    def __init__(self, source: nn.Module, gate_up: tuple[torch.Tensor, torch.Tensor],
                 down: tuple[torch.Tensor, torch.Tensor]):
        super().__init__()
        self.num_experts = gate_up[0].shape[0]
        self.act_fn = source.act_fn
        self.register_buffer("gate_up_qweight", own_int8(gate_up[0]))
        self.register_buffer("gate_up_scale", gate_up[1].float().contiguous())
        self.register_buffer("down_qweight", own_int8(down[0]))
        self.register_buffer("down_scale", down[1].float().contiguous())

    def _apply_gate(self, gate_up_out: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up_out.chunk(2, dim=-1)
        return self.act_fn(gate) * up

    def _prepare(self):
        # Per expert: (int8 weight view, bfloat16 scale view) for gate_up and for down.
        if not (int8pack_ok(self.gate_up_qweight[0]) and int8pack_ok(self.down_qweight[0])):
            return False
        gu_s, dn_s = self.gate_up_scale.to(torch.bfloat16), self.down_scale.to(torch.bfloat16)
        return ([(self.gate_up_qweight[e], gu_s[e]) for e in range(self.num_experts)],
                [(self.down_qweight[e], dn_s[e]) for e in range(self.num_experts)])

    def expert_product(self, x: torch.Tensor, which: int, e: int) -> torch.Tensor:
        if which == 0:
            return int8_linear(x, self.gate_up_qweight[e], self.gate_up_scale[e], kernel=self.kernels)
        return int8_linear(x, self.down_qweight[e], self.down_scale[e], kernel=self.kernels)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self._gathered(hidden_states, top_k_index, top_k_weights)
        tokens, k = top_k_index.shape
        ready = self._kernel()
        if not ready or tokens == 0:
            return experts_forward(self, hidden_states, top_k_index, top_k_weights)
        # On CPU each expert product is two int8 kernel calls with the gate between them in bfloat16, the
        # kernel's own activation type (no conversion inside an expert). Decoding goes pair by pair, prefill
        # expert by expert; both compute a row the same way, so batching does not change a row's answer.
        gate_up, down = ready
        if tokens * k > PAIR_LOOP_MAX:
            out = torch.zeros_like(hidden_states)
            for e in torch.unique(top_k_index).tolist():
                if e >= self.num_experts:
                    continue
                token_idx, pos = torch.where(top_k_index == e)
                x = hidden_states[token_idx].to(torch.bfloat16)
                h = self._apply_gate(torch._weight_int8pack_mm(x, *gate_up[e]))
                y = torch._weight_int8pack_mm(h, *down[e]).to(out.dtype)
                out.index_add_(0, token_idx, y * top_k_weights[token_idx, pos, None].to(out.dtype))
            return out
        rows = []
        for t, (experts, weights) in enumerate(zip(top_k_index.tolist(), top_k_weights.tolist())):
            x = (hidden_states if tokens == 1 else hidden_states[t:t + 1]).to(torch.bfloat16)
            acc = None
            for e, w in zip(experts, weights):
                if e >= self.num_experts:  # expert-parallel sentinel
                    continue
                h = self._apply_gate(torch._weight_int8pack_mm(x, *gate_up[e]))
                y = torch._weight_int8pack_mm(h, *down[e]).to(hidden_states.dtype) * w
                acc = y if acc is None else acc + y
            rows.append(acc if acc is not None else torch.zeros_like(hidden_states[:1]))
        return rows[0] if tokens == 1 else torch.cat(rows)

    def _gathered(self, hidden_states, top_k_index, top_k_weights):
        # Under torch.compile: no data-dependent Python loop (it would break the graph). Each routed pair
        # gathers its expert's int8 rows and dequantizes them inside the fused kernel, like transformers'
        # batched_mm path does with float weights; meant for decoding, where pairs are few.
        tokens, k = top_k_index.shape
        idx = top_k_index.reshape(-1).clamp(max=self.num_experts - 1)
        keep = (top_k_index.reshape(-1) < self.num_experts).to(hidden_states.dtype)
        x = hidden_states.repeat_interleave(k, dim=0)
        w = self.gate_up_qweight[idx].to(x.dtype) * self.gate_up_scale[idx].to(x.dtype).unsqueeze(-1)
        h = self._apply_gate(torch.bmm(w, x.unsqueeze(-1)).squeeze(-1))
        w = self.down_qweight[idx].to(x.dtype) * self.down_scale[idx].to(x.dtype).unsqueeze(-1)
        y = torch.bmm(w, h.unsqueeze(-1)).squeeze(-1) * (top_k_weights.reshape(-1, 1).to(x.dtype) * keep[:, None])
        return y.view(tokens, k, -1).sum(dim=1)


def _dynamic_linear(qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    out_f, in_f = qweight.shape
    layer = DynamicLinear(in_f, out_f, bias_=bias is not None, dtype=torch.qint8)
    # Re-quantizing q * scale with the same scales gives back q exactly.
    w = torch.quantize_per_channel(qweight.float() * scale.unsqueeze(-1), scale.double(),
                                   torch.zeros(out_f, dtype=torch.long), axis=0, dtype=torch.qint8)
    layer.set_weight_bias(w, bias.float() if bias is not None else None)
    return layer


def _runtime_layer(method: str, qweight, scale, bias) -> nn.Module:
    if method == "int8-dynamic":
        return _dynamic_linear(qweight, scale, bias)
    if method == "int8-weight":
        return Int8WeightLinear(qweight, scale, bias)
    return Int4WeightLinear(qweight, scale, bias)


def read_manifest(model_dir: str | Path) -> dict | None:
    """The directory's tailor_quantization.json, or None when it is not a quantized model."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TailorError(f"{MANIFEST} is not valid JSON: {e}", where=str(path)) from None
    if manifest.get("method") not in METHODS:
        raise TailorError(f"{MANIFEST} names an unknown method {manifest.get('method')!r}", where=str(path),
                          fix=f"re-quantize with tailor quantize --method one of {', '.join(METHODS)}")
    return manifest


def load_quantized(model_dir: str | Path, manifest: dict, config, dtype: torch.dtype, device: torch.device):
    """Rebuild a tailor-quantized model from its directory (called by `load_model`)."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, GenerationConfig

    p = Path(model_dir)
    method = manifest["method"]
    if method == "int8-dynamic" and device.type != "cpu":
        raise TailorError(f"{p} holds int8-dynamic layers, which run on CPUs only", where=str(p),
                          fix="load it with device=cpu, or quantize with int8-weight / int4-weight for GPUs")
    if method == "int8-dynamic" and dtype != torch.float32:
        raise TailorError(f"{p} holds int8-dynamic layers, which take float32 activations, not {dtype}",
                          where="dtype", fix="load it with dtype=float32 (or auto)")
    if not (p / WEIGHTS).is_file():
        raise TailorError(f"{WEIGHTS} is missing from the quantized model {p}", where=str(p))
    tensors = load_file(str(p / WEIGHTS))
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    layers = {}
    for name in manifest["quantized"]:
        try:
            q, s = tensors.pop(f"{name}.qweight"), tensors.pop(f"{name}.scale")
        except KeyError:
            raise TailorError(f"{WEIGHTS} lacks the quantized weights of {name}", where=str(p),
                              fix="the directory is incomplete: quantize the model again") from None
        layers[name] = _runtime_layer(method, q, s, tensors.pop(f"{name}.bias", None))
    int8_experts, expert_q = {}, {}
    for name in manifest.get("quantized_experts", []):
        try:
            expert_q[name] = tensors.pop(f"{name}.qweight"), tensors.pop(f"{name}.scale")
        except KeyError:
            raise TailorError(f"{WEIGHTS} lacks the quantized expert weights {name}", where=str(p),
                              fix="the directory is incomplete: quantize the model again") from None
    for name, (q, s) in expert_q.items():
        parent, _, attr = name.rpartition(".")
        module = model.get_submodule(parent)
        if (is_fused_experts(module) and f"{parent}.gate_up_proj" in expert_q and f"{parent}.down_proj" in expert_q):
            int8_experts[parent] = module  # runs int8 (Int8Experts), set up below
        else:  # an expert layout the int8 forward does not cover: float, as transformers runs it
            tensors[name] = q.float() * s.float().unsqueeze(-1)
    result = model.load_state_dict(tensors, strict=False, assign=True)
    replaced = {f"{name}.{k}" for name in layers for k in ("weight", "bias")}
    replaced |= {f"{name}.{k}" for name in int8_experts for k in ("gate_up_proj", "down_proj")}
    missing = [k for k in result.missing_keys if k not in replaced and k not in manifest.get("tied", {})]
    if missing or result.unexpected_keys:
        raise TailorError(f"{WEIGHTS} does not match config.json: missing {missing[:3]}, unexpected "
                          f"{result.unexpected_keys[:3]}", where=str(p), fix="quantize the model again")
    for name, layer in layers.items():
        model.set_submodule(name, layer)
    for name, module in int8_experts.items():
        model.set_submodule(name, Int8Experts(module, expert_q[f"{name}.gate_up_proj"], expert_q[f"{name}.down_proj"]))
    for alias, source in manifest.get("tied", {}).items():
        parent, _, attr = alias.rpartition(".")
        src_parent, _, src_attr = source.rpartition(".")
        setattr(model.get_submodule(parent), attr, getattr(model.get_submodule(src_parent), src_attr))
    if (p / "generation_config.json").is_file():
        # from_config derives decoding defaults from config.json (where training may have left use_cache=false,
        # which makes every decoding step re-read the whole sequence); from_pretrained reads this file instead.
        model.generation_config = GenerationConfig.from_pretrained(p, local_files_only=True)
    model.to(dtype).to(device)
    return model

