"""train.precision=auto: flag candidate, probe, first-batch numerics check; CPUs are faked (flags, probe), nothing timed."""

import pytest
import torch
from transformers import TrainerCallback

from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.models import loading
from tailor.training import precision
from tailor.training import train as run
from tailor.training.callbacks import read_metrics
from tailor.training.precision import FirstBatch, Precision, confirm_on_first_batch, resolve_precision

CPU = torch.device("cpu")
AMX = {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
AVX2 = {"sse4_2", "avx", "avx2", "fma"}


def never():
    raise AssertionError("the probe must not run")


@pytest.fixture(autouse=True)
def _auto(monkeypatch):
    monkeypatch.delenv("TAILOR_PRECISION", raising=False)


def test_amx_cpu_with_a_fast_probe_is_a_bf16_candidate():
    choice = resolve_precision("auto", CPU, flags=AMX, probe=lambda: 3.1)
    assert choice.name == "bf16" and choice.confirm
    assert "amx_bf16/avx512_bf16" in choice.reason and "3.10x" in choice.reason


def test_avx2_only_cpu_stays_fp32_without_probing():
    choice = resolve_precision("auto", CPU, flags=AVX2, probe=never)
    assert choice.name == "fp32" and not choice.confirm
    assert "no native bf16 instructions" in choice.reason


def test_bf16_flag_with_a_slow_probe_stays_fp32():
    choice = resolve_precision("auto", CPU, flags={"avx512_bf16"}, probe=lambda: 1.1)
    assert choice.name == "fp32" and "measured only 1.10x" in choice.reason


def test_explicit_precision_wins_over_auto():
    assert resolve_precision("fp32", CPU, flags=AMX, probe=never).name == "fp32"
    assert resolve_precision("bf16", CPU, flags=AMX, probe=never).confirm is False
    with pytest.raises(TailorError, match="100x slower"):
        resolve_precision("bf16", CPU, flags=AVX2, probe=never)
    with pytest.raises(TailorError, match="needs a CUDA GPU"):
        resolve_precision("fp16", CPU, flags=AMX, probe=never)


def test_environment_variable_replaces_auto_only(monkeypatch):
    monkeypatch.setenv("TAILOR_PRECISION", "fp32")
    choice = resolve_precision("auto", CPU, flags=AMX, probe=never)
    assert choice.name == "fp32" and "TAILOR_PRECISION" in choice.reason
    assert resolve_precision("bf16", CPU, flags=AMX, probe=never).name == "bf16"
    monkeypatch.setenv("TAILOR_PRECISION", "bf17")
    with pytest.raises(TailorError, match="TAILOR_PRECISION=bf17"):
        resolve_precision("auto", CPU, flags=AMX, probe=never)


def measured(fp32_loss, bf16_loss, fp32_seconds=2.0, bf16_seconds=1.0):
    return lambda model, batch: FirstBatch(fp32_loss, bf16_loss, fp32_seconds, bf16_seconds)


def test_first_batch_keeps_or_refuses_bf16():
    candidate = Precision("bf16", "bf16 autocast (fp32 master weights): this CPU has amx_bf16", confirm=True)
    kept = confirm_on_first_batch(candidate, None, {}, measure=measured(5.000, 5.004))
    assert kept.name == "bf16" and "0.08%" in kept.reason and "2.00x fp32" in kept.reason and not kept.confirm
    refused = confirm_on_first_batch(candidate, None, {}, measure=measured(5.0, 5.2))
    assert refused.name == "fp32" and "4.00%" in refused.reason and "tolerance 1%" in refused.reason
    assert confirm_on_first_batch(candidate, None, {}, measure=measured(5.0, float("nan"))).name == "fp32"
    slow = confirm_on_first_batch(candidate, None, {}, measure=measured(5.0, 5.001, 1.0, 1.7))
    assert slow.name == "fp32" and "not faster" in slow.reason and "0.59x fp32" in slow.reason
    plain = Precision("fp32", "fp32: set by train.precision")
    assert confirm_on_first_batch(plain, None, {}, measure=never) is plain


def test_first_batch_measurement_of_a_real_model(llama_dir):
    model = loading.load_model(llama_dir, device="cpu", for_training=True)
    ids = torch.arange(2 * 24).reshape(2, 24) % model.config.vocab_size
    model.train()
    m = precision.measure_first_batch(model, {"input_ids": ids, "labels": ids})
    assert model.training and all(p.grad is None for p in model.parameters())  # mode back, no gradient left over
    assert m.fp32_loss != m.bf16_loss and abs(m.bf16_loss - m.fp32_loss) / m.fp32_loss < precision.LOSS_TOLERANCE
    assert m.fp32_seconds > 0 and m.bf16_seconds > 0


def _train(tmp_path, model_dir, data, *extra):
    return run(load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                                  "train.batch_size=4", "train.logging_steps=1", "train.save_steps=100",
                                  "data.max_length=48", "train.max_steps=2", "train.mfu_probe_seconds=0", *extra]))


@pytest.mark.parametrize("tolerance, expected", [(0.01, "bf16"), (-1.0, "fp32")])
def test_auto_on_a_faked_amx_cpu_trains_in_what_the_check_allows(tmp_path, monkeypatch, llama_dir, chat_file,
                                                                   tolerance, expected):
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset(AMX))
    monkeypatch.setattr(precision, "bf16_speedup", lambda device: 2.5)
    monkeypatch.setattr(precision, "LOSS_TOLERANCE", tolerance)  # -1: any gap fails the check
    monkeypatch.setattr(precision, "MIN_STEP_SPEEDUP", 0.0)  # the real losses are checked; the speed is not timed here
    result = _train(tmp_path, llama_dir, chat_file, "data.packing=true")
    assert result.metrics["precision"] == expected
    assert "first-batch loss" in result.metrics["precision_reason"]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rows and all(r["precision"] == expected for r in rows)
    assert rows[0]["precision_reason"] == result.metrics["precision_reason"]


class CrashAtStep3(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 2:  # checkpoint-2 is written
            raise RuntimeError("crash")


def test_a_resumed_run_keeps_the_precision_auto_chose(tmp_path, monkeypatch, llama_dir, chat_file):
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset(AMX))
    monkeypatch.setattr(precision, "bf16_speedup", lambda device: 2.5)
    monkeypatch.setattr(precision, "MIN_STEP_SPEEDUP", 0.0)
    settings = [f"model.path={llama_dir}", f"data.train=[{chat_file}]", f"train.output_dir={tmp_path / 'run'}",
                "train.batch_size=4", "train.logging_steps=1", "train.save_steps=2", "data.max_length=48",
                "train.max_steps=4", "train.mfu_probe_seconds=0", "train.resume=true"]
    with pytest.raises(RuntimeError, match="crash"):
        run(load_recipe(None, settings), callbacks=[CrashAtStep3()])
    assert {r["precision"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")} == {"bf16"}
    monkeypatch.setattr(precision, "LOSS_TOLERANCE", -1.0)  # measuring again would now give fp32
    resumed = run(load_recipe(None, settings))
    assert resumed.metrics["steps"] == 4 and resumed.metrics["precision"] == "bf16"
    assert resumed.metrics["precision_reason"].startswith("bf16: kept from the run being resumed (bf16 autocast")
