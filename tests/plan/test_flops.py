import math

import pytest
import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, LlamaConfig, LlamaForCausalLM

from tailor.errors import TailorError
from tailor.plan.flops import measure_matmul_peak, train_flops_per_token

V, H, I, L, HEADS, KV = 100, 64, 128, 2, 4, 2


def llama(tie=False):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                                        num_attention_heads=HEADS, num_key_value_heads=KV, tie_word_embeddings=tie))


def deepseek(experts, top_k=2):
    torch.manual_seed(0)
    cfg = DeepseekV3Config(vocab_size=V, hidden_size=H, intermediate_size=I, moe_intermediate_size=32, num_hidden_layers=3,
                           first_k_dense_replace=1, n_routed_experts=experts, num_experts_per_tok=top_k, n_shared_experts=1,
                           n_group=1, topk_group=1, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                           q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                           tie_word_embeddings=False)
    return DeepseekV3ForCausalLM(cfg)


def test_llama_matches_a_hand_count():
    head_dim = H // HEADS
    per_layer = H * H + 2 * H * (KV * head_dim) + H * H + 3 * H * I  # q, k, v, o, gate, up, down
    weights = L * per_layer + V * H  # + the LM head; embeddings are lookups
    seq = 256
    attention = 12 * L * HEADS * head_dim * seq / 2
    assert train_flops_per_token(llama(), seq) == 6 * weights + attention
    # A tied head is still a vocab x hidden matmul.
    assert train_flops_per_token(llama(tie=True), seq) == 6 * weights + attention


def test_moe_counts_only_the_active_experts():
    model = deepseek(experts=8, top_k=2)
    experts = [m for m in model.modules() if type(m).__name__ == "DeepseekV3Experts"]
    assert len(experts) == 2
    expert_weights = sum(p.numel() for m in experts for p in m.parameters())
    all_weights = sum(p.numel() for n, p in model.named_parameters() if p.ndim >= 2 and "embed_tokens" not in n)
    active = all_weights - expert_weights + expert_weights * 2 / 8
    head_dims = (8 + 8) + 8  # d_qk (nope + rope) + d_v of multi-head latent attention
    attention = 3 * 3 * HEADS * 2 * head_dims * 64 / 2
    assert train_flops_per_token(model, 64) == pytest.approx(6 * active + attention)
    # Twice the experts at the same top-k adds only router rows (2 MoE layers x 8 more experts x hidden).
    diff = train_flops_per_token(deepseek(experts=16, top_k=2), 64) - train_flops_per_token(model, 64)
    assert diff == pytest.approx(6 * 2 * 8 * H)
    assert train_flops_per_token(deepseek(experts=8, top_k=4), 64) > train_flops_per_token(model, 64)


def test_frozen_base_costs_4n_and_adapters_6n():
    from peft import LoraConfig, get_peft_model

    seq = 128
    full = train_flops_per_token(llama(), seq)
    lora = get_peft_model(llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora_weights = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    assert lora_weights > 0
    attention = 12 * L * HEADS * (H // HEADS) * seq / 2
    base = (full - attention) / 6
    assert train_flops_per_token(lora, seq) == pytest.approx(4 * base + 6 * lora_weights + attention)
    assert train_flops_per_token(lora, seq) < full


def test_layers_below_the_lowest_trainable_one_run_forward_only():
    seq = 64
    model = llama()
    for n, p in model.named_parameters():
        p.requires_grad = n.startswith("model.layers.1.") or n.startswith("lm_head") or n == "model.norm.weight"
    full = train_flops_per_token(llama(), seq)
    attention_layer = 12 * HEADS * (H // HEADS) * seq / 2
    layer = (full - 2 * attention_layer - 6 * V * H) / 6 / L  # weights of one decoder block
    expected = 2 * layer + attention_layer / 3 + 6 * layer + attention_layer + 6 * V * H
    assert train_flops_per_token(model, seq) == pytest.approx(expected)
    for p in model.parameters():
        p.requires_grad = False
    assert train_flops_per_token(model, seq) == pytest.approx(full / 3)  # nothing trains: a forward pass


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TailorError, match="seq_len"):
        train_flops_per_token(llama(), 0)
    with pytest.raises(TailorError, match="config"):
        train_flops_per_token(torch.nn.Linear(2, 2), 8)
    with pytest.raises(TailorError, match="size"):
        measure_matmul_peak(size=0)


def test_matmul_peak_is_a_measured_rate():
    peak = measure_matmul_peak(seconds=0.05, size=128)
    assert math.isfinite(peak) and 1e7 < peak < 1e14


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_matmul_peak_on_cuda():
    assert measure_matmul_peak("cuda", torch.bfloat16, seconds=0.1, size=2048) > 1e11
