"""Memory terms of objectives beyond SFT (the reference copy, GRPO's generation, the distillation teacher, paired
preference rows), the math-attention probabilities, the time model's fit and plan_check's step time. No timings:
the time model's accuracy is bench/bench_plan.py's."""

from dataclasses import replace

import pytest
import torch
from transformers import DeepseekV3Config

from tailor.config import DistillRecipe, TrainRecipe, load_recipe
from tailor.plan import RunSettings, compare_methods, estimate_memory, model_shape, plan_run, settings_from_recipe, shape_of
from tailor.plan.memory import _block_saved, activation_bytes
from tailor.plan.speed import MAX_EFFICIENCY, _nnls, calibrate, calibration_points
from tailor.training.preflight import plan_check

from tests.plan.common import HEADS, KV, H, I, L, V, tiny_llama_shape


@pytest.fixture(scope="module")
def shape():
    return tiny_llama_shape()


def test_dpo_keeps_a_reference_copy_only_without_an_adapter(shape):
    for method, copy in (("full", True), ("freeze", True), ("lora", False)):
        r = TrainRecipe.model_validate({"train": {"objective": "dpo"}, "adapter": {"method": method}})
        s = settings_from_recipe(r)
        assert s.reference and (estimate_memory(shape, s, 0)[0].frozen > 0) is copy
    assert not settings_from_recipe(TrainRecipe.model_validate({"train": {"objective": "orpo"}})).reference
    s = RunSettings(method="full", objective="dpo", seq_len=32, batch_size=2)
    plain, _, _ = estimate_memory(shape, s, 0)
    ref, _, _ = estimate_memory(shape, replace(s, reference=True), 0)
    assert plain.frozen == 0 and ref.frozen == ref.weights == 4 * shape.parameters
    assert ref.peak == plain.peak + ref.weights
    r = TrainRecipe.model_validate({"train": {"objective": "dpo"}, "adapter": {"method": "full"}})
    frozen = {p.settings.method: p.memory.frozen for p in compare_methods(r, "cuda", 24, model="qwen3-0.6b", measure=False)}
    assert frozen["full"] > 0 and frozen["freeze"] > 0 and frozen["lora"] == frozen["qlora"] == 0


def test_paired_preference_rows_train_chosen_and_rejected(shape):
    s = RunSettings(method="lora", seq_len=32, batch_size=2)
    sft, _, _ = estimate_memory(shape, s, 0)
    dpo, _, _ = estimate_memory(shape, replace(s, objective="dpo"), 0)
    kto, _, _ = estimate_memory(shape, replace(s, objective="kto"), 0)
    assert dpo.activations == activation_bytes(shape, replace(s, batch_size=4))[0] == 2 * sft.activations
    assert kto.activations == sft.activations  # unpaired rows


def test_grpo_generation_is_the_kv_cache_of_the_steps_answers(shape):
    r = TrainRecipe.model_validate({"train": {"objective": "grpo", "batch_size": 8, "grad_accum": 2},
                                    "data": {"max_length": 32}, "grpo": {"num_generations": 4, "max_completion_length": 64}})
    s = settings_from_recipe(r)
    assert (s.generations, s.completion_len, s.reference) == (4, 64, True)  # lora: the adapter disabled, no copy
    mem, _, _ = estimate_memory(shape, s, 0)
    rows, tokens = 16, 16 * (32 + 64)
    assert mem.generation == tokens * L * 2 * KV * (H // HEADS) * 4 + rows * V * 8
    # training runs on prompt + completion
    assert mem.activations == activation_bytes(shape, replace(s, objective="sft", seq_len=96))[0]
    # many accumulated micro-batches generate at once: generation is the peak (no gradients exist then)
    big, _, _ = estimate_memory(shape, replace(s, grad_accum=64, device="cuda"), 0)
    assert big.peak == big.weights + big.adapter + big.optimizer + big.generation
    assert estimate_memory(shape, replace(s, objective="sft"), 0)[0].generation == 0


def test_distillation_counts_the_teachers_weights_and_logits(tmp_path, llama_dir):
    r = load_recipe(None, [f"model.path={llama_dir}", f"distill.teacher={llama_dir}", "data.max_length=16",
                           "train.batch_size=2"], reads=DistillRecipe)
    with_teacher = plan_run(r, "cpu", memory_gb=8, measure=False)
    s = with_teacher.settings
    alone, _, _ = estimate_memory(model_shape(r), replace(s, teacher_parameters=0, teacher_vocab=0), 0)
    assert s.teacher_parameters == with_teacher.parameters and s.teacher_vocab > 0
    assert with_teacher.memory.frozen == 4 * s.teacher_parameters and alone.frozen == 0
    assert with_teacher.memory.temporary - alone.temporary == 2 * 16 * (16 * s.teacher_vocab + 8 * s.teacher_vocab)
    assert not any("teacher" in n for n in with_teacher.not_modelled)
    r.distill.teacher = str(tmp_path)  # no config.json there: the rest is still planned, the gap is named
    missing = plan_run(r, "cpu", memory_gb=8, measure=False)
    assert missing.memory.frozen == 0 and any("teacher's memory is not in the plan" in n for n in missing.not_modelled)


def test_math_attention_probabilities_are_float32_under_autocast():
    cfg = DeepseekV3Config(vocab_size=V, hidden_size=H, intermediate_size=I, moe_intermediate_size=32,
                           num_hidden_layers=2, num_attention_heads=HEADS, num_key_value_heads=HEADS, q_lora_rank=32,
                           kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=4,
                           num_experts_per_tok=2, first_k_dense_replace=1, n_group=1, topk_group=1)
    sh = shape_of(cfg, cfg.to_dict(), name="tiny-mla")
    s = RunSettings(method="full", precision="bf16", seq_len=512, batch_size=1)
    cpu, gpu = _block_saved(sh, s, moe=False), _block_saved(sh, replace(s, device="cuda"), moe=False)
    assert cpu - gpu == HEADS * 512 * 4  # CPU sdpa's math kernel keeps float32 probabilities (qk != v head size)


def test_the_fit_recovers_fixed_linear_and_attention_terms():
    points = calibration_points(2048)
    assert points == [(128, 1), (128, 4), (512, 1), (512, 2)] and calibration_points(64) == [(64, 1), (64, 4), (64, 8)]
    lin, attn = 3.0, 0.002  # seconds per token of the linear work at 100% efficiency, per token x seq of attention
    rows = [[1.0, q * b * lin, q * b * q * attn] for q, b in points]
    ys = [0.05 + 2.0 * r[1] + 4.0 * r[2] for r in rows]  # fixed 0.05 s, e_linear 1/2, e_attention 1/4
    fixed, inv_lin, inv_attn = _nnls(rows, ys, merge=False)
    assert fixed == pytest.approx(0.05) and inv_lin == pytest.approx(2.0) and inv_attn == pytest.approx(4.0)
    # a term that would come out negative is left out instead
    fixed, inv_lin, _ = _nnls([[1.0, 1.0, 0.0], [1.0, 2.0, 0.0]], [1.0, 3.0], merge=True)
    assert fixed == 0.0 and inv_lin == pytest.approx(15 / 13)  # least relative squares through the origin
    # a time that hardly grows with the tokens cannot make the step much faster than the matmul probe:
    # e_linear <= MAX_EFFICIENCY
    fixed, inv_lin, _ = _nnls([[1.0, 0.01, 0.0], [1.0, 0.04, 0.0]], [1.0, 1.001], merge=True)
    assert inv_lin == pytest.approx(1 / MAX_EFFICIENCY) and fixed == pytest.approx(0.983, abs=0.01)


def test_calibration_runs_the_method_it_is_given(shape):
    seen = []

    def prepare(model):
        seen.append(type(model).__name__)
        for p in model.parameters():
            p.requires_grad = False
        model.lm_head.weight.requires_grad = True
        return model

    s = RunSettings(method="lora", seq_len=16, batch_size=2)
    speed = calibrate(shape, s, steps=1, prepare=prepare)
    assert seen == ["LlamaForCausalLM"] and speed.calibrated and speed.method == "lora"
    assert [(p["seq"], p["batch"]) for p in speed.points] == calibration_points(16)
    assert speed.efficiency > 0 and speed.optimizer_seconds is not None
    plan = plan_run(None, "cpu", settings=s, shape=shape, speed=speed)
    other = plan_run(None, "cpu", settings=replace(s, method="full"), shape=shape, speed=speed)
    assert plan.step_seconds > 0 and any("calibrated on lora" in n for n in other.not_modelled)


def test_plan_check_compares_the_step_time_without_the_warm_up_step(shape):
    plan = plan_run(None, "cpu", settings=RunSettings(method="lora", seq_len=16, batch_size=2), shape=shape)
    plan.step_seconds = 1.2
    metrics = {"timed_steps": 3, "step_seconds": 4.0, "first_step_seconds": 2.0}
    check = plan_check(plan, 100.0, torch.device("cpu"), metrics)["plan_check"]
    assert check["predicted_step_seconds"] == 1.2 and check["measured_step_seconds"] == 1.0
    assert check["step_time_error"] == pytest.approx(0.2) and check["step_time_calibrated"] is False
    assert "measured_step_seconds" not in plan_check(plan, 100.0, torch.device("cpu"), {"timed_steps": 1})["plan_check"]


def test_a_calibration_that_would_take_minutes_is_skipped_and_says_why():
    speed = calibrate(model_shape(None, "qwen2.5-7b"), RunSettings(method="lora", seq_len=2048, batch_size=1))
    assert not speed.calibrated and "would take about" in speed.skipped
