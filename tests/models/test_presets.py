"""Model presets build real transformers models that train; bad names and keys fail helpfully."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from tailor.errors import TailorError
from tailor.models.loading import count_parameters
from tailor.models.presets import PRESETS, build_config, init_model

VOCAB = 4096


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_runs_and_backpropagates(preset):
    from transformers import AutoModelForCausalLM

    config = build_config(preset, VOCAB)
    assert config.vocab_size == VOCAB
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    ids = torch.randint(0, VOCAB, (2, 16))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 16, VOCAB)
    # A fresh model predicts roughly uniformly: loss near ln(vocab).
    assert abs(out.loss.item() - torch.log(torch.tensor(float(VOCAB))).item()) < 0.5
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)  # every weight, router and experts included, is trained
    assert sum(g.abs().sum().item() for g in grads if g is not None) > 0
    trainable, total = count_parameters(model)
    limit = 10_000_000 if preset.endswith("-tiny") else 1_000_000
    assert trainable == total <= limit


def test_deepseek_v3_tiny_has_mla_and_shared_plus_routed_experts():
    from transformers import AutoModelForCausalLM

    config = build_config("deepseek-v3-tiny", VOCAB)
    assert config.q_lora_rank and config.kv_lora_rank  # multi-head latent attention
    assert config.first_k_dense_replace == 1 and config.n_shared_experts == 1
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    _, total = count_parameters(model)
    assert 1_000_000 <= total <= 10_000_000

    layers = model.model.layers
    attn = layers[0].self_attn
    assert attn.q_a_proj.out_features == config.q_lora_rank
    assert attn.kv_a_proj_with_mqa.out_features == config.kv_lora_rank + config.qk_rope_head_dim
    assert not hasattr(layers[0].mlp, "experts")  # the first layer is dense
    for layer in layers[1:]:
        moe = layer.mlp
        # transformers 5 stores routed experts fused as 3D parameters, not one nn.Linear each.
        assert moe.experts.gate_up_proj.shape == (8, 2 * config.moe_intermediate_size, config.hidden_size)
        assert moe.experts.down_proj.shape == (8, config.hidden_size, config.moe_intermediate_size)
        assert moe.shared_experts.gate_proj.out_features == config.moe_intermediate_size

    # The router config is valid for 8 experts: it picks 2 distinct experts per token and
    # spreads tokens over most of them.
    hidden = torch.randn(256, config.hidden_size)
    _, weights, indices = layers[1].mlp.gate(hidden)
    assert indices.shape == (256, 2)
    assert (indices[:, 0] != indices[:, 1]).all()
    assert len(indices.unique()) >= 6
    assert torch.allclose(weights.sum(-1), torch.ones(256), atol=1e-5)  # normalised, scale 1.0


def test_overrides_apply_and_unknown_keys_fail():
    config = build_config("llama-micro", 500, num_hidden_layers=3, tie_word_embeddings=True)
    assert config.num_hidden_layers == 3 and config.tie_word_embeddings
    with pytest.raises(TailorError, match="unknown setting 'hidden_sise'") as e:
        build_config("llama-micro", 500, hidden_sise=32)
    assert "hidden_size" in str(e.value)
    with pytest.raises(TailorError, match="n_group"):
        build_config("deepseek-v3-micro", 500, n_routed_experts=6, n_group=4)
    with pytest.raises(TailorError, match="num_attention_heads"):
        build_config("qwen2-micro", 500, hidden_size=50)
    with pytest.raises(TailorError, match="invalid settings"):
        build_config("qwen2-micro", 500, num_hidden_layers="two")


def test_unknown_preset_names_the_nearest():
    with pytest.raises(TailorError, match="unknown model preset 'deepseek-v3-tine'") as e:
        build_config("deepseek-v3-tine", 500)
    assert "did you mean 'deepseek-v3-tiny'" in str(e.value)
    assert "llama-micro" in str(e.value)  # lists the valid names


def test_init_model_uses_tokenizer_ids_and_is_seeded(tokenizer, tmp_path):
    a = init_model("deepseek-v3-micro", tokenizer, seed=1)
    b = init_model("deepseek-v3-micro", tokenizer, seed=1)
    c = init_model("deepseek-v3-micro", tokenizer, seed=2)
    assert a.dtype == torch.float32
    assert a.config.vocab_size == len(tokenizer)
    assert (a.config.bos_token_id, a.config.eos_token_id, a.config.pad_token_id) == (0, 1, 2)
    assert a.generation_config.eos_token_id == 1 and a.generation_config.pad_token_id == 2
    w = "model.embed_tokens.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])

    out = tmp_path / "m"
    init_model("llama-micro", tokenizer, out_dir=out, num_hidden_layers=1)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
