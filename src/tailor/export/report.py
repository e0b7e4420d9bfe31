"""What an export cost: the source model measured in PyTorch (before), the exported artifact in its own runtime (after).

Before is `tailor.evaluation.measure.measure_isolated` on the source model, exactly as `tailor quantize` and
`tailor prune` measure. After depends on the format, each in a fresh Python process (peak memory is per process):

- safetensors: the exported directory loads in transformers, so it is `measure_isolated(out_dir)` as is;
- onnx: ONNX Runtime (`onnx_runtime.load_session` / `greedy`, KV cache), threads = torch's;
- torchscript: the traced module (`torchscript.load_torchscript` / `greedy`), which has no KV cache;
- gguf: llama.cpp through llama-cpp-python (n_threads = torch's); without it the after side has only the
  file's size and parameter count, and says the runtime is absent.
- web: the page's graph (OUT/model) in ONNX Runtime's Python API, as onnx; the browser's own time to first
  token and tokens/s are shown by the page (and compared with `tailor serve` by bench/bench_web.py).
- triton: the repository's ONNX model (NAME_onnx/1) in ONNX Runtime's Python API, as onnx; tritonserver is not
  run (the python models and the ensemble are checked by tests/export/test_triton.py).

The figures mean what they mean in measure.py: size of the files the runtime loads; parameters are the
elements of the stored weight tensors (ONNX: its initializers, so also constants such as rotary tables, and
tensors with identical values, e.g. untrained norm weights, once);
peak memory is the growth of the process's peak RSS over the RSS before loading, while loading and decoding;
decode tokens/s and time to first token come from greedy batch-of-one decoding of the same prompt
(`decode_tokens` new tokens, no early stop): time to first token is the best time of a one-token run and
tokens/s is (n - 1) / (best n-token time - best one-token time), as the runtimes' loops give no per-token
clock. With evaluation data the eval prompts are built by `encode_prompt` (the chat template code
`tailor eval` uses), answered greedily one at a time by the runtime, decoded and scored by
`tailor.evaluation.generation.score` (the scorer of `tailor eval`); perplexity runs each reference
conversation once through the runtime (empty cache) and scores its logits with `answer_nll` / the lm task,
the code `tailor eval` uses. The share of eval prompts whose greedy tokens equal PyTorch's (the source model
loaded as `tailor eval` loads it, batch of one) is an extra row.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tailor.config import MEASURE_MAX_EXAMPLES, EvalConfig
from tailor.errors import TailorError

RUNTIMES = {"safetensors": "transformers (PyTorch)", "onnx": "ONNX Runtime", "torchscript": "TorchScript",
            "gguf": "llama.cpp", "web": "ONNX Runtime (Python) on the page's graph; browser timings: in the page",
            "triton": "ONNX Runtime (Python) on the repository's model.onnx; tritonserver itself not run"}
EXTRA_ROWS = (  # key, label, lower is better: rows an export adds to measure.py's
    ("load_seconds", "load time (s)", True),
    ("greedy_agreement", "greedy tokens identical to PyTorch (share of eval prompts)", False),
)
REPORT_FILE = "export_report.json"


@dataclass
class ExportReport:
    path: Path                       # what the exporter wrote (a directory, or the .gguf file)
    before: dict | None = None
    after: dict | None = None
    table: list[dict] = field(default_factory=list)
    report: Path | None = None


def check_args(eval_data: list[str] | None, max_examples: int, measure: bool) -> None:
    """Refuse option combinations that cannot be measured, before anything slow runs."""
    if max_examples < 1:
        raise TailorError(f"--max-examples {max_examples}: at least one evaluation example is needed",
                          where="--max-examples", fix="pass a positive number (default 32)")
    if eval_data and not measure:
        raise TailorError("--eval-data is measured before and after the export; --no-measure skips that",
                          where="--no-measure", fix="drop --eval-data, or drop --no-measure")
    for p in eval_data or []:
        if not Path(p).is_file():
            raise TailorError(f"evaluation file not found: {p}", where="--eval-data",
                              fix="pass held-out chat records (or text) in .jsonl")


def load_eval(paths: list[str], max_examples: int) -> tuple[str, list[dict]]:
    """(task, records) that `measure` evaluates: chat records -> generation, anything else -> lm."""
    from tailor.evaluation.measure import task_of
    from tailor.evaluation import generation, lm

    task = task_of(paths)
    loader = generation.load_chat_records if task == "generation" else lm.load_rows
    return task, loader(paths, max_examples)


# ---------------------------------------------------------------------------------------------
# The runtimes: load, greedy decoding of one prompt, logits of one sequence, stored weights


def artifact_files(fmt: str, out: Path) -> list[Path]:
    """The files the runtime loads (weights and graph; not tokenizer or configs)."""
    if fmt == "onnx":
        return sorted(out.glob("model.onnx*"))  # the graph and its external data
    if fmt == "torchscript":
        return [out / "model.pt"]
    if fmt == "gguf":
        return [out] if out.is_file() else sorted(out.glob("*.gguf"))
    return sorted(out.glob("*.safetensors"))


class _Onnx:
    def __init__(self, out: Path, threads: int, n_ctx: int, pad: int):
        from tailor.export.onnx_runtime import load_session

        self.session, self.pad, self.out = load_session(out, threads), pad, out

    def greedy(self, prompt: list[int], n: int, eos: int | None) -> list[int]:
        from tailor.export.onnx_runtime import greedy

        return greedy(self.session, [prompt], n, eos, self.pad)[0]

    def logits(self, ids: list[int]) -> np.ndarray:
        from tailor.export.onnx_runtime import _empty_cache

        x = np.array([ids], dtype=np.int64)
        feeds = {"input_ids": x, "attention_mask": np.ones_like(x), "position_ids": np.arange(len(ids))[None],
                 **_empty_cache(self.session, 1)}
        return self.session.run(["logits"], feeds)[0][0]

    def weights(self) -> tuple[int, int]:
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(self.out / "model.onnx")).graph  # external data is read from the same folder
        arrays = [numpy_helper.to_array(t) for t in graph.initializer]
        return sum(a.size for a in arrays), sum(int(np.count_nonzero(a)) for a in arrays)


class _TorchScript:
    def __init__(self, out: Path, threads: int, n_ctx: int, pad: int):
        from tailor.export.torchscript import load_torchscript

        self.module = load_torchscript(out)

    def greedy(self, prompt: list[int], n: int, eos: int | None) -> list[int]:
        from tailor.export.torchscript import greedy

        return greedy(self.module, prompt, n, eos)

    @torch.no_grad()
    def logits(self, ids: list[int]) -> np.ndarray:
        x = torch.tensor([ids])
        with torch.jit.optimized_execution(False):  # see torchscript.greedy: re-profiling per length is slow
            return self.module(x, torch.ones_like(x))[0].float().numpy()

    def weights(self) -> tuple[int, int]:
        params = {id(p): p for p in self.module.parameters()}.values()  # tied weights once
        return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p)) for p in params)


class _LlamaCpp:
    def __init__(self, out: Path, threads: int, n_ctx: int, pad: int):
        from llama_cpp import Llama

        self.path = artifact_files("gguf", out)[0]
        self.kwargs = dict(model_path=str(self.path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                           verbose=False)
        self.llm, self.scorer = Llama(**self.kwargs, logits_all=False), None

    def greedy(self, prompt: list[int], n: int, eos: int | None) -> list[int]:
        self.llm.reset()  # no prefix reuse from the previous prompt: every run decodes its whole prompt
        new: list[int] = []
        for t in self.llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            new.append(int(t))
            if int(t) == eos or len(new) >= n:
                break
        return new

    def logits(self, ids: list[int]) -> np.ndarray:
        if self.scorer is None:  # a second context that keeps every position's logits (decoding needs only the last)
            from llama_cpp import Llama

            self.scorer = Llama(**self.kwargs, logits_all=True)
        self.scorer.reset()
        self.scorer.eval(ids)
        return np.array(self.scorer.scores[:len(ids)])

    def weights(self) -> tuple[int, int]:
        return gguf_weights(self.path)


def gguf_weights(path: Path) -> tuple[int, int]:
    """(elements, non-zero elements) of a GGUF file's tensors, quantized blocks dequantized to count zeros."""
    import gguf
    from gguf.quants import dequantize

    total = nonzero = 0
    for t in gguf.GGUFReader(str(path)).tensors:
        total += int(t.n_elements)
        nonzero += int(np.count_nonzero(dequantize(t.data, t.tensor_type)))
    return total, nonzero


_RUNTIME_CLASSES = {"onnx": _Onnx, "torchscript": _TorchScript, "gguf": _LlamaCpp}
_PARAMETER_NOTES = {
    "onnx": "elements of the graph's initializers: tensors with identical values are stored once by the exporter, "
            "and constants such as rotary tables count",
    "gguf": "elements of every tensor in the file, so also buffers PyTorch does not count as parameters "
            "(DeepSeek-V3's router selection bias e_score_correction_bias becomes exp_probs_b)",
}


class _LogitsModel(torch.nn.Module):
    """Lets tailor's own scoring code (`sequence_logprobs`) read logits from another runtime, row by row."""

    def __init__(self, logits_fn):
        super().__init__()
        self.logits_fn = logits_fn
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # the scorer asks for a device

    def forward(self, input_ids, attention_mask):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            n = sum(mask)  # right-padded (PadCollator): padding is never scored, its logits stay zero
            lg = self.logits_fn(ids[:n])
            rows.append(np.concatenate([lg, np.zeros((len(ids) - n, lg.shape[-1]), dtype=lg.dtype)]))
        return SimpleNamespace(logits=torch.from_numpy(np.stack(rows)))


def _speed(runtime, prompt: list[int], n: int, repeats: int = 3) -> dict:
    runtime.greedy(prompt, 2, None)  # warm-up
    firsts, fulls = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runtime.greedy(prompt, 1, None)
        firsts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        runtime.greedy(prompt, n, None)  # eos None: exactly n tokens, as min_new_tokens in measure.py
        fulls.append(time.perf_counter() - t0)
    gap = min(fulls) - min(firsts)
    return {"ttft_ms": 1000 * min(firsts), "decode_tokens_per_s": (n - 1) / gap if n > 1 and gap > 0 else None,
            "decode_new_tokens": n}


def measure_runtime(fmt: str, out: str | Path, tokenizer_dir: str | Path, eval_data: list[str] | None = None,
                    max_examples: int = MEASURE_MAX_EXAMPLES, max_new_tokens: int = 32, decode_tokens: int = 32,
                    threads: int | None = None) -> dict:
    """The after-figures of an onnx, torchscript or gguf export, measured in its own runtime (this process)."""
    from tailor.evaluation.measure import SPEED_PROMPT, rss_reset, status_kb
    from tailor.data.templates import encode_prompt
    from tailor.models.loading import load_tokenizer

    if fmt == "gguf":
        import llama_cpp  # noqa: F401  (code loaded once per process is not the model's footprint)
    elif fmt == "onnx":
        import onnxruntime  # noqa: F401
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    out = Path(out)
    tok = load_tokenizer(tokenizer_dir)
    cfg = EvalConfig(max_examples=max_examples, max_new_tokens=max_new_tokens, efficiency=False, batch_size=1)
    task, records = load_eval([str(p) for p in eval_data], max_examples) if eval_data else (None, [])
    prompts = [encode_prompt(tok, r["messages"]) for r in records] if task == "generation" else []
    speed_prompt = encode_prompt(tok, SPEED_PROMPT)
    longest = max([len(p) + max_new_tokens for p in prompts] + [len(speed_prompt) + decode_tokens, cfg.max_length])
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    rss0 = rss_reset()
    t0 = time.perf_counter()
    runtime = _RUNTIME_CLASSES[fmt](out, threads, longest + 16, pad)
    result = {"model_dir": str(out), "runtime": RUNTIMES[fmt], "threads": threads, "device": "cpu",
              "load_seconds": time.perf_counter() - t0,
              "size_on_disk_mb": sum(f.stat().st_size for f in artifact_files(fmt, out)) / 2**20}
    result.update(_speed(runtime, speed_prompt, decode_tokens))
    if rss0 is not None:  # before evaluation, as in measure.py
        result["peak_memory_mb"] = (status_kb("VmHWM") - rss0) / 1024
    result["parameters"], result["nonzero_parameters"] = runtime.weights()
    if fmt in _PARAMETER_NOTES:
        result["parameters_note"] = _PARAMETER_NOTES[fmt]
    if task is not None:
        result.update(_task_metrics(runtime, tok, task, records, prompts, cfg))
    return result


def _task_metrics(runtime, tok, task: str, records: list[dict], prompts: list[list[int]], cfg: EvalConfig) -> dict:
    from tailor.evaluation import generation, lm
    from tailor.evaluation import metrics as M
    from tailor.evaluation.scoring import answer_nll

    scorer = _LogitsModel(runtime.logits)
    if task == "lm":
        metrics, _ = lm.evaluate(scorer, tok, records, cfg)
        return {"perplexity": metrics["perplexity"], "perplexity_of": "text (lm task)", "main_metric": None,
                "main_metric_name": "none (text data has no answers to score)", "eval_task": task,
                "eval_examples": metrics["n"]}
    tokens = [runtime.greedy(p, cfg.max_new_tokens, tok.eos_token_id) for p in prompts]
    predictions = [tok.decode(t, skip_special_tokens=True).strip() for t in tokens]
    metrics, _ = generation.score(records, predictions, tok, tuple(cfg.refusal_patterns))
    nll, count, _ = answer_nll(scorer, tok, [r["messages"] for r in records], max_length=cfg.max_length, batch_size=1)
    name = "fact_accuracy" if "fact_accuracy" in metrics else "token_f1"
    return {"perplexity": M.perplexity(nll, count), "perplexity_of": "reference answers",
            "main_metric": metrics.get(name), "main_metric_name": name, "eval_task": task, "eval_examples": metrics["n"],
            "greedy_tokens": tokens, "predictions": predictions}


def measure_runtime_isolated(fmt: str, out: str | Path, tokenizer_dir: str | Path,
                             eval_data: list[str] | None = None, **kwargs) -> dict:
    """`measure_runtime` in a fresh Python process (as measure_isolated does for PyTorch models)."""
    from tailor.evaluation.measure import run_isolated

    kwargs.setdefault("threads", torch.get_num_threads())
    return run_isolated("tailor.export.report", {"fmt": fmt, "out": str(out), "tokenizer_dir": str(tokenizer_dir),
                                                 "eval_data": eval_data, "kwargs": kwargs},
                        f"measuring the {fmt} export {out}")


@torch.no_grad()
def torch_greedy(model_dir: str | Path, records: list[dict], max_new_tokens: int = 32) -> list[list[int]]:
    """PyTorch's greedy tokens (batch of one, up to and including eos) for each eval prompt, the model loaded
    as `tailor eval` loads it, without runtime speed-ups: the reference is transformers' own path."""
    from tailor.adapters.loading import load_any
    from tailor.data.templates import encode_prompt
    from tailor.models.generation import decoding_kwargs

    model, tok = load_any(model_dir)
    device = next(model.parameters()).device
    kwargs = decoding_kwargs(tok, max_new_tokens)
    out = []
    for r in records:
        ids = torch.tensor([encode_prompt(tok, r["messages"])], device=device)
        new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)[0, ids.shape[1]:].tolist()
        out.append(new[: new.index(tok.eos_token_id) + 1] if tok.eos_token_id in new else new)
    return out


# ---------------------------------------------------------------------------------------------
# The command: measure, export, measure, one table, export_report.json


def _tokenizer_dir(model_path: str | Path) -> Path:
    from tailor.adapters.loading import is_adapter_dir, tokenizer_dir

    return tokenizer_dir(model_path) if is_adapter_dir(model_path) else Path(model_path)


def _gguf_absent(path: Path) -> dict:
    size = sum(f.stat().st_size for f in artifact_files("gguf", path)) / 2**20
    params, nonzero = gguf_weights(artifact_files("gguf", path)[0])
    return {"model_dir": str(path), "runtime": "llama.cpp (absent)", "size_on_disk_mb": size, "parameters": params,
            "nonzero_parameters": nonzero, "parameters_note": _PARAMETER_NOTES["gguf"], "runtime_missing": "llama-cpp-python is not installed: speed, memory and "
            "task metrics of the GGUF file were not measured (pip install llama-cpp-python)"}


def _title(model_path, fmt: str, after: dict, options: dict) -> str:
    kind = fmt + (f" {options['outtype']}" if "outtype" in options else "")
    kind += f" ({options['exporter']} exporter)" if "exporter" in options else ""
    title = f"{kind} export of {model_path}: PyTorch (before) vs {after.get('runtime', RUNTIMES[fmt])} (after)"
    if fmt == "torchscript":
        title += "; TorchScript has no KV cache: every decoding step re-reads the whole sequence"
    if after.get("runtime_missing"):
        title += f"; {after['runtime_missing']}"
    return title


def table(before: dict, after: dict, title: str, console=None) -> list[dict]:
    """measure.py's before/after rows plus the export rows (load time, agreement with PyTorch), printed as one table."""
    from tailor.evaluation.measure import before_after_table

    return before_after_table(before, after, title, console=console, extra_rows=EXTRA_ROWS)


def export_with_report(model_path: str | Path, fmt: str, out_dir: str | Path, eval_data: list[str] | None = None,
                       max_examples: int = MEASURE_MAX_EXAMPLES, measure: bool = True, console=None, **options) -> ExportReport:
    """Export MODEL to OUT in `fmt` and (unless measure=False) measure the source model in PyTorch and the
    artifact in its own runtime, print one before/after table and write OUT/export_report.json."""
    from tailor.evaluation.measure import measure_isolated
    from tailor.export import check_format, run

    check_format(fmt)
    check_args(eval_data, max_examples, measure)
    task, records = load_eval(list(eval_data), max_examples) if eval_data else (None, [])  # data errors before work
    if not measure:
        return ExportReport(run(model_path, fmt, out_dir, **options))
    path = Path(run(model_path, fmt, out_dir, **options))  # first: a refused model costs no measurement
    before = measure_isolated(model_path, eval_data, max_examples=max_examples)
    out = path if path.is_dir() else path.parent
    if fmt == "safetensors":
        after = {**measure_isolated(path, eval_data, max_examples=max_examples), "runtime": RUNTIMES[fmt]}
        if task == "generation":
            after["greedy_tokens"] = torch_greedy(path, records)
    elif fmt == "gguf" and importlib.util.find_spec("llama_cpp") is None:
        after = _gguf_absent(path)
    elif fmt == "web":  # the page's graph and tokenizer (OUT/model), in ONNX Runtime's Python API
        after = {**measure_runtime_isolated("onnx", out / "model", out / "model", eval_data, max_examples=max_examples),
                 "runtime": RUNTIMES[fmt]}
    elif fmt == "triton":  # the repository's ONNX model and the python models' tokenizer
        models = json.loads((out / "export.json").read_text(encoding="utf-8"))["models"]
        after = {**measure_runtime_isolated("onnx", out / models["onnx"] / "1", out / models["preprocess"] / "1" / "tokenizer",
                                            eval_data, max_examples=max_examples), "runtime": RUNTIMES[fmt]}
    else:
        tok_dir = out if fmt != "gguf" else _tokenizer_dir(model_path)  # a GGUF folder has no HF tokenizer
        after = measure_runtime_isolated(fmt, path if fmt == "gguf" else out, tok_dir, eval_data,
                                         max_examples=max_examples)
    if task == "generation" and after.get("greedy_tokens") is not None:
        before["greedy_tokens"] = torch_greedy(model_path, records)
        same = [a == b for a, b in zip(after["greedy_tokens"], before["greedy_tokens"])]
        after["greedy_agreement"] = sum(same) / len(same) if same else None
        after["greedy_differs_at"] = [i for i, s in enumerate(same) if not s]
    if fmt == "gguf" and after.get("greedy_tokens") is not None:
        after["perplexity_note"] = "from llama.cpp's logits (Llama(logits_all=True).eval), one pass per conversation"
    title = _title(model_path, fmt, after, options)
    rows = table(before, after, title, console)
    report = out / REPORT_FILE
    report.write_text(json.dumps({"title": title, "format": fmt, "path": str(path), "rows": rows, "before": before,
                                  "after": after}, indent=2, default=str), encoding="utf-8")
    return ExportReport(path, before, after, rows, report)


if __name__ == "__main__":
    import sys

    from tailor.evaluation.measure import child_main

    child_main(sys.argv[1:], lambda a: measure_runtime(a["fmt"], a["out"], a["tokenizer_dir"], a["eval_data"],
                                                        **a["kwargs"]))
