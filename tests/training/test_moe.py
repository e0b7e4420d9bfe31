"""Mixture of experts: per-layer expert load in the metrics, DeepSeek-V3's bias balancing, LoRA on or off the experts."""

import json
import statistics

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from tailor.adapters import apply_adapter
from tailor.adapters.merge import load_with_adapter
from tailor.cli import main
from tailor.config import AdapterConfig, load_recipe, save_recipe
from tailor.errors import TailorError
from tailor.training.callbacks import read_metrics
from tailor.training.moe import coefficient_of_variation, find_routers, update_bias
from tailor.training import train as run


def recipe(tmp_path, model_dir, data, *extra, name="run"):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / name}",
                              "train.batch_size=4", "train.save_steps=100", "data.max_length=48", "adapter.r=4",
                              "train.mfu_probe_seconds=0", *extra])


def train_rows(path):
    return [m for m in read_metrics(path / "metrics.jsonl") if "loss" in m]


@pytest.mark.parametrize("extra", [
    # SFT with padding (attention mask), gradient accumulation, activation checkpointing (recomputed forwards
    # must not count twice) and evaluation every 2 steps (evaluation forwards must not count at all).
    ["train.grad_accum=2", "train.gradient_checkpointing=true", "data.val_ratio=0.25", "train.eval_steps=2"],
    # Packed pretraining: no attention mask, padding found by the pad id.
    ["train.objective=pretrain", "data.max_length=40"],
], ids=["sft-accum-checkpointing-eval", "pretrain-packed"])
def test_expert_load_counts_every_real_token_top_k_times(tmp_path, deepseek_dir, chat_file, text_file, extra):
    data = text_file if "train.objective=pretrain" in extra else chat_file
    run(recipe(tmp_path, deepseek_dir, data, "adapter.method=full", "train.max_steps=4", "train.logging_steps=2", *extra))
    cfg = json.loads((deepseek_dir / "config.json").read_text())
    top_k, n_experts = cfg["num_experts_per_tok"], cfg["n_routed_experts"]
    rows = train_rows(tmp_path / "run")
    assert len(rows) == 2
    seen = 0
    for m in rows:
        window_tokens, seen = m["num_input_tokens_seen"] - seen, m["num_input_tokens_seen"]
        assert set(m["moe_load"]) == {"layer1"}  # layer 0 is dense (first_k_dense_replace=1)
        counts = m["moe_load"]["layer1"]
        assert len(counts) == n_experts and sum(counts) == top_k * window_tokens
        hand = statistics.pstdev(counts) / statistics.mean(counts)
        assert m["moe/layer1/cv"] == pytest.approx(hand, abs=1e-5) and m["moe/cv"] == m["moe/layer1/cv"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents*"))))
    acc.Reload()
    assert "train/moe/layer1/cv" in acc.Tags()["scalars"]


def test_coefficient_of_variation_and_bias_step_by_hand():
    assert coefficient_of_variation([10, 10, 10, 10]) == 0.0
    assert coefficient_of_variation([0, 0, 0]) == 0.0
    assert coefficient_of_variation([3, 1]) == pytest.approx(0.5)  # std 1, mean 2
    bias = torch.zeros(4)
    update_bias(bias, torch.tensor([10, 2, 4, 4]), 0.01)  # mean 5: expert 0 over, the rest under
    assert torch.allclose(bias, torch.tensor([-0.01, 0.01, 0.01, 0.01]))
    update_bias(bias, torch.tensor([5, 5, 5, 5]), 0.01)  # balanced: sign(0) = 0, no change
    assert torch.allclose(bias, torch.tensor([-0.01, 0.01, 0.01, 0.01]))


def test_bias_update_balances_an_imbalanced_router(tmp_path, deepseek_dir, text_file):
    """A router biased towards experts 0 and 1 (as a badly balanced model would be) sends every token there;
    the bias update (gamma 0.05, large so a toy run of 12 steps can show it) brings the load back to even."""
    model = AutoModelForCausalLM.from_pretrained(deepseek_dir)
    (router,) = find_routers(model).values()
    with torch.no_grad():
        router.e_score_correction_bias.copy_(torch.tensor([0.3, 0.3, 0.0, 0.0]))
    skewed = tmp_path / "skewed"
    model.save_pretrained(skewed)
    for f in deepseek_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            (skewed / f.name).write_bytes(f.read_bytes())

    cvs, biases = {}, {}
    for gamma in (0.0, 0.05):
        out = tmp_path / f"g{gamma}"
        result = run(recipe(out, skewed, text_file, "adapter.method=full", "train.objective=pretrain", "train.lr=1e-4",
                            "train.max_steps=12", "train.logging_steps=4", "data.max_length=32",
                            f"train.moe_bias_update_speed={gamma}"))
        cvs[gamma] = [m["moe/layer1/cv"] for m in train_rows(out / "run")]
        trained = AutoModelForCausalLM.from_pretrained(result.final_dir)
        biases[gamma] = next(iter(find_routers(trained).values())).e_score_correction_bias
    assert cvs[0.0][-1] > 0.9  # off: still (nearly) all tokens on experts 0 and 1 (CV 1.0 when exactly so)
    assert cvs[0.05][-1] < 0.5 * cvs[0.0][-1]  # measured 0.25 vs 1.0
    assert torch.equal(biases[0.0], torch.tensor([0.3, 0.3, 0.0, 0.0]))
    b = biases[0.05]
    assert b[0] < 0.3 and b[1] < 0.3 and b[2] > 0 and b[3] > 0  # overloaded down, underloaded up; saved in final/


def test_bias_update_refused_where_it_cannot_work(tmp_path, llama_dir, deepseek_dir, chat_file, capsys):
    r = recipe(tmp_path, llama_dir, chat_file, "train.moe_bias_update_speed=0.001", "train.max_steps=1")
    yaml_path = tmp_path / "dense.yaml"
    save_recipe(r, yaml_path)
    assert main(["train", str(yaml_path)]) == 2
    err = capsys.readouterr().err
    assert "no MoE routers" in err and "moe_bias_update_speed=0" in err and "Traceback" not in err
    with pytest.raises(TailorError, match="not saved in a lora adapter"):
        run(recipe(tmp_path, deepseek_dir, chat_file, "train.moe_bias_update_speed=0.001", "train.max_steps=1",
                   name="lora"))
    with pytest.raises(TailorError, match="greater than or equal to 0"):
        load_recipe(None, ["train.moe_bias_update_speed=-0.1"])


def lora_names(model_dir, method="lora", **kw):
    torch.manual_seed(0)
    model = apply_adapter(AutoModelForCausalLM.from_pretrained(model_dir), AdapterConfig(method=method, r=4, **kw))
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_lora_experts_switch_changes_the_trainable_set(deepseek_dir, llama_dir):
    default = lora_names(deepseek_dir)
    on = lora_names(deepseek_dir, lora_experts=True)
    off = lora_names(deepseek_dir, lora_experts=False)
    experts = {n for n in default if ".mlp.experts." in n}
    router = {n for n in default if ".mlp.gate." in n}
    attention = {n for n in default if ".self_attn." in n}
    # Today's all-linear (peft 0.21 on transformers 5): attention, the fused experts and the router.
    assert experts and router and attention and default == attention | experts | router
    assert on == default
    assert off == attention  # experts and router frozen
    # With an explicit list, true adds the fused experts (not the router) and false keeps the list as it is.
    listed = lora_names(deepseek_dir, target_modules=["q_a_proj"], lora_experts=True)
    assert {n for n in listed if ".experts." in n} and not {n for n in listed if ".mlp.gate." in n}
    assert all(".experts." in n or ".q_a_proj." in n for n in listed)
    assert all(".q_a_proj." in n for n in lora_names(deepseek_dir, target_modules=["q_a_proj"], lora_experts=False))

    # DoRA cannot wrap fused experts; with the experts switched off it trains the attention.
    with pytest.raises(TailorError, match="DoRA cannot wrap"):
        lora_names(deepseek_dir, method="dora")
    assert lora_names(deepseek_dir, method="dora", lora_experts=False) >= off

    with pytest.raises(TailorError, match="no fused mixture-of-experts"):
        lora_names(llama_dir, lora_experts=True)
    assert lora_names(llama_dir, lora_experts=False) == lora_names(llama_dir)  # dense: nothing to skip
    with pytest.raises(TailorError, match="maps onto"):
        lora_names(deepseek_dir, target_modules=["q_a_proj", "gate_proj"], lora_experts=False)
    with pytest.raises(TailorError, match="lora_experts applies to lora"):
        load_recipe(None, ["adapter.method=ia3", "adapter.lora_experts=true"])


class Keep(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kw):
        self.model = model


@pytest.mark.parametrize("switch", ["true", "false"])
def test_lora_experts_adapter_trains_saves_and_reloads(tmp_path, deepseek_dir, chat_file, switch):
    keep = Keep()
    result = run(recipe(tmp_path, deepseek_dir, chat_file, "train.max_steps=2", "train.lr=1e-2",
                        "adapter.target_modules=[q_a_proj, kv_b_proj]", f"adapter.lora_experts={switch}"),
                 callbacks=[keep])
    saved = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert bool(saved.get("target_parameters")) == (switch == "true")
    reloaded, _ = load_with_adapter(result.final_dir)
    names = {n for n, _ in reloaded.named_parameters() if "lora_" in n}
    assert any(".experts." in n for n in names) == (switch == "true")
    ids = torch.tensor([[5, 17, 42, 99, 7, 230, 11, 64]])
    base = AutoModelForCausalLM.from_pretrained(deepseek_dir).eval()
    with torch.no_grad():
        expected = keep.model.eval()(input_ids=ids).logits
        torch.testing.assert_close(reloaded.eval()(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
        assert (expected - base(input_ids=ids).logits).abs().max() > 1e-5
