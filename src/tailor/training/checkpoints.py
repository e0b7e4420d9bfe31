"""Crash-safe checkpoints: a manifest written last, completeness checks, rotation, resume compatibility.

transformers' Trainer writes each `checkpoint-N` folder file by file (weights, optimizer, scheduler, scaler,
RNG states, trainer_state.json). A process killed in the middle leaves a folder that looks like a checkpoint.
Here a checkpoint counts as complete only when its `manifest.json` exists and every file it lists has the
recorded size and sha256. The manifest is written after all other files (which are fsync'ed first), through
a temporary file and an atomic rename, so no crash can leave a complete-looking checkpoint behind.

The manifest also records what the run was (the resolved recipe, a fingerprint of the tokenized data, the
step, library versions), so a resume with a recipe that would change the result is refused, naming the
changed settings, unless train.resume_force is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from tailor.config import Recipe
from tailor.errors import TailorError

log = logging.getLogger("tailor")

MANIFEST = "manifest.json"
FORMAT = 1
PREFIX = "checkpoint-"

# Settings that never change the trained weights: a resume may change them freely.
SAFE_KEYS = frozenset({
    "train.output_dir", "train.logging_steps", "train.save_steps", "train.save_total_limit", "train.keep_best",
    "train.eval_steps", "train.resume", "train.resume_force", "train.metrics_port", "train.metrics_host",
    "train.mfu_probe_seconds", "data.num_proc", "data.prepared_dir",
})
SAFE_SECTIONS = frozenset({"eval", "serve"})  # other stages' settings
# Evaluation and checkpoint timing decide the result when the validation loss drives training.
VALIDATION_TIMING = frozenset({"train.eval_steps", "train.save_steps"})


# ---------------------------------------------------------------------------------------------
# Listing and verification


def checkpoint_step(path: Path) -> int | None:
    """N of a `checkpoint-N` folder, None for any other name."""
    tail = path.name[len(PREFIX):] if path.name.startswith(PREFIX) else ""
    return int(tail) if tail.isdigit() else None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Every `checkpoint-N` folder in `output_dir`, complete or not, oldest step first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def read_manifest(checkpoint: str | Path) -> dict | None:
    """The checkpoint's manifest, or None when it has none (or an unreadable one)."""
    path = Path(checkpoint) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def incomplete_reason(checkpoint: str | Path, full: bool = True) -> str | None:
    """Why `checkpoint` is not a complete checkpoint, or None when it is.

    Sizes are always checked; `full` also recomputes every sha256 (reads all bytes once).
    """
    ckpt = Path(checkpoint)
    manifest = read_manifest(ckpt)
    if manifest is None:
        return f"no readable {MANIFEST} (its save was interrupted, or an older tailor wrote it)"
    for rel, meta in sorted(manifest["files"].items()):
        path = ckpt / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != meta.get("bytes"):
            return f"{rel} has {size} bytes, the manifest says {meta.get('bytes')}"
        if full and _sha256(path) != meta.get("sha256"):
            return f"{rel} does not match its sha256 in the manifest"
    return None


def latest_checkpoint(output_dir: str | Path, verify: bool = True) -> Path | None:
    """The newest complete checkpoint-N folder: its manifest.json exists and every file matches its sha256
    (with verify=False only the sizes are checked: cheap, for deciding whether a run directory is in use).

    Newer incomplete folders (a save cut short by a crash) are skipped with a warning naming them.
    """
    for ckpt in reversed(list_checkpoints(output_dir)):
        reason = incomplete_reason(ckpt, full=verify)
        if reason is None:
            return ckpt
        log.warning("skipping %s: %s", ckpt, reason)
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Writing


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose numerics a checkpoint depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("tailor", "torch", "transformers", "peft", "accelerate", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_manifest(checkpoint: str | Path, info: dict) -> Path:
    """Hash and fsync every file in `checkpoint`, then write `info` + the file list as manifest.json atomically.

    Returns the manifest path. Any earlier manifest is replaced, never left half-written.
    """
    ckpt = Path(checkpoint)
    files = {}
    for path in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        rel = path.relative_to(ckpt).as_posix()
        if rel == MANIFEST or rel.startswith(f".{MANIFEST}."):
            continue
        with path.open("rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            os.fsync(f.fileno())  # on disk before the manifest that vouches for it
        files[rel] = {"bytes": path.stat().st_size, "sha256": h.hexdigest()}
    manifest = {"format": FORMAT, **info, "files": files}
    target = ckpt / MANIFEST
    tmp = ckpt / f".{MANIFEST}.{os.getpid()}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(ckpt)
    return target


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_checkpoint(checkpoint: Path) -> None:
    """Delete a checkpoint, manifest first: a deletion cut short leaves an incomplete folder, never a broken 'complete' one."""
    (checkpoint / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(checkpoint, ignore_errors=True)


def rotate(output_dir: str | Path, keep: int, protect: set[Path] | None = None, keep_best: bool = True,
           greater_is_better: bool = False) -> list[Path]:
    """Keep the newest `keep` complete checkpoints, `protect`, and with `keep_best` the best-scoring one; delete the rest.

    The best is the complete checkpoint whose manifest `metric.value` is best (the earliest on ties).
    Incomplete folders older than the newest complete checkpoint are leftovers of interrupted saves the
    run has moved past: they go too. Returns the deleted folders.
    """
    ckpts = list_checkpoints(output_dir)
    complete = [c for c in ckpts if incomplete_reason(c, full=False) is None]
    keep_set = {c.name for c in complete[-keep:]} | {Path(p).name for p in (protect or set())}
    scored = [(m["metric"]["value"], checkpoint_step(c), c) for c in complete
              if (m := read_manifest(c)) and isinstance(m.get("metric"), dict) and m["metric"].get("value") is not None]
    if keep_best and scored:
        sign = -1 if greater_is_better else 1
        keep_set.add(min(scored, key=lambda s: (sign * s[0], s[1]))[2].name)
    newest_complete = checkpoint_step(complete[-1]) if complete else None
    removed = []
    for c in ckpts:
        if c.name in keep_set:
            continue
        if c not in complete and (newest_complete is None or checkpoint_step(c) > newest_complete):
            continue  # may be a save in progress, or the only trace of one
        if c not in complete:
            log.warning("removing %s: an interrupted save the run has moved past", c)
        remove_checkpoint(c)
        removed.append(c)
    return removed


# ---------------------------------------------------------------------------------------------
# Data fingerprint and resume compatibility


def data_fingerprint(dataset) -> str | None:
    """sha256 of a tokenized dataset's rows (every column, in order), or None for no dataset.

    `datasets.Dataset` columns are hashed through Arrow in batches (fast on millions of rows); other
    datasets row by row.
    """
    if dataset is None:
        return None
    if not hasattr(dataset, "__len__"):
        log.warning("the training data is a stream without a length: checkpoints cannot fingerprint it, so a resume "
                    "cannot check that the data are unchanged")
        return None
    import numpy as np

    h = hashlib.sha256(f"rows={len(dataset)}".encode())
    try:
        from datasets import Dataset
    except ImportError:  # pragma: no cover - datasets is a core dependency
        Dataset = ()
    if isinstance(dataset, Dataset):
        import pyarrow as pa
        import pyarrow.compute as pc

        columns = sorted(dataset.column_names)
        arrow = dataset.with_format("arrow")
        for start in range(0, len(dataset), 8192):
            table = arrow[start:start + 8192]
            for name in columns:
                col = table.column(name).combine_chunks()
                h.update(name.encode())
                if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                    h.update(pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
                    values = pc.list_flatten(col)
                    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
                        kind = np.float64 if pa.types.is_floating(values.type) else np.int64
                        h.update(values.to_numpy(zero_copy_only=False).astype(kind).tobytes())
                    else:
                        h.update(json.dumps(values.to_pylist(), default=str).encode())
                else:
                    h.update(json.dumps(col.to_pylist(), default=str).encode())
        return h.hexdigest()
    for i in range(len(dataset)):
        row = dataset[i]
        for name in sorted(row):
            h.update(name.encode())
            value = row[name]
            if hasattr(value, "tolist"):
                value = value.tolist()
            h.update(json.dumps(value, default=str).encode())
    return h.hexdigest()


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def changed_settings(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for each recipe setting that differs and changes the trained result."""
    a, b = _flatten(old), _flatten(new)
    t = new.get("train", {})
    timing_matters = bool(t.get("early_stopping_patience")) or t.get("scheduler") == "reduce_on_plateau"
    lines = []
    for key in sorted(set(a) | set(b)):
        if key.split(".", 1)[0] in SAFE_SECTIONS:
            continue
        if key in SAFE_KEYS and not (timing_matters and key in VALIDATION_TIMING):
            continue
        before, after = a.get(key, "(absent)"), b.get(key, "(absent)")
        if before != after:
            lines.append(f"{key}: {before!r} -> {after!r}")
    return lines


def check_resume(checkpoint: Path, recipe: Recipe, fingerprints: dict | None = None, processes: int | None = None) -> None:
    """Refuse (TailorError) to resume `checkpoint` with a recipe, data or process count that would change the result.

    Without `fingerprints` the recipe is compared (cheap: before anything loads); with them ({"train": ...,
    "eval": ...}) the tokenized data and the number of `processes` (which splits every batch) are.
    With train.resume_force the differences are logged as a warning instead. A library version change
    is only a warning: the run continues, possibly not bit for bit.
    """
    manifest = read_manifest(checkpoint) or {}
    lines = []
    if fingerprints is None:
        lines = changed_settings(manifest.get("recipe", {}), recipe.model_dump(mode="json"))
        versions = manifest.get("versions", {})
        moved = [f"{k} {versions[k]} -> {v}" for k, v in library_versions().items() if k in versions and versions[k] != v]
        if moved:
            log.warning("resuming %s with other library versions (%s): the result may differ in the last bits",
                        checkpoint.name, ", ".join(moved))
    else:
        saved = manifest.get("data", {})
        lines = [f"data fingerprint ({split}): {saved.get(split)} -> {fp}" for split, fp in fingerprints.items()
                 if saved.get(split) != fp]
        if processes is not None and manifest.get("processes", 1) != processes:
            lines.append(f"processes: {manifest.get('processes', 1)} -> {processes}")
    if not lines:
        return
    what = "settings" if fingerprints is None else "tokenized data or process count"
    if recipe.train.resume_force:
        log.warning("train.resume_force: resuming %s although its %s differ (the result will not match an "
                    "uninterrupted run):\n    %s", checkpoint, what, "\n    ".join(lines))
        return
    raise TailorError(f"cannot resume {checkpoint.name}: these {what} differ from the ones it was trained with, "
                      f"which would change the result:\n    " + "\n    ".join(lines),
                      where=str(checkpoint / MANIFEST),
                      fix="restore them to resume exactly, choose a new train.output_dir to start over, or set "
                          "train.resume_force=true to continue anyway")


# ---------------------------------------------------------------------------------------------
# The Trainer callback


class CheckpointManifest(TrainerCallback):
    """Seal each checkpoint the Trainer writes with a manifest, then rotate (last K complete + the best).

    Add it after every callback that writes into checkpoints (e.g. WeightEMA): `on_save` runs in callback
    order, and the manifest must come last. The Trainer's own rotation must be off (save_total_limit=None).
    With validation data and `keep_best`, an evaluation that beats every earlier one also forces a save, so
    the best weights seen are always on disk.
    """

    def __init__(self, recipe: Recipe, fingerprints: dict, metric: str | None):
        t = recipe.train
        self.recipe = recipe.model_dump(mode="json")
        self.fingerprints = fingerprints
        self.keep = t.save_total_limit
        self.keep_best = t.keep_best
        self.metric = None if metric is None else (metric if metric.startswith("eval_") else f"eval_{metric}")
        self.greater_is_better = metric is not None and not metric.endswith("loss")
        self.best: float | None = None
        self.training = False

    def _dir(self, args, state) -> Path:
        return Path(args.output_dir) / f"{PREFIX}{state.global_step}"

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.greater_is_better else value < self.best

    def on_train_begin(self, args, state, control, **kw):
        self.training = True
        self.best = None
        for row in state.log_history:  # a resumed run knows the evaluations before its checkpoint
            if self.metric in row and self._better(row[self.metric]):
                self.best = row[self.metric]

    def on_train_end(self, args, state, control, **kw):
        self.training = False

    def _clear_stale(self, args, state) -> None:
        # A folder at the step about to be saved is the leftover of an interrupted save: clear it so no stale file stays.
        stale = self._dir(args, state)
        if state.is_world_process_zero and stale.is_dir():
            log.warning("removing %s before saving it again (left by an interrupted save)", stale)
            remove_checkpoint(stale)
        _barrier()  # no process writes into the folder before it is gone

    def on_step_end(self, args, state, control, **kw):
        if control.should_save:
            self._clear_stale(args, state)

    def on_epoch_end(self, args, state, control, **kw):
        if control.should_save:
            self._clear_stale(args, state)

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        value = (metrics or {}).get(self.metric) if self.metric else None
        if self.training and value is not None and self._better(value):
            self.best = value
            if self.keep_best and not control.should_save:
                control.should_save = True
                self._clear_stale(args, state)

    def on_save(self, args, state, control, **kw):
        _barrier()  # every process has written its files (sharded weights, per-rank RNG states)
        if state.is_world_process_zero:
            ckpt = self._dir(args, state)
            score = next((row[self.metric] for row in reversed(state.log_history)
                          if self.metric and row.get("step") == state.global_step and self.metric in row), None)
            write_manifest(ckpt, {
                "step": state.global_step,
                "epoch": state.epoch,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "metric": {"name": self.metric, "value": score, "greater_is_better": self.greater_is_better}
                if score is not None else None,
                "recipe": self.recipe,
                "data": self.fingerprints,
                "processes": args.world_size,
                "versions": library_versions(),
            })
            protect = {Path(state.best_model_checkpoint)} if state.best_model_checkpoint else set()
            rotate(args.output_dir, self.keep, protect | {ckpt}, self.keep_best, self.greater_is_better)
        _barrier()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
