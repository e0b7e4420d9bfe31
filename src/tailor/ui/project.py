"""The UI's workspace: the project a user builds page by page (its data, its model, its runs), kept on disk.

WORKSPACE/project.json holds the choices (data sources, split, chosen model); every page and every browser
reads the same file, so a second tab or a restarted UI continues where the last one stopped. Folders:
uploads/ (uploaded data), data/ (prepared data and its inspection), models/ (models built here), runs/
(training runs), evals/, ship/ (merged, quantized, exported models), chat/ (chat server logs).
"""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

from tailor.errors import TailorError

_LOCK = threading.Lock()
FOLDERS = ("uploads", "data", "models", "runs", "evals", "ship")


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.state_file = self.root / "project.json"

    def __getattr__(self, name: str) -> Path:
        if name in FOLDERS:
            return self.root / name
        raise AttributeError(name)

    def state(self) -> dict:
        if not self.state_file.is_file():
            return {"sources": [], "eval_share": 0.1, "model": None}
        return json.loads(self.state_file.read_text(encoding="utf-8"))

    def update(self, **values) -> dict:
        """Change some choices; written whole through a temporary file (never half a file)."""
        with _LOCK:
            state = {**self.state(), **values}
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
            tmp.replace(self.state_file)
            return state

    def new_dir(self, folder: str, name: str) -> Path:
        """A fresh folder WORKSPACE/folder/NAME (a suffix added when the name is taken)."""
        from tailor.ui.roots import safe_name

        base = safe_name(name or time.strftime("%Y%m%d-%H%M%S"))
        p, n = self.root / folder / base, 1
        while p.exists():
            p, n = self.root / folder / f"{base}-{n}", n + 1
        p.mkdir(parents=True)
        return p

    # -- the prepared data -----------------------------------------------------------------------
    @property
    def prepared_dir(self) -> Path:
        return self.data / "prepared"

    def eval_file(self) -> Path | None:
        """The held-out split of the prepared data (what Evaluate and Ship measure on)."""
        for split in ("eval", "test"):
            f = self.prepared_dir / f"{split}.jsonl"
            if f.is_file() and f.stat().st_size:
                return f
        return None


def _params_from_safetensors(files: list[Path]) -> int | None:
    """Parameter count from the safetensors headers alone (no tensor is read)."""
    total = 0
    try:
        for f in files:
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            for k, v in header.items():
                if k != "__metadata__":
                    count = 1
                    for d in v["shape"]:
                        count *= d
                    total += count
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return total


def model_summary(path: str | Path) -> dict:
    """What a model or adapter directory holds: kind, architecture, size, parameters (from files only).

    Raises TailorError for a folder that is neither (the message names what is missing)."""
    p = Path(path)
    if not p.is_dir():
        raise TailorError(f"{p} is not a folder", where="model", fix="pick a model directory (config.json + safetensors)")
    out: dict = {"path": str(p), "name": p.name if p.name != "final" else f"{p.parent.name}/final"}
    weights = sorted(p.glob("*.safetensors"))
    out["size_mb"] = round(sum(f.stat().st_size for f in weights) / 2**20, 2)
    out["parameters"] = _params_from_safetensors(weights)
    try:
        if (p / "adapter_config.json").is_file():
            cfg = json.loads((p / "adapter_config.json").read_text(encoding="utf-8"))
            out.update(kind="adapter", method=cfg.get("peft_type", "?").lower(), base=cfg.get("base_model_name_or_path"))
            return out
        if (p / "config.json").is_file():
            cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
            out.update(kind="model", architecture=(cfg.get("architectures") or [cfg.get("model_type", "?")])[0],
                       model_type=cfg.get("model_type"), layers=cfg.get("num_hidden_layers"),
                       hidden=cfg.get("hidden_size"), vocab=cfg.get("vocab_size"),
                       context=cfg.get("max_position_embeddings"), experts=cfg.get("n_routed_experts"))
            if not weights and not list(p.glob("*.bin")):
                raise TailorError(f"{p} has a config.json but no weights", where=str(p),
                                  fix="pick the folder that holds the model's *.safetensors files")
            return out
    except json.JSONDecodeError as exc:
        raise TailorError(f"{p}: unreadable config ({exc})", where=str(p), fix="the model folder is damaged; copy it again") from None
    raise TailorError(f"{p} is not a model or adapter directory (no config.json, no adapter_config.json)", where=str(p),
                      fix="pick a Hugging Face model folder, or build one from a preset")


def find_models(roots: list[Path], depth: int = 4, limit: int = 200) -> list[dict]:
    """Model and adapter directories under the roots (checkpoint-N folders skipped), newest first."""
    found: list[tuple[float, Path]] = []

    def walk(d: Path, level: int) -> None:
        if len(found) >= limit or level > depth:
            return
        try:
            children = list(d.iterdir())
        except OSError:
            return
        names = {c.name for c in children}
        if "config.json" in names or "adapter_config.json" in names:
            if not d.name.startswith("checkpoint-"):
                found.append((d.stat().st_mtime, d))
            return
        for c in children:
            if c.is_dir() and not c.name.startswith((".", "checkpoint-", "tokenized", "__")) and c.name not in ("jobs", "tensorboard"):
                walk(c, level + 1)

    for r in roots:
        walk(r, 0)
    out = []
    for _, d in sorted(found, reverse=True):
        try:
            out.append(model_summary(d))
        except TailorError as exc:
            out.append({"path": str(d), "name": d.name, "kind": "unreadable", "error": exc.what})
    return out


def read_metrics(run_dir: str | Path, after: int = 0) -> list[dict]:
    """Rows of a run's metrics.jsonl from line `after` on (a half-written last line is left for the next read)."""
    f = Path(run_dir) / "metrics.jsonl"
    if not f.is_file():
        return []
    rows = []
    with f.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < after or not line.endswith("\n"):
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rows.append({})
    return rows
