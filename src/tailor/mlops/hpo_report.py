"""The end of a `tailor hpo` search: the trials table, the plots, best.json and best_recipe.yaml.

The plots come from optuna.visualization.matplotlib on the Agg backend: the optimization history, the
intermediate validation losses (when trials reported any) and the parameter importances (PED-ANOVA,
optuna's default evaluator), which need two completed trials in which a parameter varies.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tailor.config import Recipe, save_recipe
from tailor.errors import TailorError
from tailor.mlops.space import trial_recipe

if TYPE_CHECKING:
    from tailor.mlops.hpo import HPOSettings


@dataclass
class HPOResult:
    """What `tailor.mlops.hpo.run` returns; `trials` are the table's rows, `files` what was written."""

    out_dir: Path
    study: str
    storage: str                        # the URL with any password hidden
    best: dict | None                   # best.json: trial, value, params, metric, direction, trial_dir
    trials: list[dict] = field(default_factory=list)
    files: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)  # per worker process: index, pid, trials it ran


def format_params(params: dict) -> str:
    """`key=value ...` with floats to 4 significant digits."""
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summarize(study, recipe: Recipe, s: HPOSettings, storage: str, console, workers: list[dict] | None = None) -> HPOResult:
    """Print the trials table; write the plots, best.json and best_recipe.yaml; return what was written."""
    from optuna.trial import TrialState
    from rich.table import Table

    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    rows = [{"trial": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "seconds": t.duration.total_seconds() if t.duration else None, "note": t.user_attrs.get("note", ""),
             "dir": t.user_attrs.get("dir")} for t in trials]
    table = Table(title=f"study '{s.study}': {s.metric} ({s.direction})")
    for col in ("trial", "state", s.metric, *keys, "seconds", "note"):
        table.add_column(col, justify="right" if col not in ("state", "note") else "left")
    for r in rows:
        table.add_row(str(r["trial"]), r["state"].lower(), "-" if r["value"] is None else f"{r['value']:.4g}",
                      *[_fmt(r["params"][k]) if k in r["params"] else "-" for k in keys],
                      "-" if r["seconds"] is None else f"{r['seconds']:.1f}", r["note"])
    console.print(table)
    result = HPOResult(s.out_dir, s.study, storage, None, rows, workers=workers or [])
    result.files, result.notes = write_plots(study, s.out_dir)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    running = sum(t.state == TrialState.RUNNING for t in trials)
    if running:
        result.notes.append(f"{running} trial(s) still RUNNING: another worker's, or a crashed one's, which is failed "
                            f"and re-queued once silent for {2 * s.heartbeat}s (run the command again then)")
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if not complete:
        raise TailorError(f"no trial of study '{s.study}' completed ({len(trials)} trials: "
                          f"{', '.join(sorted({t.state.name.lower() for t in trials})) or 'none'})", where="--space",
                          fix="see the notes in the table; widen the space, loosen the pruner or raise --trials")
    best = study.best_trial
    result.best = {"trial": best.number, "value": best.value, "params": best.params, "metric": s.metric,
                   "direction": s.direction, "trial_dir": best.user_attrs.get("dir"), "study": s.study,
                   "storage": result.storage, "completed_trials": len(complete)}
    (s.out_dir / "best.json").write_text(json.dumps(result.best, indent=2), encoding="utf-8")
    best_recipe = trial_recipe(recipe, best.params, recipe.train.output_dir)
    path = s.out_dir / "best_recipe.yaml"
    save_recipe(best_recipe, path)
    path.write_text(f"# tailor hpo: best of study '{s.study}' (trial {best.number}, {s.metric} = {best.value:.6g}); "
                    f"train it with `tailor train {path}`\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    result.files.update({"best.json": s.out_dir / "best.json", "best_recipe.yaml": path})
    console.print(f"[bold green]best[/] trial {best.number}: {s.metric} {best.value:.4g}  {format_params(best.params)}")
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}")
    return result


def write_plots(study, out_dir: Path) -> tuple[dict, list[str]]:
    """optimization_history.png, intermediate_values.png (when trials reported any) and param_importances.png.

    Importance needs two completed trials and a parameter that varies among them; otherwise a note says why
    the plot is missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as oplt

    files, notes = {}, []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = [k for k in dict.fromkeys(k for t in complete for k in t.params) if len({repr(t.params.get(k)) for t in complete}) > 1]
    plots = [("optimization_history", lambda: oplt.plot_optimization_history(study))]
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots.append(("intermediate_values", lambda: oplt.plot_intermediate_values(study)))
    if len(complete) >= 2 and varying:
        plots.append(("param_importances", lambda: oplt.plot_param_importances(study, params=varying)))
    else:
        notes.append(f"no parameter importance plot: it needs 2 completed trials in which a parameter varies "
                     f"({len(complete)} completed, varying: {', '.join(varying) or 'none'})")
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
            ax = plot()
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files[f"{name}.png"] = path
    return files, notes
