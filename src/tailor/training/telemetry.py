"""What a training run reports while it runs: throughput, MFU, peak memory, a progress bar, a Prometheus endpoint.

The callbacks add their numbers to the Trainer's log events, so metrics.jsonl, TensorBoard, the console line
and Prometheus all show the same values. Per log event (every train.logging_steps optimizer steps):

- tokens_per_second: non-padding input tokens (the Trainer's num_input_tokens_seen) per second of optimizer
  steps in the window. Step time runs from fetching a step's micro-batches to the end of its optimizer step, so
  evaluation, checkpoint saving and logging between steps are left out.
- loss_bearing_tokens_per_second: the same for tokens whose prediction enters the loss (labels != -100 after
  the causal shift), summed over the gradient-accumulation micro-batches of each optimizer step.
- mfu: train_flops_per_token(model, mean padded sequence length) x tokens_per_second / (matmul peak x
  processes), where the
  peak is measured by `measure_matmul_peak` (tailor.plan.flops) on the training device, dtype and thread
  count before the first step (once per process and device/dtype/thread count; later runs in the process
  reuse it). MFU counts all processed tokens, not only loss-bearing ones.
- peak_memory_mb: since the start of training; CUDA max_memory_allocated, or on CPU the process's peak
  resident set size (reset at the start of training on Linux, so it covers this run).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from tailor.errors import TailorError
from tailor.training.trainer import BatchObserver

log = logging.getLogger("tailor")

_PEAKS: dict[tuple, float] = {}


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """Measured matmul FLOP/s for (device, dtype, threads), probed once per process and then reused."""
    from tailor.plan.flops import measure_matmul_peak

    key = (str(device), dtype, torch.get_num_threads())
    if key not in _PEAKS:
        _PEAKS[key] = measure_matmul_peak(device, dtype, seconds=seconds)
    return _PEAKS[key]


def reset_peak_memory(device: torch.device) -> str:
    """Start a new peak-memory window; returns what `peak_memory_bytes` will measure."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_memory_allocated"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, the peak resident set size
        return "cpu_peak_rss"
    except OSError:
        return "cpu_peak_rss_since_process_start"


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory since `reset_peak_memory`: CUDA allocated bytes, or the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    from tailor.plan.planner import proc_status_bytes

    hwm = proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB elsewhere


def _loss_bearing(batch: dict, shifted: bool) -> torch.Tensor | None:
    labels = batch.get("shift_labels")
    if labels is None:
        labels = batch.get("labels")
        if labels is None:
            return None
        labels = labels[..., 1:] if shifted else labels
    return labels.ne(-100).sum()


def _significant(x: float, digits: int = 4) -> float:
    """x to `digits` significant digits: a tiny model on a big GPU has an MFU of 1e-5, which round(x, 4) made 0."""
    return float(f"{x:.{digits}g}")


class Throughput(TrainerCallback, BatchObserver):
    """tokens/s, loss-bearing tokens/s, MFU and peak memory on every training log event; `summary()` for the run.

    A BatchObserver of TailorTrainer: `attach` (when the trainer is built) measures the matmul peak (when
    `probe_seconds` > 0; 0 = no MFU) and starts the peak-memory window; `on_batches` (the trainer's one fetch of
    each optimizer step's micro-batches) counts loss-bearing tokens and starts the step's clock.
    """

    def __init__(self, probe_seconds: float = 0.5):
        self.probe_seconds = probe_seconds
        self.peak_flops: float | None = None
        self.memory_source = ""
        self._trainer = None
        self._fpt: dict[int, float] = {}
        self._step_start: float | None = None
        self._lb_total = None            # loss-bearing tokens, a device tensor until read
        self._total = {"step_seconds": 0.0, "lengths": 0, "batches": 0, "tokens0": None}
        self._first_step: float | None = None  # the first optimizer step's seconds (warm-up: plan_check leaves it out)
        self._timed_steps = 0
        self._window = self._new_window()

    @staticmethod
    def _new_window() -> dict:
        return {"step_seconds": 0.0, "lb": None, "lengths": 0, "batches": 0, "tokens0": None}

    def attach(self, trainer) -> None:
        self._trainer = trainer
        device = trainer.args.device
        self.memory_source = reset_peak_memory(device)
        if self.probe_seconds > 0:
            dtype = torch.bfloat16 if trainer.args.bf16 else torch.float16 if trainer.args.fp16 else \
                next((p.dtype for p in trainer.model.parameters() if p.is_floating_point()), torch.float32)
            self.peak_flops = matmul_peak(device, dtype, self.probe_seconds)
            log.info("matmul peak on %s (%s, %d threads): %.1f GFLOP/s", device, str(dtype).replace("torch.", ""),
                     torch.get_num_threads(), self.peak_flops / 1e9)

    def on_batches(self, trainer, batches: list, started: float) -> None:
        self._step_start = started
        for acc in (self._window, self._total):
            if acc["tokens0"] is None:
                acc["tokens0"] = trainer.state.num_input_tokens_seen or 0
        for b in batches:
            if not isinstance(b, dict):
                continue  # GRPO's micro-batches are prompt rows: the tokens it trains on are generated later
            count = _loss_bearing(b, trainer.loss_shifts_labels)
            if count is not None:
                self._window["lb"] = count if self._window["lb"] is None else self._window["lb"] + count
            ids = b.get("input_ids", b.get("inputs_embeds"))
            if ids is not None:
                for acc in (self._window, self._total):
                    acc["lengths"] += ids.shape[1]
                    acc["batches"] += 1

    def on_step_end(self, args, state, control, **kw):
        if self._step_start is None:
            return
        if control.should_log and args.device.type == "cuda":
            torch.cuda.synchronize(args.device)  # queued kernels belong to this window's time
        spent = time.perf_counter() - self._step_start
        self._window["step_seconds"] += spent
        self._total["step_seconds"] += spent
        self._timed_steps += 1
        if self._first_step is None:
            self._first_step = spent
        self._step_start = None

    def _loss_bearing_count(self, t) -> int:
        if t is None:
            return 0
        if self._trainer is not None and self._trainer.args.world_size > 1:
            t = self._trainer.accelerator.gather(t.reshape(1)).sum()  # every rank logs, so every rank joins
            t = t // self._trainer.get_tp_size()  # a tensor-parallel group's processes share one batch
        return int(t.item())

    def _mfu(self, tokens: int, seconds: float, lengths: int, batches: int) -> float | None:
        if not self.peak_flops or not batches or seconds <= 0 or self._trainer is None:
            return None
        seq_len = max(1, round(lengths / batches))
        if seq_len not in self._fpt:
            from tailor.plan.flops import train_flops_per_token

            self._fpt[seq_len] = train_flops_per_token(self._trainer.model, seq_len)
        # tokens are the whole run's (all processes); the peak is one process's, measured by each on its own device
        return self._fpt[seq_len] * tokens / seconds / (self.peak_flops * self._trainer.args.world_size)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is None or "loss" not in logs or self._window["tokens0"] is None:
            return
        w, self._window = self._window, self._new_window()
        lb = self._loss_bearing_count(w["lb"])
        self._lb_total = lb + (self._lb_total or 0)
        tokens = (state.num_input_tokens_seen or 0) - w["tokens0"]
        secs = w["step_seconds"]
        if secs > 0:
            logs["tokens_per_second"] = round(tokens / secs, 1)
            logs["loss_bearing_tokens_per_second"] = round(lb / secs, 1)
        logs["loss_bearing_tokens"] = lb
        mfu = self._mfu(tokens, secs, w["lengths"], w["batches"])
        if mfu is not None:
            logs["mfu"] = _significant(mfu)
        logs["peak_memory_mb"] = round(peak_memory_bytes(args.device) / 2**20, 1)

    def summary(self, seconds: float) -> dict:
        """Run totals: loss-bearing tokens (and per second over `seconds`, the same wall time as the run's
        tokens_per_second), MFU over all optimizer-step time, peak memory and the matmul peak used."""
        if self._window["lb"] is not None:  # steps after the last log event
            self._lb_total = self._loss_bearing_count(self._window["lb"]) + (self._lb_total or 0)
            self._window["lb"] = None
        state = self._trainer.state if self._trainer is not None else None
        tokens = ((state.num_input_tokens_seen or 0) - (self._total["tokens0"] or 0)) if state else 0
        lb = self._lb_total or 0
        out = {"loss_bearing_tokens": lb, "loss_bearing_tokens_per_second": round(lb / max(seconds, 1e-9), 1),
               "step_seconds": round(self._total["step_seconds"], 3),
               "timed_steps": self._timed_steps, "first_step_seconds": round(self._first_step or 0.0, 4),
               "peak_memory_mb": round(peak_memory_bytes(self._trainer.args.device) / 2**20, 1) if self._trainer else None,
               "peak_memory_source": self.memory_source}
        mfu = self._mfu(tokens, self._total["step_seconds"], self._total["lengths"], self._total["batches"])
        if mfu is not None:
            out.update(mfu=_significant(mfu), matmul_peak_flops=self.peak_flops)
        return out


class RichProgress(TrainerCallback):
    """A rich progress bar on stderr with steps, elapsed time, ETA and the latest loss, tokens/s and MFU."""

    def __init__(self, name: str = "train", console=None):
        from rich.console import Console

        self.name = name
        self.console = console or Console(stderr=True)
        self.progress = None
        self.task = None

    def on_train_begin(self, args, state, control, **kw):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if not state.is_world_process_zero:
            return
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), console=self.console)
        self.progress.start()
        self.task = self.progress.add_task(self.name, total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.progress is None or not logs:
            return
        if "eval_loss" in logs:
            self.progress.console.print(f"{self.name} step {state.global_step}: eval loss {logs['eval_loss']:.4f}", highlight=False)
        if "loss" in logs:
            self.progress.update(self.task, info=progress_text(logs, _BAR_KEYS))

    def on_train_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


_FORMATS = {"loss": "loss {:.4f}", "eval_loss": "eval loss {:.4f}", "learning_rate": "lr {:.2e}",
            "grad_norm": "grad {:.2f}", "tokens_per_second": "{:.0f} tok/s",
            "loss_bearing_tokens_per_second": "{:.0f} loss tok/s", "mfu": "MFU {:.1%}",
            "peak_memory_mb": "{:.0f} MiB", "moe/cv": "expert CV {:.3f}"}
_BAR_KEYS = ("loss", "tokens_per_second", "mfu", "moe/cv")  # what fits beside the bar in an 80-column terminal


def progress_text(logs: dict, keys=tuple(_FORMATS)) -> str:
    """The short 'loss 2.1  lr 1e-4  ...' summary of a log event shown by the progress bar and console lines."""
    return "  ".join(_FORMATS[k].format(logs[k]) for k in keys if isinstance(logs.get(k), (int, float)))


# Log key -> (Prometheus gauge name, help). Counters are kept separately below.
_GAUGES = {
    "loss": ("tailor_train_loss", "Training loss of the last log window."),
    "eval_loss": ("tailor_train_eval_loss", "Validation loss of the last evaluation."),
    "learning_rate": ("tailor_train_learning_rate", "Learning rate at the last log event."),
    "grad_norm": ("tailor_train_grad_norm", "Gradient norm (before clipping) at the last log event."),
    "tokens_per_second": ("tailor_train_tokens_per_second", "Non-padding input tokens per second of optimizer steps."),
    "loss_bearing_tokens_per_second": ("tailor_train_loss_bearing_tokens_per_second", "Tokens with a loss (labels != -100) per second."),
    "mfu": ("tailor_train_mfu", "Model FLOPs utilisation against the measured matmul peak (0..1)."),
    "peak_memory_mb": ("tailor_train_peak_memory_mb", "Peak memory since training started, MiB (CUDA allocated or CPU RSS)."),
    "moe/cv": ("tailor_train_moe_load_cv_mean", "Mean over MoE layers of the expert-load coefficient of variation."),
}


class PrometheusExporter(TrainerCallback):
    """Serve the training metrics at http://HOST:PORT/metrics while the run trains (train.metrics_port).

    Gauges (tailor_train_loss, _learning_rate, _grad_norm, _tokens_per_second, _loss_bearing_tokens_per_second,
    _mfu, _peak_memory_mb, _eval_loss, _step, _max_steps, _epoch, _moe_load_cv{layer}, _moe_load_cv_mean) follow
    the log events; counters tailor_train_tokens_total, _loss_bearing_tokens_total and
    _moe_expert_tokens_total{layer, expert} add up the run. The server is bound at construction, so a busy port
    fails the run before any training, and stops when training ends.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", expert_load=None):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
        except ImportError:
            raise TailorError("train.metrics_port needs the prometheus-client package", where="train.metrics_port",
                              fix="pip install 'tailor[serve]' (or prometheus-client), or leave train.metrics_port unset") from None
        self.registry = CollectorRegistry()
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise TailorError(f"cannot serve training metrics on {host}:{port}: {exc.strerror or exc}",
                              where="train.metrics_port / train.metrics_host",
                              fix="choose a free port (or leave train.metrics_port unset to turn the endpoint off)") from None
        self.port = self.server.server_port
        self.expert_load = expert_load
        g = lambda name, doc, labels=(): Gauge(name, doc, labels, registry=self.registry)  # noqa: E731
        self.gauges = {key: g(name, doc) for key, (name, doc) in _GAUGES.items()}
        self.step, self.max_steps, self.epoch = g("tailor_train_step", "Optimizer steps done."), \
            g("tailor_train_max_steps", "Optimizer steps the run will take."), g("tailor_train_epoch", "Epochs done.")
        self.layer_cv = g("tailor_train_moe_load_cv", "Expert-load coefficient of variation per MoE layer.", ("layer",))
        self.tokens = Counter("tailor_train_tokens", "Non-padding input tokens trained on.", registry=self.registry)
        self.lb_tokens = Counter("tailor_train_loss_bearing_tokens", "Tokens with a loss trained on.", registry=self.registry)
        self.expert_tokens = Counter("tailor_train_moe_expert_tokens", "Tokens routed to each expert.", ("layer", "expert"),
                                     registry=self.registry)
        self._tokens_seen = None
        log.info("training metrics at http://%s:%d/metrics", host, self.port)

    def on_train_begin(self, args, state, control, **kw):
        self.max_steps.set(state.max_steps)
        self._tokens_seen = state.num_input_tokens_seen or 0

    def on_step_end(self, args, state, control, **kw):
        self.step.set(state.global_step)
        self.epoch.set(state.epoch or 0.0)

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs:
            return
        for key, gauge in self.gauges.items():
            if isinstance(logs.get(key), (int, float)):
                gauge.set(logs[key])
        for key, value in logs.items():
            if key.startswith("moe/layer") and key.endswith("/cv"):
                self.layer_cv.labels(layer=key.split("/")[1][len("layer"):]).set(value)
        if "loss" in logs:
            seen = state.num_input_tokens_seen or 0
            self.tokens.inc(max(0, seen - (self._tokens_seen or 0)))
            self._tokens_seen = seen
            self.lb_tokens.inc(logs.get("loss_bearing_tokens", 0))
            load = getattr(self.expert_load, "last_load", None) or {}
            for layer, counts in load.items():
                for expert, n in enumerate(counts):
                    self.expert_tokens.labels(layer=layer[len("layer"):], expert=str(expert)).inc(n)

    def on_train_end(self, args, state, control, **kw):
        self.close()

    def close(self) -> None:
        """Stop the HTTP server and free the port."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def telemetry_callbacks(recipe, model, tokenizer, main_process: bool = True) -> list:
    """The run's reporting callbacks, in the order they must see each log event: throughput/MFU/memory, MoE
    expert load (MoE models only), the Prometheus endpoint (train.metrics_port, main process only). They go
    before JsonlMetrics and TensorBoard in the Trainer's list, since those write what these add."""
    from tailor.training.moe import expert_load_callback

    t = recipe.train
    out: list = [Throughput(t.mfu_probe_seconds)]
    moe = expert_load_callback(model, recipe, getattr(tokenizer, "pad_token_id", None))
    if moe is not None:
        out.append(moe)
    if t.metrics_port and main_process:
        out.append(PrometheusExporter(t.metrics_port, t.metrics_host, expert_load=moe))
    return out


def jsonl_extras(callbacks: list) -> list:
    """Row fields for metrics.jsonl that are not TensorBoard scalars (per-expert counts)."""
    return [c.jsonl_fields for c in callbacks if hasattr(c, "jsonl_fields")]


def telemetry_summary(callbacks: list, seconds: float) -> dict:
    """Run totals for train_summary.json (see Throughput.summary); also stops a Prometheus endpoint still open."""
    out: dict = {}
    for c in callbacks:
        if isinstance(c, Throughput):
            out.update(c.summary(seconds))
        elif isinstance(c, PrometheusExporter):
            c.close()
    return out
