"""Run-time int8 kernels and the MoE decode path: numerical parity with the float computation."""

import pytest
import torch

from tailor.compression.quantize import quantize_int8
from tailor.models.loading import load_model
from tailor.runtime.experts import experts_forward, use_decode_experts
from tailor.runtime.kernels import int8_linear, int8pack_ok, own_int8, use_kernels
from tailor.runtime.quantized import Int8Experts
from tests.runtime.common import enabled


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("in_features", [64, 40])  # 40: not a multiple of 16, the dequantizing fallback
def test_int8_linear_matches_the_dequantized_float_product(in_features):
    torch.manual_seed(0)
    q, s = quantize_int8(torch.randn(48, in_features))
    q = own_int8(q)
    bias = torch.randn(48)
    w = q.float() * s[:, None]
    for x in (torch.randn(1, in_features), torch.randn(2, 5, in_features)):
        want = torch.nn.functional.linear(x, w, bias)
        got = int8_linear(x, q, s, bias=bias)
        assert got.shape == want.shape and got.dtype == torch.float32
        # the kernel rounds activations and outputs to bfloat16 (8 bits of mantissa): ~0.4% at worst
        assert _rel(got, want) < (1e-2 if in_features % 16 == 0 else 1e-5)
    assert int8pack_ok(q) is (in_features % 16 == 0)


def test_weights_read_from_safetensors_are_copied_before_the_kernel_sees_them(tmp_path):
    # torch._weight_int8pack_mm crashed the process on an int8 weight straight from load_file (unaligned);
    # the check refuses such a tensor and own_int8 gives an aligned copy with the same values.
    from safetensors.torch import load_file, save_file

    q, _ = quantize_int8(torch.randn(32, 64))
    save_file({"a": torch.ones(3, dtype=torch.int8), "q": q}, str(tmp_path / "w.safetensors"))
    raw = load_file(str(tmp_path / "w.safetensors"))["q"]
    if raw.data_ptr() % 64:
        assert not int8pack_ok(raw)
    owned = own_int8(raw)
    assert owned.data_ptr() % 64 == 0 and torch.equal(owned, q) and int8pack_ok(owned)


def _decode_logits(model, ids, steps=4):
    """Logits of a prefill of `ids` and of `steps` greedy decoding steps with the KV cache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        logits = [out.logits]
        for _ in range(steps):
            out = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=cache, use_cache=True)
            logits.append(out.logits)
    return logits


IDS = torch.tensor([[1, 5, 7, 9, 11, 20, 33, 40]])


def test_decode_experts_path_equals_transformers_experts(deepseek_dir, llama_dir):
    from tailor.runtime.experts import use_transformers_experts

    fast = enabled(deepseek_dir)  # runtime.enable installed the decode path
    assert use_decode_experts(fast) == 0 and "_transformers_forward" in fast.model.layers[-1].mlp.experts.__dict__
    assert "_transformers_forward" not in load_model(deepseek_dir).model.layers[-1].mlp.experts.__dict__
    ref = enabled(deepseek_dir)
    assert use_transformers_experts(ref) >= 1 and use_transformers_experts(ref) == 0
    assert use_decode_experts(load_model(llama_dir)) == 0  # dense: nothing to replace
    assert "_transformers_forward" not in load_model(deepseek_dir, for_training=True).model.layers[-1].mlp.experts.__dict__
    # prefill (8 tokens x 2 experts: the per-expert pass) and decoding steps (the per-pair loop)
    for want, got in zip(_decode_logits(ref, IDS), _decode_logits(fast, IDS)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # a batch of two decoding rows (4 pairs, the per-pair loop with two tokens)
    ids = torch.cat([IDS, IDS.flip(-1)])
    for want, got in zip(_decode_logits(ref, ids, 2), _decode_logits(fast, ids, 2)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _int8_experts(experts):
    gu = quantize_int8(experts.gate_up_proj.detach().reshape(-1, experts.gate_up_proj.shape[-1]))
    dn = quantize_int8(experts.down_proj.detach().reshape(-1, experts.down_proj.shape[-1]))
    n = experts.gate_up_proj.shape[0]
    module = Int8Experts(experts, (gu[0].reshape(experts.gate_up_proj.shape), gu[1].reshape(n, -1)),
                         (dn[0].reshape(experts.down_proj.shape), dn[1].reshape(n, -1)))
    with torch.no_grad():  # the float module now holds exactly the weights the int8 one stands for
        experts.gate_up_proj.copy_(module.gate_up_qweight.float() * module.gate_up_scale.unsqueeze(-1))
        experts.down_proj.copy_(module.down_qweight.float() * module.down_scale.unsqueeze(-1))
    assert use_kernels(module) == 1  # the int8 kernels, as runtime.enable switches them on
    return module


def test_int8_experts_match_their_dequantized_float_experts(deepseek_dir):
    model = load_model(deepseek_dir)
    experts = next(m for m in model.modules() if type(m).__name__.endswith("Experts"))
    int8 = _int8_experts(experts)
    torch.manual_seed(0)
    n = experts.gate_up_proj.shape[0]
    for tokens in (1, 3, 16):  # decoding, a small batch (per-pair loop), prefill (per-expert pass)
        hidden = torch.randn(tokens, experts.gate_up_proj.shape[-1])
        index = torch.stack([torch.randperm(n)[:2] for _ in range(tokens)])
        weights = torch.rand(tokens, 2)
        with torch.no_grad():
            want = experts(hidden, index, weights)  # transformers' own forward
            got = int8(hidden, index, weights)
            gathered = int8._gathered(hidden, index, weights)  # the torch.compile path, run eagerly
        assert _rel(got, want) < 2e-2
        torch.testing.assert_close(gathered, want, rtol=1e-4, atol=1e-5)
        assert _rel(experts_forward(experts, hidden, index, weights), want) < 1e-5
    empty = torch.zeros(0, experts.gate_up_proj.shape[-1])
    assert int8(empty, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2)).shape == empty.shape


def test_quantized_moe_runs_in_bfloat16_and_after_a_move(deepseek_dir, tmp_path):
    from tailor.compression.quantize import quantize

    quantize(deepseek_dir, "int8-weight", tmp_path / "q")
    f32 = enabled(tmp_path / "q")
    bf16 = enabled(tmp_path / "q", dtype="bfloat16")
    with torch.no_grad():
        a, b = f32(IDS).logits, bf16(IDS).logits.float()
    assert torch.isfinite(b).all() and _rel(b, a) < 0.1
    f32.to(torch.bfloat16)  # cached bfloat16 scales and expert views follow the buffers
    with torch.no_grad():
        assert torch.isfinite(f32(IDS).logits).all()


@pytest.mark.parametrize("out_features,group", [(48, 32), (40, 32), (48, 16)])  # 40: padded rows; 16: dequantized
def test_int4_linear_matches_the_dequantized_float_product(out_features, group):
    from tailor.compression.quantize import quantize_int4
    from tailor.runtime.quantized import Int4WeightLinear, dequantize_int4

    torch.manual_seed(0)
    packed, scale = quantize_int4(torch.randn(out_features, 128), group)
    layer = Int4WeightLinear(packed, scale, torch.randn(out_features))
    use_kernels(layer)
    x = torch.randn(2, 3, 128)
    want = torch.nn.functional.linear(x, dequantize_int4(packed, scale), layer.bias)
    got = layer(x)
    kernel = group >= 32
    assert got.shape == want.shape and ("_int4pack" in layer.__dict__) is kernel
    assert _rel(got, want) < (1e-2 if kernel else 1e-5)


def test_decode_experts_leave_training_to_transformers(deepseek_dir):
    # the decode path reads routing weights with .tolist(); with gradients on, the router must still get them
    model = load_model(deepseek_dir, for_training=True)
    assert use_decode_experts(model) >= 1 and use_decode_experts(model) == 0  # idempotent
    model(IDS[:, :2], labels=IDS[:, :2]).loss.backward()
    router = next(m for m in model.modules() if type(m).__name__.endswith("TopkRouter"))
    assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_weight_model_runs_on_a_gpu_through_the_dequantizing_path(deepseek_dir, tmp_path):
    from tailor.compression.quantize import quantize

    quantize(deepseek_dir, "int8-weight", tmp_path / "q")
    cpu = enabled(tmp_path / "q", device="cpu")
    gpu = enabled(tmp_path / "q", device="cuda", dtype="float32")
    assert cpu.model.layers[0].self_attn.o_proj.kernels and not gpu.model.layers[0].self_attn.o_proj.kernels
    with torch.no_grad():
        a, b = cpu(IDS).logits, gpu(IDS.cuda()).logits.cpu()
    assert _rel(b, a) < 2e-2  # the CPU side rounds activations to bf16 inside its kernel


def test_int8_experts_give_a_row_the_same_answer_alone_and_in_a_batch(deepseek_dir):
    experts = next(m for m in load_model(deepseek_dir).modules() if type(m).__name__.endswith("Experts"))
    int8 = _int8_experts(experts)
    torch.manual_seed(1)
    hidden = torch.randn(12, experts.gate_up_proj.shape[-1])
    index = torch.stack([torch.randperm(experts.gate_up_proj.shape[0])[:2] for _ in range(12)])
    weights = torch.rand(12, 2)
    with torch.no_grad():
        batch = int8(hidden, index, weights)  # 24 pairs: the per-expert pass
        alone = torch.cat([int8(hidden[i:i + 1], index[i:i + 1], weights[i:i + 1]) for i in range(12)])  # per pair
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-6)


def test_quantized_moe_serves_batched_rows_as_it_answers_them_alone(deepseek_dir, tmp_path):
    from tailor.compression.quantize import quantize
    from tailor.models.loading import load_tokenizer
    from tests.conftest import engine_answers

    quantize(deepseek_dir, "int8-weight", tmp_path / "q")
    model, tok = enabled(tmp_path / "q"), load_tokenizer(tmp_path / "q")
    prompts = [tok.encode(t) for t in ("hello", "How long can I return a laptop?", "Shipping takes", "tents?",
                                       "Our store opens at")]
    alone, batched = engine_answers(model, tok, prompts)
    assert batched == alone  # 5 rows x 2 experts: decoding steps take the per-expert pass
