"""The `tailor hpo`, `tailor registry ...` and `tailor refresh` commands: argument parsers and handlers.

cli.py keeps the one command table; the keeping-fresh commands live here to keep that file short.
"""

from __future__ import annotations

import argparse

from tailor.config import load_recipe
from tailor.errors import TailorError


def _console():
    from rich.console import Console

    return Console(stderr=False)


def cmd_hpo(a: argparse.Namespace) -> int:
    from tailor.mlops.hpo import HPOSettings, run

    recipe = load_recipe(a.recipe, a.overrides)
    settings = HPOSettings(out_dir=a.out, storage=a.storage, study=a.study, trials=a.trials, workers=a.workers,
                           sampler=a.sampler, metric=a.metric, direction=a.direction, pruner=a.pruner,
                           prune_startup_trials=a.prune_startup_trials, prune_warmup_steps=a.prune_warmup_steps,
                           seed=a.seed, heartbeat=a.heartbeat, baseline=a.baseline, verbose=a.verbose)
    run(recipe, a.space, settings, console=_console())
    return 0


def _registry(a: argparse.Namespace, create: bool = False):
    from tailor.mlops.registry import Registry

    return Registry(a.url, create=create)


def cmd_registry_list(a: argparse.Namespace) -> int:
    import json

    from tailor.mlops.registry_view import print_versions

    with _registry(a) as reg:
        versions = reg.versions(a.name)
        if a.name and not versions:
            names = reg.names()
            raise TailorError(f"no versions of {a.name!r} in the registry", where=reg.where,
                              fix=f"registered models: {', '.join(names)}" if names else "register one: tailor registry register NAME DIR")
        if a.json:
            print(json.dumps([v.to_dict() for v in versions], indent=2, ensure_ascii=False))
        else:
            print_versions(versions, _console(), reg.where)
    return 0


def cmd_registry_show(a: argparse.Namespace) -> int:
    import json

    from tailor.mlops.registry_view import print_version

    with _registry(a) as reg:
        mv = reg.get(a.name, a.version) if a.version is not None else reg.production(a.name)
        if mv is None:
            raise TailorError(f"{a.name} has no production version", where=reg.where, fix="name a version: tailor registry show NAME V")
        events = reg.events(a.name, mv.version)
        if a.json:
            print(json.dumps({**mv.to_dict(), "events": events}, indent=2, ensure_ascii=False))
        else:
            print_version(mv, events, _console())
    return 0


def cmd_registry_register(a: argparse.Namespace) -> int:
    from tailor.adapters.merge import adapter_base, is_adapter_dir
    from tailor.mlops.refresh import recipe_record
    from tailor.mlops.registry_view import read_metrics

    recipe, fingerprint = recipe_record(load_recipe(a.recipe)) if a.recipe else (None, None)
    base = a.base or (adapter_base(a.path) or None if is_adapter_dir(a.path) else None)
    with _registry(a, create=True) as reg:
        mv = reg.register(a.name, a.path, base_path=base, recipe=recipe, data_fingerprint=a.data_fingerprint or fingerprint,
                          parent=a.parent, metrics=read_metrics(a.metrics) if a.metrics else None, stage=a.stage,
                          note=a.note, reason=a.note)
    _console().print(f"[bold green]registered[/] {mv.name} v{mv.version} ({mv.stage}) -> {mv.path}")
    return 0


def cmd_registry_promote(a: argparse.Namespace) -> int:
    with _registry(a) as reg:
        before = reg.production(a.name)
        mv = reg.promote(a.name, a.version, a.reason)
    if before is not None and before.version == mv.version:
        _console().print(f"{mv.name} v{mv.version} is already production; nothing changed")
    else:
        _console().print(f"[bold green]promoted[/] {mv.name} v{mv.version} to production"
                         + (f" (v{before.version} archived)" if before else ""))
    return 0


def cmd_registry_rollback(a: argparse.Namespace) -> int:
    with _registry(a) as reg:
        before = reg.production(a.name)
        mv = reg.rollback(a.name, a.reason, to=a.to)
    _console().print(f"[bold green]rolled back[/] {mv.name}: v{mv.version} is production again"
                     + (f" (v{before.version} archived)" if before else ""))
    return 0


def cmd_refresh(a: argparse.Namespace) -> int:
    from tailor.mlops.refresh import run

    result = run(load_recipe(a.recipe, a.overrides), force=a.force, registry=a.url, console=_console())
    return 1 if result.decision == "rejected" else 0


def _hpo_args(p):
    p.add_argument("recipe", help="YAML recipe (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe settings, e.g. train.lr=1e-4")
    p.add_argument("--space", required=True, help="YAML mapping recipe keys to distributions: train.lr: {type: float, low: "
                   "1.0e-5, high: 1.0e-2, log: true}; adapter.r: {type: int, low: 4, high: 64, step: 4}; "
                   "train.batch_size: {type: categorical, choices: [8, 16]}")
    p.add_argument("--trials", type=int, help="trials the study should hold, counting earlier runs (default: the grid "
                   "size for grid, else 20); failed trials are not counted")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study database (default sqlite:///OUT/study.db); "
                   "postgresql://... lets workers on several machines share one study")
    p.add_argument("--study", default="tailor-hpo", help="study name in the storage (default tailor-hpo); the same "
                   "--storage and --study resume the study or join it from another machine")
    p.add_argument("--sampler", default="tpe", choices=["grid", "random", "tpe"], help="grid, random or tpe (default)")
    p.add_argument("--metric", default="eval_loss", help="eval_loss (validation loss from training, default) or a "
                   "`tailor eval` metric on eval.data: fact_accuracy, exact_match, token_f1, answer_perplexity, ...")
    p.add_argument("--direction", choices=["minimize", "maximize"], help="default: from the metric's name "
                   "(loss/perplexity: minimize; accuracy/f1/match/...: maximize)")
    p.add_argument("--pruner", choices=["median", "none"], help="median: stop a trial whose best validation loss so far is "
                   "worse than the median of earlier trials at the same step (default with eval_loss; none with other metrics)")
    p.add_argument("--prune-startup-trials", type=int, default=2, help="median: finished trials before any is pruned (default 2)")
    p.add_argument("--prune-warmup-steps", type=int, default=0, help="training steps before a trial can be pruned (default 0)")
    p.add_argument("--seed", type=int, help="sampler seed, mixed with the worker index and the number of trials already "
                   "in the study, so workers and resumed runs draw new values (default: random)")
    p.add_argument("--heartbeat", type=int, default=60, help="seconds between a running trial's heartbeats; a trial "
                   "silent for twice this is failed and re-queued (default 60)")
    p.add_argument("--baseline", action="store_true", help="first trial: the recipe's own values of the searched keys")
    p.add_argument("--out", default="runs/hpo", help="trial-N/ folders, study.db, plots, best.json and best_recipe.yaml "
                   "(default runs/hpo)")


def _registry_url(p):
    p.add_argument("--url", help="the registry: a SQLite file or an SQLAlchemy URL such as postgresql+psycopg://user@host/db "
                   "(default: $TAILOR_REGISTRY, else runs/registry.db)")


def _registry_list_args(p):
    p.add_argument("name", nargs="?", help="list only this model's versions")
    _registry_url(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _registry_show_args(p):
    p.add_argument("name", help="model name")
    p.add_argument("version", nargs="?", type=int, help="version number (default: the production version)")
    _registry_url(p)
    p.add_argument("--json", action="store_true", help="print JSON (the version and its events) instead of tables")


def _registry_register_args(p):
    p.add_argument("name", help="model name, e.g. support-bot (created on first use)")
    p.add_argument("path", help="the model directory or adapter directory (a training run's final/)")
    _registry_url(p)
    p.add_argument("--base", help="base model of an adapter (default: the one recorded in adapter_config.json)")
    p.add_argument("--recipe", help="the recipe it was trained with: its data.train is what `tailor refresh` replays, "
                   "its eval.data the held-out set the A/B gate keeps (and the data fingerprint comes from it)")
    p.add_argument("--metrics", help="JSON metrics on its held-out set, e.g. `tailor eval --out DIR`'s DIR/eval_results.json "
                   "(the drift baseline of `tailor refresh`)")
    p.add_argument("--data-fingerprint", help="fingerprint of its training data (default: hash of the recipe's data.train files)")
    p.add_argument("--parent", type=int, help="the version it was trained from")
    p.add_argument("--note", default="", help="free text kept with the version")
    p.add_argument("--stage", default="candidate", choices=["candidate", "production"],
                   help="candidate (default) or production (promoted at once)")


def _registry_promote_args(p):
    p.add_argument("name", help="model name")
    p.add_argument("version", type=int, help="the version to make production (the current one is archived)")
    p.add_argument("--reason", default="", help="why (kept in the audit log)")
    _registry_url(p)


def _registry_rollback_args(p):
    p.add_argument("name", help="model name")
    p.add_argument("--to", type=int, help="the version to restore (default: the one the production version replaced)")
    p.add_argument("--reason", default="", help="why (kept in the audit log)")
    _registry_url(p)


def _refresh_args(p):
    p.add_argument("recipe", help="YAML recipe with a refresh section (see configs/examples/refresh.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe settings, e.g. refresh.threshold=0.1")
    p.add_argument("--force", action="store_true", help="retrain and gate even without drift (or when this refresh already ran)")
    p.add_argument("--url", help="the registry (default: refresh.registry, else $TAILOR_REGISTRY, else runs/registry.db)")


# name -> (function, argument builder, one-line help, epilog listing schema keys)
