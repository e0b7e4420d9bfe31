"""Hyperparameter search (`tailor hpo`): an optuna study over recipe keys, one training run per trial.

Each trial trains the recipe with the values the sampler (grid, random or TPE) draws for the keys of
the search space (`tailor.mlops.space`) into OUT/trial-N/, and is scored by a validation metric:
`eval_loss` from training, or any `tailor eval` metric (fact_accuracy, exact_match, ...) measured on
eval.data. With eval_loss the Trainer reports the loss at every evaluation and optuna's pruner stops
trials that fall behind.

The study lives in an RDB storage: SQLite in OUT by default, any SQLAlchemy URL (PostgreSQL, MySQL) to
share it between machines. Worker processes, on one machine or many, draw trials from it until it holds
the requested number of trials, so an interrupted search resumes where it stopped; a trial left RUNNING
by a crashed worker is failed by optuna's heartbeat and re-queued with the same values.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import warnings
from pathlib import Path

from transformers import TrainerCallback

from tailor.config import HpoSettings, Recipe, _nearest
from tailor.errors import TailorError
from tailor.mlops.hpo_report import HPOResult, format_params, summarize
from tailor.mlops.space import Param, base_value, parse_space, trial_recipe

log = logging.getLogger("tailor")

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "none")
DEFAULT_TRIALS = 20
MAX_FAILS_IN_A_ROW = 5
# Metric name parts that say which way is better (used when no direction is given).
_HIGHER = ("accuracy", "exact_match", "f1", "bleu", "chrf", "rouge", "recall", "precision", "mrr", "ndcg", "auc")
_LOWER = ("loss", "perplexity", "ece")
_COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")  # failed trials are redone, so they do not count


HPOSettings = HpoSettings  # how `run` searches: declared once, with the flags of `tailor hpo`, in tailor.config


# Settings, storage, study


def metric_direction(metric: str, direction: str | None) -> str:
    """`direction`, or the one the metric's name implies; an error when the name does not say."""
    if direction is not None:
        if direction not in ("minimize", "maximize"):
            raise TailorError(f"--direction {direction}: use minimize or maximize", where="--direction")
        return direction
    leaf = metric.rsplit("/", 1)[-1]
    if any(w in leaf for w in _LOWER):
        return "minimize"
    if any(w in leaf for w in _HIGHER):
        return "maximize"
    raise TailorError(f"cannot tell whether '{metric}' should go up or down", where="--metric",
                      fix="pass --direction minimize or --direction maximize")


def resolve_settings(s: HPOSettings, recipe: Recipe, space: list[Param]) -> HPOSettings:
    """Defaults filled in and every flag checked, before any trial runs."""
    out = Path(s.out_dir)
    s = s.model_copy(update=dict(out_dir=out, storage=s.storage or f"sqlite:///{(out / 'study.db').resolve()}",
                                 direction=metric_direction(s.metric, s.direction)))
    for name, value, allowed in (("--sampler", s.sampler, SAMPLERS), ("--pruner", s.pruner, PRUNERS + (None,))):
        if value not in allowed:
            raise TailorError(f"{name} {value}: unknown", where=name, fix=f"use one of: {', '.join(a for a in allowed if a)}")
    for name, value, low in (("--trials", s.trials, 1), ("--workers", s.workers, 1), ("--heartbeat", s.heartbeat, 1),
                             ("--prune-startup-trials", s.prune_startup_trials, 0),
                             ("--prune-warmup-steps", s.prune_warmup_steps, 0)):
        if value is not None and value < low:
            raise TailorError(f"{name} {value}: must be at least {low}", where=name)
    if s.pruner is None:
        s = s.model_copy(update=dict(pruner="median" if s.metric == "eval_loss" else "none"))
    elif s.pruner != "none" and s.metric != "eval_loss":
        raise TailorError(f"--pruner {s.pruner} needs intermediate values of the metric, but only eval_loss is measured "
                          f"during training; '{s.metric}' is measured once, after it", where="--pruner",
                          fix="use --pruner none with this metric, or --metric eval_loss")
    if s.sampler == "grid":
        size = math.prod(len(p.grid()) for p in space) + int(s.baseline)  # the baseline is not a grid point
        if s.trials is not None and s.trials > size:
            log.warning("--trials %d is more than the %d grid points: the search stops after the grid", s.trials, size)
        s = s.model_copy(update=dict(trials=min(s.trials or size, size)))
    elif s.trials is None:
        s = s.model_copy(update=dict(trials=DEFAULT_TRIALS))
    if s.metric == "eval_loss" and not _may_have_validation(recipe):
        raise TailorError("--metric eval_loss needs validation data, but the recipe has none", where="data.eval",
                          fix="set data.eval (or data.val_ratio > 0), or choose an eval.data metric with --metric")
    if s.metric != "eval_loss" and not recipe.eval.data:
        raise TailorError(f"--metric {s.metric} is measured by `tailor eval` on eval.data, which the recipe leaves empty",
                          where="eval.data", fix="set eval.data to held-out files, or use --metric eval_loss")
    return s


def _may_have_validation(recipe: Recipe) -> bool:
    """False only when the recipe certainly trains without validation data (plain files, no split)."""
    from tailor.data.prepare import is_prepared_dir

    d = recipe.data
    return bool(d.eval or d.val_ratio > 0 or d.sources or any(is_prepared_dir(p) for p in d.train))


def _storage(url: str, heartbeat: int):
    import optuna
    import sqlalchemy.exc

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # workers wait for SQLite's lock
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
    except sqlalchemy.exc.ArgumentError as exc:
        raise TailorError(f"--storage is not a database URL: {exc}", where="--storage",
                          fix="e.g. sqlite:///runs/hpo/study.db or postgresql+psycopg2://user:pass@host/db") from None
    except ImportError as exc:
        raise TailorError(f"the database driver for {safe_url(url)} is not installed: {exc}", where="--storage",
                          fix="install it, e.g. pip install psycopg2-binary for postgresql://") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise TailorError(f"cannot open the study storage {safe_url(url)}: {exc.__class__.__name__}: {exc}",
                          where="--storage", fix="check the URL, and that the database server runs and accepts this user") from None


def safe_url(url: str) -> str:
    """The storage URL with its password hidden (for output and best.json)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL sqlalchemy cannot parse has no password it could hide
        return url


def _sampler(s: HPOSettings, space: list[Param], worker: int, done: int):
    import numpy as np
    import optuna

    # Reproducible, yet distinct per worker and per resumption (`done` trials already in the study): a resumed
    # search or a second worker must not draw the values the first one drew.
    seed = None if s.seed is None else int(np.random.SeedSequence([s.seed, worker, done]).generate_state(1)[0])
    if s.sampler == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid() for p in space}, seed=s.seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(s: HPOSettings):
    import optuna

    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.prune_startup_trials, n_warmup_steps=s.prune_warmup_steps)
    return optuna.pruners.NopPruner()


def open_study(s: HPOSettings, space: list[Param], worker: int = 0):
    """Create the study or load it, checking that an existing one searches the same keys for the same metric."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if s.verbose else optuna.logging.ERROR)
    study = optuna.create_study(storage=_storage(s.storage, s.heartbeat), study_name=s.study, direction=s.direction,
                                pruner=_pruner(s), load_if_exists=True)
    study.sampler = _sampler(s, space, worker, len(study.get_trials(deepcopy=False)))
    signature = {"space": [p.spec() for p in space], "metric": s.metric}
    stored = study.user_attrs.get("tailor")
    if stored is None:
        study.set_user_attr("tailor", signature)
    elif stored != signature or study.direction.name.lower() != s.direction:
        raise TailorError(f"study '{s.study}' in {safe_url(s.storage)} was started with another search space, metric or "
                          f"direction ({stored['metric']}, {study.direction.name.lower()})", where="--study / --space",
                          fix="use the space and metric it was started with, or a new --study name")
    return study


# ---------------------------------------------------------------------------------------------
# Trials


class PruneOnEval(TrainerCallback):
    """Report each validation result to the optuna trial; stop training when its pruner says so."""

    def __init__(self, trial, metric: str = "eval_loss"):
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None
        self.training = True
        self.reported: set[int] = set()

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if not self.training or not metrics or self.metric not in metrics or state.global_step in self.reported:
            return
        self.reported.add(state.global_step)
        self.trial.report(float(metrics[self.metric]), state.global_step)
        if self.trial.should_prune():
            self.pruned_at = state.global_step
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        self.training = False  # the stage's closing evaluate() is the trial's result, not a step to prune at


def _objective(trial, base: Recipe, space: list[Param], s: HPOSettings) -> float:
    import optuna

    from tailor.training import train

    with warnings.catch_warnings():  # a baseline outside the space was announced when it was queued
        warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
        params = {p.key: p.suggest(trial) for p in space}
    trial_dir = (Path(s.out_dir) / f"trial-{trial.number}").resolve()
    for key, value in (("dir", str(trial_dir)), ("host", socket.gethostname()), ("pid", os.getpid())):
        trial.set_user_attr(key, value)
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    if "failed_trial" in frozen.system_attrs:  # re-queued by the heartbeat check
        trial.set_user_attr("note", f"re-run of trial {frozen.system_attrs['failed_trial']}, whose worker stopped")
    try:
        recipe = trial_recipe(base, params, trial_dir)
        prune = PruneOnEval(trial) if s.pruner != "none" else None
        result = train(recipe, callbacks=[prune] if prune else None)
        if prune is not None and prune.pruned_at is not None:
            trial.set_user_attr("note", f"pruned at step {prune.pruned_at}")
            raise optuna.TrialPruned(f"pruned at step {prune.pruned_at}")
        value = _score(s.metric, recipe, result, trial_dir)
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt:  # the values were not tried: the next run of the command tries them first
        trial.set_user_attr("note", "interrupted; its values are queued for the next run")
        trial.study.enqueue_trial(params, user_attrs={"note": f"re-run of interrupted trial {trial.number}"})
        raise
    except BaseException as exc:
        trial.set_user_attr("note", f"{type(exc).__name__}: {exc}"[:300])
        raise
    if not math.isfinite(value):
        trial.set_user_attr("note", f"{s.metric} is {value} (training diverged)")  # optuna fails the trial; the search goes on
    return value


def _score(metric: str, recipe: Recipe, result, trial_dir: Path) -> float:
    if metric == "eval_loss":
        if "eval_loss" not in result.metrics:
            raise TailorError("--metric eval_loss needs validation data, but this run had none", where="data",
                              fix="set data.eval (or data.val_ratio > 0), or choose an eval.data metric with --metric")
        return float(result.metrics["eval_loss"])
    from tailor.evaluation.run import run as evaluate, summary_metrics

    ev = evaluate(result.final_dir, None, recipe.eval, out_dir=trial_dir / "eval", chat_template=recipe.data.chat_template)
    flat = {k: v for k, v in summary_metrics(ev.metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if metric not in flat:
        raise TailorError(f"the evaluation reported no metric '{metric}'.{_nearest(metric, list(flat))}", where="--metric",
                          fix=f"choose one of: {', '.join(sorted(flat))}")
    return float(flat[metric])


def work(base: Recipe, space: list[Param], s: HPOSettings, worker: int = 0, console=None) -> int:
    """Run trials until the shared study holds `s.trials` (failed ones not counted); returns how many ran here.

    `s` must come from `resolve_settings`. Several processes and machines may call this on one study.
    """
    import torch
    from optuna.trial import TrialState

    study = open_study(s, space, worker)
    counted = tuple(getattr(TrialState, n) for n in _COUNTED)
    tag = f"[worker {worker}] " if s.workers > 1 else ""
    last: list = []  # the trials this worker finished

    def report(study, t):
        last.append(t)
        value = "-" if t.value is None else f"{t.value:.4g}"
        secs = t.duration.total_seconds() if t.duration else 0.0
        note = f"  ({t.user_attrs['note']})" if t.user_attrs.get("note") else ""
        line = f"{tag}trial {t.number} {t.state.name.lower()}: {s.metric} {value}  {format_params(t.params)}  [{secs:.1f}s]{note}"
        console.print(line, markup=False, highlight=False) if console is not None else print(line, flush=True)

    ran = fails = 0
    stage_log, level = logging.getLogger("tailor"), logging.getLogger("tailor").level
    if not s.verbose:
        stage_log.setLevel(logging.WARNING)  # one line per trial instead of every training log line
    try:
        while len(study.get_trials(deepcopy=False, states=counted)) < s.trials:
            if s.sampler == "grid" and study.sampler.is_exhausted(study):
                break
            # Out of memory is a property of the trial's values (a batch size too large): fail it and go on.
            study.optimize(lambda t: _objective(t, base, space, s), n_trials=1, callbacks=[report], gc_after_trial=True,
                           catch=(torch.cuda.OutOfMemoryError,))
            ran += 1
            fails = fails + 1 if last and last[-1].state == TrialState.FAIL else 0
            if fails >= MAX_FAILS_IN_A_ROW:
                raise TailorError(f"{fails} trials in a row failed (the last: {last[-1].user_attrs.get('note', 'no value')})",
                                  where="--space", fix="narrow the space to values that train (see the trial notes above)")
    finally:
        stage_log.setLevel(level)
    return ran


# ---------------------------------------------------------------------------------------------
# The search


def run(recipe: Recipe, space: list[Param] | str | Path, settings: HPOSettings | None = None, console=None) -> HPOResult:
    """Search the space for the recipe; print the trials table; write plots, best.json and best_recipe.yaml to OUT.

    Resumes the study when it exists in the storage. Raises TailorError for a bad space or flags (before any trial),
    and when no trial completes.
    """
    from rich.console import Console

    from optuna.storages import fail_stale_trials

    console = console or Console()
    if not isinstance(space, list):
        space = parse_space(space, recipe)
    s = resolve_settings(settings or HPOSettings(), recipe, space)
    s.out_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(s, space)
    _check_out_dir(s, study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fail_stale_trials is marked experimental
        fail_stale_trials(study)  # a crashed worker's trial is failed and re-queued before trials are counted
    if s.baseline and not study.trials:
        values = _baseline(recipe, space)
        study.enqueue_trial(values, user_attrs={"note": "baseline: the recipe's own values"})
        for p in space:
            if p.type != "categorical" and not p.low <= values[p.key] <= p.high:
                console.print(f"note: the baseline's {p.key}={values[p.key]} lies outside the searched range "
                              f"[{p.low}, {p.high}]; it runs once as the reference point", markup=False, highlight=False)
    console.print(f"study '{s.study}' in {safe_url(s.storage)}: {s.sampler} search, {s.direction} {s.metric}, "
                  f"{s.trials} trials ({len(study.trials)} already there), pruner {s.pruner}, {s.workers} worker(s)",
                  markup=False, highlight=False)
    if s.workers == 1:
        workers = [{"worker": 0, "pid": os.getpid(), "trials": work(recipe, space, s, 0, console)}]
    else:
        workers = _spawn(recipe, space, s)
    return summarize(study, recipe, s, safe_url(s.storage), console, workers)


def _baseline(recipe: Recipe, space: list[Param]) -> dict:
    values = {p.key: base_value(recipe, p.key) for p in space}
    for p in space:
        if values[p.key] is None:
            raise TailorError(f"--baseline: the recipe leaves '{p.key}' unset, so it has no value to start from",
                              where=p.where, fix=f"set {p.key} in the recipe, or drop --baseline")
        if p.type == "categorical" and values[p.key] not in p.choices:
            raise TailorError(f"--baseline: the recipe's {p.key}={values[p.key]!r} is not one of the choices {p.choices}",
                              where=p.where, fix="add it to the choices, or drop --baseline")
    return values


def _check_out_dir(s: HPOSettings, study) -> None:
    numbers = {t.number for t in study.get_trials(deepcopy=False)}
    stray = sorted(p.name for p in s.out_dir.glob("trial-*")
                   if p.is_dir() and not (p.name[6:].isdigit() and int(p.name[6:]) in numbers))
    if stray:
        raise TailorError(f"{s.out_dir} holds trial folders that are not trials of study '{s.study}' in "
                          f"{safe_url(s.storage)}: {', '.join(stray[:5])}", where="--out",
                          fix="use a new --out, or the --storage and --study those trials belong to")


def _spawn(recipe: Recipe, space: list[Param], s: HPOSettings) -> list[dict]:
    """N worker processes (spawned: training state is per process) on the same study; their reports."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(recipe, space, s, i, queue), name=f"tailor-hpo-{i}")
             for i in range(s.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the workers got the Ctrl-C too: let them mark their trials failed, then stop them
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
        raise
    reports = [queue.get(timeout=30) for p in procs if p.exitcode == 0]  # each finished worker sent one
    failed = [p for p in procs if p.exitcode != 0]
    if failed:
        raise TailorError(f"{len(failed)} of {len(procs)} workers failed (exit codes "
                          f"{', '.join(str(p.exitcode) for p in failed)}); their errors are printed above",
                          where="--workers", fix="fix the cause and run the same command again: the study resumes")
    return sorted(reports, key=lambda r: r["worker"])


def _worker_main(recipe: Recipe, space: list[Param], s: HPOSettings, worker: int, queue) -> None:
    import torch

    if not s.verbose:  # as quiet as the CLI makes the parent process
        from datasets.utils.logging import disable_progress_bar
        from transformers.utils import logging as hf_logging

        logging.basicConfig(level=logging.WARNING)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        disable_progress_bar()
        warnings.filterwarnings("ignore")
    if "OMP_NUM_THREADS" not in os.environ:  # N workers share the cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // s.workers))
    try:
        queue.put({"worker": worker, "pid": os.getpid(), "trials": work(recipe, space, s, worker)})
    except TailorError as exc:
        print(f"error: [worker {worker}] {exc.message()}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)  # optuna already marked the running trial failed; the parent says "interrupted"
