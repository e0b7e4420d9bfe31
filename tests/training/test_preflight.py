"""`tailor train`'s pre-flight: a run that cannot fit stops before loading weights; warn trains anyway; plan.json
and the predicted-vs-measured peak are written."""

import json

import pytest

from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training import train as run


def recipe(tmp_path, model_dir, data, *extra):
    return load_recipe(None, [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={tmp_path / 'run'}",
                              "train.batch_size=2", "train.max_steps=2", "data.max_length=32", *extra])


def test_a_run_that_cannot_fit_stops_before_loading_weights(tmp_path, llama_dir, chat_file, monkeypatch):
    import tailor.models.loading as loading

    def no_loading(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(loading, "load_model", no_loading)
    with pytest.raises(TailorError) as e:
        run(recipe(tmp_path, llama_dir, chat_file, "train.preflight_memory_gb=0.01"))
    assert "will not fit" in e.value.what and "train.preflight=warn" in e.value.fix
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["verdict"] == "does not fit" and plan["device_memory_gib"] == 0.01


def test_warn_trains_anyway_and_the_summary_holds_predicted_and_measured(tmp_path, llama_dir, chat_file):
    result = run(recipe(tmp_path, llama_dir, chat_file, "train.preflight_memory_gb=0.01", "train.preflight=warn",
                        "train.preflight_calibrate=true"))
    check = result.metrics["plan_check"]
    assert check["verdict"] == "does not fit" and check["predicted_peak_mb"] > 0 and check["measured_peak_mb"] > 0
    # the step time against the run's second step (the first is warm-up); the calibration's own steps would not
    # fit in a quarter of 0.01 GiB, so the plan says it used the default efficiency
    assert check["step_time_calibrated"] is False and check["predicted_step_seconds"] > 0
    assert check["measured_step_seconds"] > 0 and "step_time_error" in check
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert any("calibration skipped" in n for n in plan["not_modelled"])
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["plan_check"] == check
    assert (tmp_path / "run" / "plan.json").is_file()


def test_off_writes_no_plan(tmp_path, llama_dir, chat_file):
    result = run(recipe(tmp_path, llama_dir, chat_file, "train.preflight=off"))
    assert "plan_check" not in result.metrics and not (tmp_path / "run" / "plan.json").exists()


def test_a_calibrated_preflight_predicts_the_step_time_from_real_steps(tmp_path, llama_dir, chat_file):
    result = run(recipe(tmp_path, llama_dir, chat_file, "train.preflight_calibrate=true", "adapter.method=lora"))
    check = result.metrics["plan_check"]
    assert check["step_time_calibrated"] is True and check["predicted_step_seconds"] > 0
    speed = json.loads((tmp_path / "run" / "plan.json").read_text())["speed"]
    assert speed["method"] == "lora" and len(speed["points"]) == 3  # data.max_length=32: three batch sizes at 32
