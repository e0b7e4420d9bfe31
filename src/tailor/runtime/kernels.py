"""Run-time kernels for int8 and int4 weights: private CPU ops of torch, used only when the runtime is enabled.

`int8_linear` multiplies by an int8 weight with one scale per output row. On CPU it calls
`torch._weight_int8pack_mm` (the weight-only int8 kernel torchao and gpt-fast use), which reads the int8
weight directly: decoding streams a quarter of the float32 bytes from memory. That kernel is vectorized
for bfloat16 activations only (its float32 path is scalar and ~10x slower than float32 matmul), so the
activation row is rounded to bfloat16 on the way in and the output widened back (accumulation is
float32 inside the kernel); it also needs the input width to be a multiple of 16 (other widths crash it).
Elsewhere (GPUs, other widths) the weight is dequantized for the product. `int4_linear` does the same for
int4 weights with `torch._weight_int4pack_mm_for_cpu`.

The quantized layers (`tailor.runtime.quantized`) are `KernelModule`s: they dequantize with public torch
operations unless `use_kernels` (one of the patches `tailor.runtime.enable` installs, guarded by the tested
torch range) switched them to these private ops.
"""

from __future__ import annotations

import torch
from torch import nn

# The private torch ops these kernels call (checked before `use_kernels` is installed).
PRIVATE_NAMES = ("torch._weight_int8pack_mm", "torch._weight_int4pack_mm_for_cpu",
                 "torch.ops.aten._convert_weight_to_int4pack_for_cpu")
_ALIGN = 64


def own_int8(q: torch.Tensor) -> torch.Tensor:
    """`q` copied into memory of its own: 64-byte aligned, with 64 bytes to spare after it.

    `torch._weight_int8pack_mm` crashed the process (SIGSEGV; torch 2.13, AVX-512 CPU) on an int8 weight as
    safetensors' `load_file` returns it (8 bytes off a 64-byte boundary, exactly the size of its storage)
    and ran on the same values copied into a fresh allocation. The cause was not pinned down, so the copy
    is both aligned and padded, and `int8pack_ok` refuses weights that are not aligned."""
    buf = torch.empty(q.numel() + 2 * _ALIGN, dtype=q.dtype, device=q.device)
    start = (-buf.data_ptr()) % _ALIGN
    out = buf[start:start + q.numel()].view(q.shape)
    out.copy_(q)
    return out


def int8pack_ok(qweight: torch.Tensor) -> bool:
    """Whether `torch._weight_int8pack_mm` can multiply by this [out, in] int8 weight: a CPU tensor, an input
    width that is a multiple of 16 (other widths crash the kernel), contiguous and 64-byte aligned (see
    `own_int8`)."""
    if qweight.device.type != "cpu" or qweight.shape[-1] % 16 or not hasattr(torch, "_weight_int8pack_mm"):
        return False
    # torch.compile cannot trace data_ptr(); the buffers tailor builds are aligned by own_int8.
    return torch.compiler.is_compiling() or (qweight.is_contiguous() and qweight.data_ptr() % _ALIGN == 0)


def int8_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, scale_bf16: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, kernel: bool = True) -> torch.Tensor:
    """x @ (qweight * scale[:, None]).T (+ bias) for an int8 [out, in] weight and a float scale [out]; `kernel`
    False dequantizes the weight instead of calling the private kernel."""
    if kernel and x.device.type == "cpu" and int8pack_ok(qweight):
        s = scale_bf16 if scale_bf16 is not None else scale.to(torch.bfloat16)
        y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).to(torch.bfloat16), qweight, s)
        y = y.to(x.dtype).reshape(*x.shape[:-1], qweight.shape[0])
    else:
        y = nn.functional.linear(x, qweight.to(x.dtype) * scale.to(x.dtype).unsqueeze(-1))
    return y if bias is None else y + bias


class KernelModule(nn.Module):
    """A quantized layer that runs the private int8/int4 ops once `use_kernels` switched it (`kernels`), and keeps
    kernel-ready views of its buffers (made by `_prepare` at the first forward) in its __dict__: checking
    alignment and slicing per call costs more than the tiny decode products themselves. `nn.Module._apply`
    (model.to(...), .cuda(), .float(), ...) drops them, so they follow the buffers."""

    kernels = False  # the plain path (dequantize, public torch ops) until the runtime is enabled

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_ready", None)
        return super()._apply(fn, *args, **kwargs)

    def _kernel(self):
        """The kernel-ready views, or False for the plain path (kernels off, torch.compile, shapes it refuses)."""
        if not self.kernels or torch.compiler.is_compiling():
            return False
        ready = self.__dict__.get("_ready")
        if ready is None:
            ready = self.__dict__["_ready"] = self._prepare()
        return ready

    def _prepare(self):
        return False


def use_kernels(model: nn.Module) -> int:
    """Switch every `KernelModule` in `model` to the private int8/int4 CPU ops; returns how many were switched."""
    return _switch(model, True)


def use_plain_kernels(model: nn.Module) -> int:
    """Undo `use_kernels`: dequantize with public torch operations again; returns how many were switched."""
    return _switch(model, False)


def installed_on(module: nn.Module) -> bool:
    """Whether `use_kernels` switched this module to the private ops."""
    return isinstance(module, KernelModule) and module.kernels


def _switch(model: nn.Module, on: bool) -> int:
    n = 0
    for module in model.modules():
        if isinstance(module, KernelModule) and module.kernels is not on:
            module.kernels = on
            module.__dict__.pop("_ready", None)
            n += 1
    return n


_INT4_GROUPS = (32, 64, 128, 256)


def int4_linear(module: nn.Module, x: torch.Tensor, dequantize, kernel: bool = True) -> torch.Tensor:
    """x @ W.T (+ bias) for an `Int4WeightLinear`-like module (`qweight` [out, in/2] uint8 holding q+8 for q in
    [-8, 7], two per byte; `scale` [out, in/group]). On CPU, when the shape allows (out a multiple of 16, a group
    of 32-256), it runs `torch._weight_int4pack_mm_for_cpu` (bfloat16 activations inside the kernel, like
    `int8_linear`); the kernel's own weight layout is made at the first such call and kept next to `qweight`
    (both are half a byte per weight; rows are padded with zeros to a multiple of 16, which the kernel
    needs, and the padding is cut from the output). Otherwise (or with `kernel` False) the weight is dequantized
    with `dequantize`."""
    out_f, in_f = module.qweight.shape[0], module.qweight.shape[1] * 2
    group = in_f // module.scale.shape[1]
    if (kernel and x.device.type == "cpu" and group in _INT4_GROUPS and hasattr(torch, "_weight_int4pack_mm_for_cpu")
            and not torch.compiler.is_compiling()):
        cache = module.__dict__.get("_int4pack")
        if cache is None or cache[0] != module.qweight.data_ptr():
            pad = -out_f % 16
            q = torch.stack((module.qweight & 0xF, module.qweight >> 4), dim=-1).reshape(out_f, in_f).to(torch.int32)
            q = nn.functional.pad(q, (0, 0, 0, pad), value=8)  # 8 is the int4 zero
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            # The kernel computes (q - 8) * scale + zero per group; symmetric weights have zero 0.
            scale = nn.functional.pad(module.scale.t(), (0, pad)).to(torch.bfloat16)
            cache = module.__dict__["_int4pack"] = (module.qweight.data_ptr(), packed,
                                                    torch.stack([scale, torch.zeros_like(scale)], -1).contiguous())
        y = torch._weight_int4pack_mm_for_cpu(x.reshape(-1, in_f).to(torch.bfloat16), cache[1], group, cache[2])
        y = y[:, :out_f].to(x.dtype).reshape(*x.shape[:-1], out_f)
    else:
        y = nn.functional.linear(x, dequantize(module.qweight, module.scale, x.dtype))
    return y if module.bias is None else y + module.bias
