"""The plan's arithmetic on a tiny config against hand-computed values, method ordering, QLoRA bytes, sharding,
verdicts, and the pre-flight of `tailor train` (no timings: the time model is checked by bench/bench_plan.py)."""

import json
from dataclasses import replace

import pytest

from tailor.config import TrainRecipe, load_recipe
from tailor.errors import TailorError
from tailor.plan import GIB, RunSettings, compare_methods, estimate_memory, find_fixes, plan_run, verdict
from tailor.plan.speed import MAX_EFFICIENCY
from tailor.plan.memory import (CPU_HEAP_RETENTION, CPU_RUNTIME, NF4_BYTES, activation_bytes, adapter_parameters,
                                heap_share)

from tests.plan.common import HEAD_DIM, HEADS, KV, KVD, H, I, L, V, tiny_llama_shape


@pytest.fixture(scope="module")
def shape():
    return tiny_llama_shape()


def test_parameters_per_kind_match_a_hand_count(shape):
    attn = H * H + 2 * H * KVD + H * H
    mlp = 3 * H * I
    assert shape.by_kind == {"embedding": V * H, "attention": L * attn, "mlp": L * mlp, "norm": (2 * L + 1) * H,
                             "head": V * H}
    assert shape.parameters == 2 * V * H + L * (attn + mlp + 2 * H) + H
    assert shape.per_layer == [attn + mlp + 2 * H] * L
    assert (shape.num_kv_heads, shape.head_dim) == (KV, HEAD_DIM)


def test_full_fp32_breakdown_matches_a_hand_count(shape):
    s = RunSettings(method="full", seq_len=32, batch_size=2, optimizer="adamw")
    mem, trainable, adapter = estimate_memory(shape, s, overhead=1000)
    P = shape.parameters
    assert (trainable, adapter) == (P, 0)
    assert mem.weights == 4 * P and mem.gradients == 4 * P and mem.optimizer == 8 * P and mem.adapter == 0
    tokens = 64
    block = 2 * (2 * H * 4 + H * 4) + (2 * H + 2 * KVD) * 4 + 4 * I * 4  # norms, q k v out, gate up act product
    assert mem.activations == tokens * (L * block + 3 * H * 4)
    # log-softmax, its gradient, the logits' gradient (float32); on CPU the heap's retention and the runtime
    assert heap_share(shape, s) == 1.0  # every tensor of this micro-batch is far below glibc's mmap threshold
    assert mem.temporary == int(tokens * V * 12 + CPU_RUNTIME + CPU_HEAP_RETENTION * mem.activations)
    during_backward = mem.activations + mem.temporary + V * H * 4  # + the head's gradient
    assert mem.peak == mem.weights + mem.optimizer + max(during_backward, mem.gradients) + 1000
    assert mem.overhead == 1000


def test_lora_counts_r_times_in_plus_out_and_costs_less_than_full(shape):
    lora = RunSettings(method="lora", r=4, seq_len=32, batch_size=2)
    n = adapter_parameters(shape, lora)
    per_layer = 4 * ((H + H) + 2 * (H + KVD) + (H + H) + 2 * (H + I) + (I + H))
    assert n == L * per_layer
    full_mem, _, _ = estimate_memory(shape, replace(lora, method="full"), 0)
    lora_mem, trainable, _ = estimate_memory(shape, lora, 0)
    assert trainable == n and lora_mem.adapter == 4 * n and lora_mem.gradients == 4 * n
    assert lora_mem.peak < full_mem.peak and lora_mem.optimizer < full_mem.optimizer
    dora = adapter_parameters(shape, replace(lora, method="dora"))
    assert dora == n + L * (H + KVD + KVD + H + I + I + H)  # + one magnitude per output feature


def test_qlora_stores_linear_weights_in_nf4(shape):
    s = RunSettings(method="qlora", precision="bf16", weight_dtype="bfloat16", device="cuda")
    mem, _, _ = estimate_memory(shape, s, 0)
    linear = L * (H * H + 2 * H * KVD + H * H + 3 * H * I)
    assert mem.weights == int(linear * NF4_BYTES + (shape.parameters - linear) * 2)
    assert 0.51 < NF4_BYTES < 0.52  # 4 bits + double-quantized scales


def test_fsdp_divides_weights_gradients_and_optimizer_by_n(shape):
    one = RunSettings(method="full", device="cuda")
    m1, _, _ = estimate_memory(shape, one, 0)
    m4, _, _ = estimate_memory(shape, replace(one, nproc=4, distributed="fsdp"), 0)
    assert m4.gradients == m1.gradients // 4 and m4.optimizer == m1.optimizer // 4
    gathered = 2 * max(shape.per_layer) * 4
    assert m4.weights == m1.weights // 4 + gathered
    ddp, _, _ = estimate_memory(shape, replace(one, nproc=4, distributed="ddp"), 0)
    assert ddp.weights == m1.weights and ddp.temporary == m1.temporary + m1.gradients  # replicas + gradient buckets


def test_gradient_checkpointing_and_smaller_batches_shrink_activations(shape):
    s = RunSettings(method="lora", seq_len=512, batch_size=8)
    base, _ = activation_bytes(shape, s)
    block = 2 * (2 * H * 4 + H * 4) + (2 * H + 2 * KVD) * 4 + 4 * I * 4
    final = 3 * H * 4
    assert base == 8 * 512 * (L * block + final)
    # checkpointing keeps each block's input and recomputes one block at a time
    assert activation_bytes(shape, replace(s, gradient_checkpointing=True))[0] == 8 * 512 * (L * H * 4 + block + final)
    assert activation_bytes(shape, replace(s, batch_size=4))[0] == base // 2


def test_verdict_thresholds():
    assert verdict(85, 100) == "fits" and verdict(86, 100) == "tight" and verdict(100, 100) == "tight"
    assert verdict(101, 100) == "does not fit" and verdict(5, None) == "unknown"


def test_plan_run_gives_a_verdict_and_fixes_that_fit(shape):
    s = RunSettings(method="full", seq_len=2048, batch_size=32, device="cuda")
    plan = plan_run(None, "cuda", memory_gb=1.0, settings=s, shape=shape, measure=False)
    assert plan.verdict == "does not fit" and plan.peak_bytes > GIB
    fixes = find_fixes(plan, shape)
    assert fixes and all(f.verdict == "fits" and f.peak_bytes <= 0.85 * GIB for f in fixes)
    assert fixes[0].overrides == ["train.gradient_checkpointing=true"] or "train.batch_size" in fixes[0].overrides[0]
    d = plan.to_dict()
    assert d["memory"]["peak"] == plan.peak_bytes and d["verdict"] == "does not fit"
    json.dumps(d, default=str)


def test_compare_methods_orders_methods_and_recommends_one():
    r = TrainRecipe.model_validate({"data": {"max_length": 1024}, "train": {"batch_size": 1}})
    plans = compare_methods(r, "cuda", memory_gb=24, model="qwen2.5-7b", measure=False)
    by = {p.settings.method: p for p in plans}
    assert list(by) == ["full", "freeze", "lora", "dora", "qlora"]
    assert by["qlora"].peak_bytes < by["lora"].peak_bytes < by["full"].peak_bytes
    assert by["full"].verdict == "does not fit" and by["full"].fixes
    assert sum(p.recommended for p in plans) == 1
    assert next(p for p in plans if p.recommended).verdict in ("fits", "tight")


def test_catalog_deepseek_v3_is_671b_with_moe(tmp_path):
    r = TrainRecipe()
    plan = plan_run(r, "cuda", memory_gb=80, nproc=8, model="deepseek-v3", measure=False)
    assert 660e9 < plan.parameters < 680e9 and plan.verdict == "does not fit"
    assert plan.settings.distributed == "ddp"  # --nproc without an engine means ddp, as tailor train does


def test_unknown_architecture_still_plans_and_says_what_is_estimated(tmp_path):
    cfg = {"model_type": "my-own-llm", "auto_map": {"AutoConfig": "x.Y"}, "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = load_recipe(None, [f"model.path={tmp_path}"], reads=TrainRecipe)
    plan = plan_run(r, "cpu", memory_gb=8, measure=False)
    assert plan.parameters > 0 and plan.verdict == "fits"
    assert any("own code" in n for n in plan.not_modelled)


def test_bad_input_is_a_tailor_error(tmp_path):
    with pytest.raises(TailorError, match="qwen2.5-7b") as e:
        plan_run(TrainRecipe(), "cpu", model="qwen2.5-7", measure=False)
    assert e.value.where == "--model"
    with pytest.raises(TailorError, match="no config.json"):
        plan_run(load_recipe(None, [f"model.path={tmp_path}"], reads=TrainRecipe), "cpu", measure=False)
    with pytest.raises(TailorError, match="unknown device"):
        plan_run(TrainRecipe(), "tpu", model="qwen3-0.6b", measure=False)


def test_calibration_runs_real_steps_and_respects_its_budget(shape):
    from tailor.plan.speed import calibrate

    s = RunSettings(method="lora", seq_len=16, batch_size=2)
    speed = calibrate(shape, s, steps=1)
    assert speed.calibrated and 0 < speed.efficiency <= MAX_EFFICIENCY and speed.matmul_flops > 0
    assert not calibrate(shape, s, budget=1).calibrated  # its own steps would not fit: skipped


def test_calibration_times_the_runs_own_micro_batch_and_predicts_it_as_measured(shape):
    from tailor.plan.speed import calibrate, executed_flops, step_seconds

    s = RunSettings(method="full", seq_len=16, batch_size=2, grad_accum=3)  # (16, 2) is no calibration shape
    speed = calibrate(shape, s, steps=1)
    assert (speed.anchor["seq"], speed.anchor["batch"]) == (16, 2) and speed.anchor["seconds"] > 0
    assert (16, 2) not in {(p["seq"], p["batch"]) for p in speed.points}  # the fit is of the small shapes only
    step = step_seconds(speed, executed_flops(shape, s, 0), s, 0, 0, 0)
    assert step == pytest.approx(3 * speed.anchor["seconds"] + speed.optimizer_seconds)
    # another micro-batch carries the same measured / fitted correction
    other = replace(s, batch_size=1, grad_accum=1)
    ratio = speed.anchor["seconds"] / speed.anchor["fitted"]
    anchored, fit_only = (step_seconds(sp, executed_flops(shape, other, 0), other, 0, 0, 0) - speed.optimizer_seconds
                          for sp in (speed, replace(speed, anchor=None)))
    assert anchored == pytest.approx(fit_only * ratio)
    bare = calibrate(shape, s, steps=1, anchor=False)
    assert bare.anchor is None and bare.anchor_skipped == "not asked"
    # the run's shape is a calibration shape: it anchors without another timed step
    assert calibrate(shape, replace(s, batch_size=4), steps=1).anchor["batch"] == 4


def test_head_share_scales_the_output_layer_and_comes_from_the_prepared_loss_tokens(shape, tmp_path, tokenizer_dir,
                                                                                   tokenizer, chat_file):
    from tailor.data.prepare import run as prepare
    from tailor.plan.planner import settings_from_recipe
    from tailor.plan.speed import flops_parts

    s = RunSettings(method="full", seq_len=32, batch_size=2)
    half = replace(s, head_share=0.5)
    assert activation_bytes(shape, half)[1] == activation_bytes(shape, s)[1] // 2
    assert flops_parts(shape, "full", None, 0, 32)[0] - flops_parts(shape, "full", None, 0, 32, 0.5)[0] == 3 * V * H
    overrides = [f"model.tokenizer={tokenizer_dir}", f"data.sources=[{{path: {chat_file}}}]", "data.max_length=64",
                 f"data.prepared_dir={tmp_path / 'prepared'}"]
    r = load_recipe(None, overrides, reads=TrainRecipe)
    assert settings_from_recipe(r).head_share == 1.0  # not prepared: every position
    prepare(r, tokenizer, base_dir=tmp_path)
    share = settings_from_recipe(r).head_share
    report = json.loads((tmp_path / "prepared" / "report.json").read_text())
    stats = (report.get("tokens") or report["extra"]["tokens"])["train"]
    assert share == pytest.approx(stats["loss_tokens"] / (stats["rows"] * 64)) and 0 < share < 1
    assert settings_from_recipe(load_recipe(None, overrides + ["train.logits=all"], reads=TrainRecipe)).head_share == 1.0


def test_a_model_on_disk_is_calibrated_by_default(tmp_path, llama_dir):
    r = load_recipe(None, [f"model.path={llama_dir}", "data.max_length=16", "train.batch_size=2"], reads=TrainRecipe)
    plan = plan_run(r, "cpu", memory_gb=8)
    assert plan.speed.calibrated and plan.tokens_per_second > 0
    assert plan_run(r, "cpu", memory_gb=8, calibrate=False).speed.calibrated is False


def test_classification_has_no_vocabulary_sized_loss(shape):
    s = RunSettings(method="full", seq_len=32, batch_size=2)
    assert activation_bytes(shape, s)[1] == 64 * V * 12
    assert activation_bytes(shape, replace(s, objective="classification"))[1] == 0
