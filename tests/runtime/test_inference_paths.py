"""The inference paths call `tailor.runtime.enable` themselves, and eval.runtime / serve.runtime turn it off."""

import pytest

from tailor import runtime
from tailor.config import EvalConfig, ServeConfig

SPEEDUPS = ["decode_step", "routed_experts"]  # what a float DeepSeek-V3 gets on a CPU


@pytest.mark.parametrize("on", [True, False])
def test_eval_installs_the_runtime_unless_eval_runtime_is_false(deepseek_dir, chat_file, on):
    from tailor.evaluation.run import run

    cfg = EvalConfig(max_examples=2, max_new_tokens=2, efficiency_requests=1, runtime=on)
    result = run(deepseek_dir, [str(chat_file)], cfg)
    assert result.metrics["efficiency"]["runtime"] == (SPEEDUPS if on else [])


@pytest.mark.parametrize("on", [True, False])
def test_the_serving_engine_runs_the_runtime_unless_serve_runtime_is_false(deepseek_dir, on):
    from tailor.serving.server import build_engine

    engine = build_engine(deepseek_dir, ServeConfig(runtime=on))
    assert runtime.installed(engine.model) == (SPEEDUPS if on else [])


@pytest.mark.parametrize("on", [True, False])
def test_chat_and_the_before_after_measurement(deepseek_dir, on):
    from tailor.evaluation.measure import measure
    from tailor.serving.chat import load_chat_model

    model, _ = load_chat_model(deepseek_dir, runtime=on)
    assert runtime.installed(model) == (SPEEDUPS if on else [])
    assert measure(deepseek_dir, decode_tokens=2, runtime=on)["runtime_patches"] == (SPEEDUPS if on else [])
