"""What a compression step cost: `measure(model_dir)` before and after, and one table comparing them.

Figures: size on disk (weight files), parameter count (a quantized weight counts as the weights it
stands for; zeros from pruning are counted separately), peak memory while loading and running,
CPU decode tokens/s and time to first token (greedy, batch of one), and with evaluation data the
perplexity and the main metric, computed by `tailor.evaluation.run.run` exactly as `tailor eval` does:
chat records -> the generation task (main metric fact_accuracy when records carry an `answer`, else
token_f1; perplexity of the reference answers), text records -> the lm task (perplexity of the text).

Peak memory is the growth of the process's peak resident set size (Linux VmHWM, reset through
/proc/self/clear_refs before loading) over the resident size before loading, while loading and
decoding (evaluation comes after, so its metric libraries are not counted); elsewhere it is None.
It includes the modeling code and buffers transformers loads with the model, so on a tiny model it
is mostly that fixed cost.
"""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path

import torch

from tailor.config import MEASURE_MAX_EXAMPLES, EvalConfig
from tailor.errors import TailorError

ROWS = (  # key, label, lower is better
    ("size_on_disk_mb", "size on disk (MiB)", True),
    ("parameters", "parameters", True),
    ("nonzero_parameters", "non-zero parameters", True),
    ("peak_memory_mb", "peak memory (MiB)", True),
    ("decode_tokens_per_s", "CPU decode tokens/s", False),
    ("ttft_ms", "time to first token (ms)", True),
    ("perplexity", "perplexity", True),
    ("main_metric", "main metric", False),
)
SPEED_PROMPT = [{"role": "user", "content": "What is the return policy for laptops?"}]


def rss_reset() -> float | None:
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return status_kb("VmRSS")
    except OSError:
        return None


def status_kb(key: str) -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return None


def weights_size(model_dir: str | Path) -> int:
    """Bytes of the weight files (*.safetensors) in a model directory."""
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))


def count_weights(model) -> tuple[int, int]:
    """(parameters, non-zero parameters), quantized layers counted as the float weights they replace."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from tailor.runtime.quantized import Int4WeightLinear, Int8Experts, Int8WeightLinear

    total = nonzero = 0
    seen = set()  # shared (tied) parameters count once
    for module in model.modules():
        tensors = []
        if isinstance(module, (Int8WeightLinear, Int4WeightLinear)):
            total += module.in_features * module.out_features
            nonzero += module.in_features * module.out_features
        elif isinstance(module, Int8Experts):
            tensors += [module.gate_up_qweight, module.down_qweight]
        elif isinstance(module, DynamicLinear):
            w, _ = module._packed_params._weight_bias()  # the bias is counted below if it is a parameter
            tensors.append(w.int_repr())
            if module.bias() is not None:
                tensors.append(module.bias())
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                tensors.append(p)
        for t in tensors:
            state = getattr(t, "quant_state", None)  # bitsandbytes 4-bit: two weights packed in each byte
            if state is not None:
                total += math.prod(state.shape)
                nonzero += math.prod(state.shape)  # packed codes say nothing about zeros: counted as non-zero
                continue
            total += t.numel()
            nonzero += int(torch.count_nonzero(t))
    return total, nonzero


@torch.no_grad()
def decode_speed(model, tokenizer, messages: list[dict] | None = None, new_tokens: int = 32, repeats: int = 3) -> dict:
    """Greedy single-request decoding: time to first token and tokens/s after it (best of `repeats`)."""
    from tailor.data.templates import encode_prompt
    from tailor.evaluation.efficiency import TokenClock

    device = next(model.parameters()).device
    ids = torch.tensor([encode_prompt(tokenizer, messages or SPEED_PROMPT)], device=device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, min_new_tokens=2,
                   do_sample=False, pad_token_id=tokenizer.pad_token_id)  # warm-up
    best_rate, best_ttft = 0.0, math.inf
    for _ in range(repeats):
        clock = TokenClock()
        t0 = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=clock, **kwargs)
        if len(clock.times) >= 2:
            best_rate = max(best_rate, (len(clock.times) - 1) / (clock.times[-1] - clock.times[0]))
        if clock.times:
            best_ttft = min(best_ttft, clock.times[0] - t0)
    return {"decode_tokens_per_s": best_rate or None, "ttft_ms": 1000 * best_ttft if best_ttft < math.inf else None,
            "decode_new_tokens": new_tokens}


def task_of(paths: list[str]) -> str:
    from tailor.evaluation.generation import load_chat_records

    try:
        load_chat_records(paths, 1)
        return "generation"
    except TailorError:
        return "lm"


def measure(model_dir: str | Path, eval_data: list[str] | str | None = None, max_examples: int = MEASURE_MAX_EXAMPLES,
            max_new_tokens: int = 32, decode_tokens: int = 32, model=None, tokenizer=None,
            threads: int | None = None, runtime: bool = True) -> dict:
    """Size, parameters, peak memory, decode speed, and (with eval_data) perplexity and the main metric.

    A model loaded here gets the CPU speed-ups of `tailor.runtime.enable` unless `runtime` is False, as
    `tailor eval` loads it; `runtime_patches` in the result names those installed."""
    # Imported before the memory baseline: code loaded once per process is not the model's footprint.
    import transformers.generation.utils  # noqa: F401
    from transformers import AutoModelForCausalLM  # noqa: F401

    from tailor import runtime as speedups
    from tailor.adapters.loading import load_any
    from tailor.evaluation.run import run

    if threads:
        torch.set_num_threads(threads)
    rss0 = rss_reset()
    t0 = time.perf_counter()
    if model is None:
        model, tokenizer = load_any(model_dir)
        if runtime:
            speedups.enable(model)
    result = {"model_dir": str(model_dir), "size_on_disk_mb": weights_size(model_dir) / 2**20,
              "load_seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
              "runtime_patches": speedups.installed(model)}
    result["parameters"], result["nonzero_parameters"] = count_weights(model)
    result["device"] = next(model.parameters()).device.type
    result.update(decode_speed(model, tokenizer, new_tokens=decode_tokens))
    if rss0 is not None:  # before evaluation, whose metric libraries would be counted too
        result["peak_memory_mb"] = (status_kb("VmHWM") - rss0) / 1024
    if eval_data:
        paths = [eval_data] if isinstance(eval_data, (str, Path)) else list(eval_data)
        paths = [str(p) for p in paths]
        task = task_of(paths)
        cfg = EvalConfig(task=task, max_examples=max_examples, max_new_tokens=max_new_tokens, efficiency=False,
                         batch_size=8)
        metrics = run(model_dir, paths, cfg, model=model, tokenizer=tokenizer).metrics
        if task == "generation":
            name = "fact_accuracy" if "fact_accuracy" in metrics else "token_f1"
            result.update(perplexity=metrics["answer_perplexity"], perplexity_of="reference answers",
                          main_metric=metrics.get(name), main_metric_name=name)
        else:
            result.update(perplexity=metrics["perplexity"], perplexity_of="text (lm task)", main_metric=None,
                          main_metric_name="none (text data has no answers to score)")
        result["eval_task"], result["eval_examples"] = task, metrics.get("n")
    return result


def measure_isolated(model_dir: str | Path, eval_data: list[str] | str | None = None, **kwargs) -> dict:
    """`measure` in a fresh Python process, so that the figures of one model are not shifted by the
    memory, caches and warmed-up code another model left behind in this process."""
    kwargs.setdefault("threads", torch.get_num_threads())  # the child would otherwise take every core
    return run_isolated("tailor.evaluation.measure", {"model_dir": str(model_dir), "eval_data": eval_data,
                                                        "kwargs": kwargs}, f"measuring {model_dir}")


def run_isolated(module: str, args: dict, what: str) -> dict:
    """Run `python -m module ARGS_JSON` in a fresh process and return the JSON it wrote to args["result"]; a
    TailorError raised there is raised here (the child's side is `child_main`)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, "-m", module, json.dumps({**args, "result": str(result_file)})],
                              capture_output=True, text=True)
        if not result_file.is_file():
            raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(result_file.read_text(encoding="utf-8"))
    if "error" in result:
        raise TailorError(**result["error"])
    return result


def child_main(argv: list[str], work) -> None:
    """The child side of `run_isolated`: quiet logging, `work(args)`, its result (or TailorError) as JSON."""
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    args = json.loads(argv[0])
    try:
        result = work(args)
    except TailorError as e:
        result = {"error": {"what": e.what, "where": e.where, "fix": e.fix}}
    Path(args["result"]).write_text(json.dumps(result, default=str), encoding="utf-8")


def fmt_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def before_after_table(before: dict, after: dict, title: str = "before / after", console=None,
                       out: str | Path | None = None, extra_rows: tuple = ()) -> list[dict]:
    """Print the comparison with rich; with `out`, save it (and both measurements) as JSON. Returns the rows.

    `extra_rows`: more (key, label, lower_is_better) rows after the standard ones, e.g. export's load time."""
    from rich.console import Console
    from rich.table import Table

    rows = []
    for key, label, lower_better in (*ROWS, *extra_rows):
        b, a = before.get(key), after.get(key)
        if b is None and a is None:
            continue
        if key == "main_metric":
            label = f"{label}: {after.get('main_metric_name') or before.get('main_metric_name')}"
        if key == "decode_tokens_per_s" and (after.get("device") or before.get("device") or "cpu") != "cpu":
            label = f"{(after.get('device') or before.get('device')).upper()} decode tokens/s"
        ratio = a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
        rows.append({"metric": label, "key": key, "before": b, "after": a, "after/before": ratio,
                     "lower_is_better": lower_better})
    table = Table(title=title)
    for col, justify in (("metric", "left"), ("before", "right"), ("after", "right"), ("after/before", "right")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["metric"], fmt_value(r["before"]), fmt_value(r["after"]),
                      f"{r['after/before']:.3f}x" if r["after/before"] is not None else "-")
    (console or Console()).print(table)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"title": title, "rows": rows, "before": before, "after": after}, indent=2,
                                        default=str), encoding="utf-8")
    return rows


if __name__ == "__main__":
    import sys

    child_main(sys.argv[1:], lambda a: measure(a["model_dir"], a["eval_data"], **a["kwargs"]))
