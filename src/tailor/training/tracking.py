"""Experiment tracking (`train.report_to`): TensorBoard, MLflow, Weights & Biases.

Each tracker is a Trainer callback that starts a run when training begins (rank 0 only), logs the recipe's
settings as parameters (dotted keys, e.g. `train.lr`) and the resolved recipe (config.yaml) as an artefact,
every log event's numbers as metrics at their step, and, when the run finishes, train_summary.json's numbers
(`final/...`), train_summary.json, metrics.jsonl and the final model or adapter folder (`train.tracking_log_model`).

- mlflow: any tracking URI (`train.tracking_uri`, else $MLFLOW_TRACKING_URI); by default a local SQLite store
  beside the run folder (`<parent of output_dir>/mlflow.db`, artefacts in `<parent>/mlartifacts`), so the runs
  of one project land in one store (`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`). A resumed run
  continues the same MLflow run (its id is kept in OUTPUT_DIR/tracking.json).
- wandb: `train.wandb_mode` offline (default: files under OUTPUT_DIR/wandb, `wandb sync` uploads them later),
  online (needs a login) or disabled.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from transformers import TrainerCallback

from tailor.config import Recipe
from tailor.errors import TailorError

_BAD = re.compile(r"[^0-9A-Za-z_\-. /]")


def flat_params(recipe: Recipe) -> dict[str, str]:
    """The recipe's settings as dotted keys with string values (lists and dicts as JSON)."""
    out: dict[str, str] = {}

    def walk(prefix: str, v) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            out[prefix] = v if isinstance(v, str) else json.dumps(v)

    walk("", recipe.model_dump(mode="json"))
    return out


def numbers(logs: dict) -> dict[str, float]:
    """The numeric entries of a log event (or summary), with names MLflow accepts."""
    return {_BAD.sub("_", k): float(v) for k, v in logs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TailorError(f"train.report_to={what} needs the {what} package ({exc})", where="train.report_to",
                          fix='pip install -e ".[track]" (mlflow-skinny and wandb), or drop it from train.report_to') from exc


class MlflowTracker(TrainerCallback):
    """Logs a training run to MLflow (see the module docstring)."""

    def __init__(self, recipe: Recipe, out: Path):
        _require("mlflow", "mlflow")
        self.recipe, self.out = recipe, Path(out)
        self.client = self.run_id = None

    def uri(self) -> tuple[str, str | None]:
        """(tracking URI, artefact location for a new experiment; None = the server's default)."""
        t = self.recipe.train
        uri = t.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            if uri.startswith("file:") or "://" not in uri:
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # asked for by name: MLflow 3 refuses it otherwise
            return uri, None
        home = self.out.resolve().parent
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{home / 'mlflow.db'}", (home / "mlartifacts").as_uri()

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero or self.client is not None:
            return
        from mlflow.tracking import MlflowClient

        t = self.recipe.train
        uri, artifacts = self.uri()
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(t.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(t.experiment, artifact_location=artifacts)
        saved = self.out / "tracking.json"
        known = json.loads(saved.read_text(encoding="utf-8")).get("mlflow_run_id") if saved.is_file() else None
        if known and state.global_step > 0:  # a resumed run continues its MLflow run
            self.run_id = known
            self.client.update_run(known, status="RUNNING")
            return
        run = self.client.create_run(exp_id, run_name=t.run_name or self.out.name,
                                     tags={"tailor.output_dir": str(self.out.resolve()), "tailor.objective": t.objective})
        self.run_id = run.info.run_id
        _remember(saved, mlflow_run_id=self.run_id, mlflow_tracking_uri=uri)
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in flat_params(self.recipe).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        if (self.out / "config.yaml").is_file():
            self.client.log_artifact(self.run_id, str(self.out / "config.yaml"), "recipe")

    def on_log(self, args, state, control, logs=None, **kw):
        if self.run_id is None or not logs:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, state.global_step) for k, v in numbers(logs).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, result) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        step = int(result.metrics.get("steps") or 0)
        self.client.log_batch(self.run_id, metrics=[Metric(f"final/{k}", v, 0, step) for k, v in numbers(result.metrics).items()])
        for name in ("train_summary.json", "metrics.jsonl"):
            if (self.out / name).is_file():
                self.client.log_artifact(self.run_id, str(self.out / name), "run")
        self.client.set_tag(self.run_id, "tailor.final_dir", str(Path(result.final_dir).resolve()))
        if self.recipe.train.tracking_log_model:
            self.client.log_artifacts(self.run_id, str(result.final_dir), "final")
        self.client.set_terminated(self.run_id, "FINISHED")


class WandbTracker(TrainerCallback):
    """Logs a training run to Weights & Biases (offline files by default)."""

    def __init__(self, recipe: Recipe, out: Path):
        self.wandb = _require("wandb", "wandb")
        self.recipe, self.out = recipe, Path(out)
        self.run = None

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero or self.run is not None:
            return
        t = self.recipe.train
        self.out.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(project=t.experiment, name=t.run_name or self.out.name, dir=str(self.out), mode=t.wandb_mode,
                                   config=self.recipe.model_dump(mode="json"), reinit="create_new")
        _remember(self.out / "tracking.json", wandb_run_id=self.run.id, wandb_dir=str(Path(self.run.dir).parent))
        if (self.out / "config.yaml").is_file():  # an artefact: the run's own files/config.yaml is W&B's config
            art = self.wandb.Artifact(f"{_BAD.sub('_', self.out.name)}-recipe", type="recipe")
            art.add_file(str(self.out / "config.yaml"), name="config.yaml")
            self.run.log_artifact(art)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.run is not None and logs:
            self.run.log(numbers(logs), step=state.global_step)

    def finish(self, result) -> None:
        if self.run is None:
            return
        self.run.summary.update({f"final/{k}": v for k, v in numbers(result.metrics).items()})
        art = self.wandb.Artifact(f"{_BAD.sub('_', self.out.name)}-final", type="model")
        for name in ("train_summary.json", "metrics.jsonl"):
            if (self.out / name).is_file():
                art.add_file(str(self.out / name), name=f"run/{name}")
        if self.recipe.train.tracking_log_model:
            art.add_dir(str(result.final_dir), name="final")
        self.run.log_artifact(art)
        self.run.finish()


def _remember(path: Path, **fields) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**data, **fields}, indent=2), encoding="utf-8")


def tracking_callbacks(recipe: Recipe, out: Path) -> list:
    """The callbacks of train.report_to (the caller adds them on the main process only)."""
    chosen = recipe.train.report_to
    out = Path(out)
    cbs = []
    if "tensorboard" in chosen:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        cbs.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(out / "tensorboard"))))
    if "mlflow" in chosen:
        cbs.append(MlflowTracker(recipe, out))
    if "wandb" in chosen:
        cbs.append(WandbTracker(recipe, out))
    return cbs


def finish_tracking(callbacks, result) -> None:
    """Log the finished run's summary and artefacts to every tracker and close its run."""
    for cb in callbacks:
        if isinstance(cb, (MlflowTracker, WandbTracker)):
            cb.finish(result)
