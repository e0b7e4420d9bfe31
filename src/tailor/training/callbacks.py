"""Trainer callbacks: metrics to a JSONL file (TensorBoard comes from the Trainer itself)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback


class JsonlMetrics(TrainerCallback):
    """Append each log event (loss, learning rate, grad norm, tokens/s, eval loss, ...) to metrics.jsonl.

    `extras` are callables returning more fields for the row that are not TensorBoard scalars (e.g. the
    per-expert token counts of tailor.training.moe.ExpertLoad.jsonl_fields). tokens_per_second is measured
    here (wall time between log events) only when no earlier callback (tailor.training.telemetry) set it.
    """

    def __init__(self, path: str | Path, extras: list | None = None):
        self.path = Path(path)
        self.extras = list(extras or [])
        self._t0 = None
        self._tokens0 = 0

    def on_train_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()
        self._tokens0 = state.num_input_tokens_seen or 0
        if state.global_step > 0 and state.is_world_process_zero and self.path.is_file():
            self._trim_after(state.global_step)

    def _trim_after(self, step: int) -> None:
        """On resume, drop rows the interrupted run logged after the checkpoint (they are logged again), and a
        last line cut off by the crash, so every step appears once."""
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(self.path)

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen or 0
        if self._t0 is not None and now > self._t0 and tokens > self._tokens0 and "loss" in logs:
            # Added to the shared logs dict, so the TensorBoard callback (after this one) records it too.
            logs.setdefault("tokens_per_second", round((tokens - self._tokens0) / (now - self._t0), 1))
            self._t0, self._tokens0 = now, tokens
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        for extra in self.extras:
            row.update(extra())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


class ConsoleProgress(TrainerCallback):
    """One short line per log event when no terminal shows a progress bar (CI logs, pipes)."""

    def __init__(self, name: str = "train"):
        self.name = name

    def on_log(self, args, state, control, logs=None, **kw):
        import logging

        if not state.is_world_process_zero or not logs:
            return
        from tailor.training.telemetry import progress_text

        logging.getLogger("tailor").info(f"{self.name} step {state.global_step}/{state.max_steps}  {progress_text(logs)}".rstrip())
