"""Pruning: sparsity hits the amount, structured pruning shrinks the saved model without changing what
the removed parts did not contribute, plain from_pretrained reloads it, and bad input is refused."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tailor.compression.prune import _rebuild, check_args, prune, sparsity
from tailor.errors import TailorError
from tailor.models.loading import count_parameters, load_model, load_tokenizer

IDS = torch.tensor([[1, 5, 7, 9, 11, 20, 33, 40, 2, 17]])


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def _edited(src, out, edit):
    """A copy of the model in `src` with `edit(model)` applied, saved to `out`."""
    model = load_model(src)
    with torch.no_grad():
        edit(model)
    model.save_pretrained(out)
    load_tokenizer(src).save_pretrained(out)
    return _logits(model)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_hits_the_amount_and_survives_reload(qwen2_dir, tmp_path, scope):
    report = prune(qwen2_dir, "magnitude", tmp_path / "p", amount=0.3, scope=scope)
    assert report["sparsity"]["overall"] == pytest.approx(0.3, abs=1e-3)
    per = report["sparsity"]["per_layer"]
    assert "model.layers.0.self_attn.q_proj.weight" in per and "lm_head.weight" not in per
    if scope == "layer":
        assert all(v == pytest.approx(0.3, abs=0.01) for v in per.values())
    else:
        assert max(per.values()) - min(per.values()) > 0.01  # one threshold: layers differ
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    assert sparsity(reloaded)["overall"] == pytest.approx(0.3, abs=1e-3)
    assert report["parameters"][0] == report["parameters"][1]
    assert json.loads((tmp_path / "p" / "pruning_report.json").read_text())["scope"] == scope


def test_unpruned_model_is_unchanged_through_rebuild_and_save(llama_dir, tmp_path):
    model = load_model(llama_dir)
    rebuilt = _rebuild({k: v.clone() for k, v in model.state_dict().items()}, model.config)
    rebuilt.save_pretrained(tmp_path / "same")
    assert torch.equal(_logits(model), _logits(AutoModelForCausalLM.from_pretrained(tmp_path / "same")))


@pytest.mark.parametrize("fixture", ["llama_dir", "qwen2_dir"])
def test_heads_removes_a_dead_kv_group_exactly(request, tmp_path, fixture):
    src = request.getfixturevalue(fixture)

    def kill_group0(model):  # KV group 0 = kv head 0 and query heads 0-1 (head_dim 16)
        for layer in model.model.layers:
            a = layer.self_attn
            a.q_proj.weight[:32] = 0
            a.k_proj.weight[:16] = 0
            a.v_proj.weight[:16] = 0
            a.o_proj.weight[:, :32] = 0
            for proj, n in ((a.q_proj, 32), (a.k_proj, 16), (a.v_proj, 16)):
                if proj.bias is not None:
                    proj.bias[:n] = 0

    ref = _edited(src, tmp_path / "dead", kill_group0)
    report = prune(tmp_path / "dead", "heads", tmp_path / "p", amount=0.5)
    assert report["num_attention_heads"] == [4, 2] and report["num_key_value_heads"] == [2, 1]
    assert all(kept == [1] for kept in report["kept_kv_groups_per_layer"].values())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    assert model.config.num_attention_heads == 2 and model.config.head_dim == 16
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (32, 64)
    assert count_parameters(model)[1] == report["parameters"][1] < report["parameters"][0]
    torch.testing.assert_close(_logits(model), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fixture", ["llama_dir", "deepseek_dir"])
def test_channels_removes_dead_channels_exactly(request, tmp_path, fixture):
    src = request.getfixturevalue(fixture)

    def kill(model):
        for layer in model.model.layers:
            if hasattr(layer.mlp, "gate_proj"):
                layer.mlp.up_proj.weight[:32] = 0
                layer.mlp.down_proj.weight[:, :32] = 0

    ref = _edited(src, tmp_path / "dead", kill)
    report = prune(tmp_path / "dead", "channels", tmp_path / "p", amount=0.25)
    assert report["intermediate_size"] == [128, 96]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    assert model.model.layers[0].mlp.down_proj.weight.shape == (64, 96)
    if fixture == "deepseek_dir":  # layer 1 is MoE: untouched and reported
        assert report["pruned_layers"] == [0] and list(report["untouched_layers"]) == [1]
    assert report["parameters"][1] < report["parameters"][0]
    torch.testing.assert_close(_logits(model), ref, atol=1e-5, rtol=1e-5)


def test_experts_removes_the_unused_ones(deepseek_dir, text_file, tmp_path):
    def never_route_2_3(model):  # the correction bias only steers the choice; experts 2 and 3 are never picked
        model.model.layers[1].mlp.gate.e_score_correction_bias[2:] = -1e4

    ref = _edited(deepseek_dir, tmp_path / "dead", never_route_2_3)
    report = prune(tmp_path / "dead", "experts", tmp_path / "p", amount=0.5, calibration_data=[str(text_file)])
    assert report["n_routed_experts"] == [4, 2]
    usage = report["usage_per_layer"][1]
    assert usage[2] == usage[3] == 0 and usage[0] > 0 and report["kept_experts_per_layer"][1] == [0, 1]
    assert report["removed_share_of_routed_tokens"][1] == 0.0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    assert model.config.n_routed_experts == 2
    assert model.model.layers[1].mlp.experts.gate_up_proj.shape[0] == 2
    assert report["parameters"][1] < report["parameters"][0]
    torch.testing.assert_close(_logits(model), ref, atol=1e-5, rtol=1e-5)


def test_recovery_keeps_pruned_weights_at_zero(llama_dir, text_file, tmp_path):
    report = prune(llama_dir, "magnitude", tmp_path / "p", amount=0.5, recover_steps=2, recover_data=[str(text_file)])
    assert report["recovery"]["steps"] == 2 and report["recovery"]["objective"] == "pretrain"
    assert report["sparsity"]["overall"] >= 0.5 - 1e-3
    pruned_only = tmp_path / "p0"
    prune(llama_dir, "magnitude", pruned_only, amount=0.5)
    a, b = load_model(tmp_path / "p"), load_model(pruned_only)
    w_a, w_b = a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w_a == 0, w_b == 0) and not torch.equal(w_a, w_b)  # same mask, trained values


def test_bad_input_is_refused(llama_dir, deepseek_dir, tmp_path, capsys):
    with pytest.raises(TailorError, match="Did you mean 'heads'"):
        check_args("head", 0.2)
    for amount in (0, 1, 1.5, -0.1):
        with pytest.raises(TailorError, match="between 0 and 1"):
            check_args("magnitude", amount)
    with pytest.raises(TailorError, match="scope"):
        check_args("heads", 0.2, scope="layer")
    with pytest.raises(TailorError, match="needs training data"):
        check_args("magnitude", 0.2, recover_steps=5)
    with pytest.raises(TailorError, match="is dense"):
        prune(llama_dir, "experts", tmp_path / "e", amount=0.5)
    with pytest.raises(TailorError, match="Llama and Qwen2"):
        prune(deepseek_dir, "heads", tmp_path / "h", amount=0.5)
    with pytest.raises(TailorError, match="calibration data"):
        prune(deepseek_dir, "experts", tmp_path / "c", amount=0.5)
    with pytest.raises(TailorError, match="removes no key/value head groups"):
        prune(llama_dir, "heads", tmp_path / "s", amount=0.1)
    with pytest.raises(TailorError, match="would leave 1 routed experts"):
        prune(deepseek_dir, "experts", tmp_path / "x", amount=0.75, calibration_data=["unused"])
    from tailor.cli import main

    assert main(["prune", str(llama_dir), "--method", "magnitude", "--amount", "2", "--out", str(tmp_path / "o")]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_cli_prune_prints_sparsity(llama_dir, tmp_path, capsys):
    from tailor.cli import main

    assert main(["prune", str(llama_dir), "--method", "magnitude", "--amount", "0.2", "--scope", "layer",
                 "--out", str(tmp_path / "o"), "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "sparsity per layer" in out and "model.layers.1.mlp.down_proj.weight" in out
