"""Trainer callbacks: metrics to a JSONL file (TensorBoard comes from the Trainer itself)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback


class JsonlMetrics(TrainerCallback):
    """Append each log event (loss, learning rate, grad norm, tokens/s, eval loss, ...) to metrics.jsonl.

    `extras` are callables returning more fields for the row that are not TensorBoard scalars (e.g. the
    per-expert token counts of tailor.training.moe.ExpertLoad.jsonl_fields). Throughput figures come from
    tailor.training.telemetry, whose callbacks see each log event first.
    """

    def __init__(self, path: str | Path, extras: list | None = None):
        self.path = Path(path)
        self.extras = list(extras or [])

    def on_train_begin(self, args, state, control, **kw):
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
