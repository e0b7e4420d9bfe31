"""Reading metrics files and printing the registry for `tailor registry list|show|register`."""

from __future__ import annotations

import json
from pathlib import Path

from tailor.errors import TailorError
from tailor.mlops.registry import ModelVersion


def read_metrics(path: str | Path) -> dict:
    """Scalar metrics from a JSON file (e.g. `tailor eval --out`'s eval_results.json); nested sections become 'a/b'."""
    p = Path(path)
    if not p.is_file():
        raise TailorError(f"metrics file not found: {p}", where="--metrics", fix="pass a JSON file, e.g. EVAL_DIR/eval_results.json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TailorError(f"the metrics file is not valid JSON: {exc.msg}", where=f"{p}:{exc.lineno}") from None
    if not isinstance(data, dict):
        raise TailorError("the metrics file must hold a JSON object of metric -> value", where=str(p))

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if k in ("worst_examples", "files", "confusion_matrix", "most_confused"):
                continue
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}/"))
            elif isinstance(v, (int, float, str, bool)) or v is None:
                out[f"{prefix}{k}"] = v
        return out

    return flat(data)


_SHOWN_METRICS = ("answer_perplexity", "perplexity", "fact_accuracy", "token_f1", "accuracy", "loss")


def _metrics_text(metrics: dict, most: int = 3) -> str:
    keys = [k for k in _SHOWN_METRICS if isinstance(metrics.get(k), (int, float))]
    keys += [k for k, v in metrics.items() if k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys[:most])


def print_versions(versions: list[ModelVersion], console, where: str) -> None:
    """`tailor registry list`: one row per version."""
    from rich.table import Table

    table = Table(title=f"model registry {where}")
    for col in ("name", "v", "stage", "created (UTC)", "parent", "data", "metrics", "path"):
        table.add_column(col, overflow="fold", no_wrap=col in ("v", "stage", "parent", "data"))
    colour = {"production": "bold green", "rejected": "red", "archived": "dim"}
    for v in versions:
        stage = f"[{colour[v.stage]}]{v.stage}[/]" if v.stage in colour else v.stage
        table.add_row(v.name, str(v.version), stage, v.created_at[:16].replace("T", " "), str(v.parent or "-"),
                      (v.data_fingerprint or "-")[:8], _metrics_text(v.metrics, 2), v.path)
    console.print(table)


def print_version(mv: ModelVersion, events: list[dict], console) -> None:
    """`tailor registry show`: a version's record and its events."""
    from rich.table import Table

    info = Table(title=f"{mv.name} v{mv.version}", show_header=False)
    info.add_column("field")
    info.add_column("value", overflow="fold")
    for k in ("stage", "path", "base_path", "parent", "data_fingerprint", "created_at", "note"):
        info.add_row(k, str(getattr(mv, k)))
    for k, v in mv.metrics.items():
        info.add_row(f"metrics.{k}", f"{v:.6g}" if isinstance(v, float) else str(v))
    lineage = mv.recipe.get("lineage") or {}
    for k in ("train_data", "holdout"):
        if lineage.get(k):
            info.add_row(f"lineage.{k}", "\n".join(lineage[k]))
    console.print(info)
    log = Table(title="events")
    for col in ("time (UTC)", "action", "stage", "reason"):
        log.add_column(col, overflow="fold")
    for e in events:
        stage = f"{e['from_stage'] or ''} -> {e['to_stage']}" if e["to_stage"] else ""
        log.add_row(e["time"][:19].replace("T", " "), e["action"], stage, e["reason"])
    console.print(log)
