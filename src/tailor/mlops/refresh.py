"""`tailor refresh RECIPE`: one idempotent command, for a scheduler, that keeps a registered model fresh.

Steps, each logged to WORK/refresh.jsonl and each result saved in WORK/steps/ so that a rerun after a
crash resumes after the last finished step:

1. prepare  - the new data (refresh.new_data) through the recipe's data pipeline: clean, de-dup, split
2. drift    - production's perplexity (and task metric) on the new rows against its recorded baseline
3. supersede - old held-out rows the new data contradicts (a changed fact) leave the gate's old set
4. mix      - the new training rows plus a replay share of production's own training data (minus contradicted rows)
5. train    - continue production's LoRA adapter (loaded trainable), or train its last N blocks only
6. gate     - `tailor compare` on the old held-out set (the rows still true) and the new one
7. register - one registry transaction: the candidate as production (gate passed) or rejected, with why

The registry is written only at the end (also to record "no drift"), in one transaction, so a crash at
any step leaves it and production untouched. WORK is keyed by a run id (model name, production version,
data fingerprint, recipe): rerunning after a crash finds the finished steps; rerunning after the run
concluded says so and does nothing (`--force` retrains even without drift, in a new run).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from tailor.config import AdapterConfig, Recipe, build, merge_settings
from tailor.errors import TailorError
from tailor.mlops import drift
from tailor.mlops.registry import ModelVersion, Registry

BOOKKEEPING = ("meta", "where", "source", "origin", "split")


@dataclass
class RefreshResult:
    """What one `tailor refresh` decided."""

    decision: str  # no-drift | already-done | promoted | rejected
    name: str
    run_id: str
    production: int | None  # the production version after the run
    candidate: int | None = None  # the version this run registered
    reason: str = ""
    drift: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    work_dir: Path | None = None
    data: dict = field(default_factory=dict)


class RefreshLog:
    """Append-only JSON Lines log of a run's steps (start, done, reused, failed, decision)."""

    def __init__(self, path: Path, run_id: str):
        self.path, self.run_id = path, run_id
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: str, status: str, **info) -> None:
        row = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run_id": self.run_id, "step": step,
               "status": status, **info}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def _step(work: Path, log: RefreshLog, name: str, fn: Callable[[], dict]) -> dict:
    """Run a step once: its JSON result is saved last, so a rerun reuses a finished step and redoes a cut one."""
    done = work / "steps" / f"{name}.json"
    if done.is_file():
        log.write(name, "reused", result=str(done))
        return json.loads(done.read_text(encoding="utf-8"))
    log.write(name, "start")
    try:
        result = fn()
    except BaseException as exc:
        log.write(name, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    done.parent.mkdir(parents=True, exist_ok=True)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(done)
    log.write(name, "done", **{k: v for k, v in result.items() if not isinstance(v, (dict, list))})
    return result


# ---------------------------------------------------------------------------------------------
# Inputs


def _check(recipe: Recipe) -> None:
    cfg = recipe.refresh
    if not cfg.model_name:
        raise TailorError("no model to refresh", where="refresh.model_name",
                          fix="name the registered model, e.g. refresh.model_name=support-bot (`tailor registry list`)")
    if not cfg.new_data:
        raise TailorError("no new data given", where="refresh.new_data", fix="list the newly arrived files or folders")
    missing = [p for p in cfg.new_data if not Path(p).exists()]
    if missing:
        raise TailorError(f"new data not found: {', '.join(missing)}", where="refresh.new_data",
                          fix="point at existing files or folders (relative paths resolve against the recipe's folder)")
    taken = [k for k, v in (("model.path", recipe.model.path), ("model.preset", recipe.model.preset),
                            ("data.train", recipe.data.train), ("data.sources", recipe.data.sources)) if v]
    if taken:
        raise TailorError(f"tailor refresh takes the model from the registry and the data from refresh.new_data, "
                          f"but the recipe sets {', '.join(taken)}", where=", ".join(taken),
                          fix="remove them: production's recorded recipe supplies the model and the old data")


def run_key(name: str, version: int, fingerprint: str, recipe: Recipe) -> str:
    """Identity of a refresh: the same model version, data and recipe give the same key (and work folder)."""
    settings = recipe.model_dump(mode="json")
    settings["refresh"].pop("registry", None)  # where the registry lives does not change the work
    h = hashlib.blake2b(json.dumps([name, version, fingerprint, settings], sort_keys=True).encode(), digest_size=6)
    return h.hexdigest()


def history(recipe: dict, kind: str) -> list[str]:
    """Files a version trained on (kind="train") or holds out (kind="holdout"), from its recorded recipe."""
    lineage = recipe.get("lineage") or {}
    key = {"train": "train_data", "holdout": "holdout"}[kind]
    if lineage.get(key):
        return list(lineage[key])
    if kind == "train":
        return list((recipe.get("data") or {}).get("train") or [])
    return list((recipe.get("eval") or {}).get("data") or (recipe.get("data") or {}).get("eval") or [])


def flatten(rec: dict) -> dict:
    """A prepared record as a plain row: bookkeeping dropped, the row's other columns (answer, lang) lifted."""
    out = {k: v for k, v in rec.items() if k not in BOOKKEEPING}
    for k, v in (rec.get("meta") or {}).items():
        out.setdefault(k, v)
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path.resolve())


def _read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _tokenizer_dir(mv: ModelVersion) -> str:
    from tailor.adapters.loading import tokenizer_dir

    return str(tokenizer_dir(mv.path, mv.base_path)) if mv.base_path else mv.path


def recipe_record(recipe: Recipe) -> tuple[dict, str | None]:
    """(the recipe as the registry stores it, with data paths made absolute; the fingerprint of its training files)."""
    rec = recipe.model_dump(mode="json")
    for section, key in (("data", "train"), ("data", "eval"), ("eval", "data")):
        rec[section][key] = [str(Path(p).resolve()) if Path(p).exists() else p for p in rec[section][key]]
    files = rec["data"]["train"] or [s["path"] for s in rec["data"]["sources"] if s.get("path")]
    present = [f for f in files if Path(f).exists()]
    return rec, drift.data_fingerprint(present) if present and len(present) == len(files) else None


# ---------------------------------------------------------------------------------------------
# Steps


def prepare_new(recipe: Recipe, production: ModelVersion, work: Path) -> dict:
    """Step 1: the new data through the recipe's data pipeline; writes new_train/new_eval/new_all.jsonl."""
    from tailor.config import SourceConfig
    from tailor.data.prepare import run as prepare

    cfg = recipe.refresh
    split = recipe.data.split if recipe.data.split.eval else recipe.data.split.model_copy(update={"eval": cfg.holdout})
    data = recipe.data.model_copy(update={"sources": [SourceConfig(path=str(Path(p).resolve())) for p in cfg.new_data],
                                          "split": split, "prepared_dir": str(work / "prepared")})
    model = recipe.model.model_copy(update={"tokenizer": _tokenizer_dir(production)})
    prepared = prepare(recipe.model_copy(update={"data": data, "model": model}))
    rows = {s: [flatten(r) for r in prepared.records(s)] for s in ("train", "eval", "test")}
    if not rows["eval"]:
        raise TailorError(f"the new data left no held-out rows for the gate ({prepared.splits})", where="refresh.holdout / data.split.eval",
                          fix="raise refresh.holdout (or data.split.eval), or add more new data")
    if not rows["train"]:
        raise TailorError(f"the new data left no training rows ({prepared.splits})", where="refresh.new_data",
                          fix="add more new data, or lower refresh.holdout")
    d = work / "data"
    return {"train": _write_jsonl(d / "new_train.jsonl", rows["train"]), "eval": _write_jsonl(d / "new_eval.jsonl", rows["eval"]),
            "all": _write_jsonl(d / "new_all.jsonl", rows["train"] + rows["eval"] + rows["test"]),
            "rows": {s: len(v) for s, v in rows.items()}, "prepared": str(prepared.path),
            "task": drift.task_for(recipe, rows["train"] + rows["eval"])}


def measure_drift(recipe: Recipe, production: ModelVersion, prepared: dict, old_holdout: list[str], work: Path) -> dict:
    """Step 2: production on all new rows against its recorded baseline (measured on its held-out set if none is recorded)."""
    cfg = recipe.refresh
    ecfg = drift.eval_settings(recipe, prepared["task"], cfg)
    now = drift.measure(production.path, [prepared["all"]], ecfg, work / "eval" / "production-new-all", cfg.task_metric)
    baseline = drift.baseline_from(production.metrics, prepared["task"], cfg.task_metric)
    source = "recorded"
    if "perplexity" not in baseline:
        if not old_holdout:
            raise TailorError(f"{production.name} v{production.version} has neither a recorded baseline perplexity nor "
                              "held-out data to measure one on", where="registry metrics / recipe eval.data",
                              fix="register it with --metrics (its eval_results.json) or with a --recipe whose eval.data "
                                  "lists its held-out files")
        baseline = drift.measure(production.path, old_holdout, ecfg, work / "eval" / "production-old", cfg.task_metric)
        source = "measured now on its held-out set"
    return {**drift.check_drift(baseline, now, cfg), "baseline_source": source, "version": production.version}


def _old_rows(paths: list[str], split: str) -> list[dict]:
    """The rows of files (any data format) or prepared folders (their `split`), as plain rows."""
    from tailor.data.loading import load_records
    from tailor.data.prepare import is_prepared_dir, open_prepared

    rows: list[dict] = []
    for p in paths:
        rows += [flatten(r) for r in open_prepared(p).records(split)] if is_prepared_dir(p) else load_records([p])
    return rows


def supersede_old(recipe: Recipe, prepared: dict, old_holdout: list[str], work: Path) -> dict:
    """Step 3: old held-out rows the new data contradicts (same question or fact key, another answer) leave the
    gate's old set; the rest is written to data/old_holdout_kept.jsonl, the superseded rows to data/superseded.jsonl."""
    from tailor.mlops.supersede import question_key, split_superseded

    cfg = recipe.refresh
    if not cfg.supersede:
        return {"old_holdout": old_holdout, "superseded": 0, "kept": None, "listed": [], "enabled": False}
    kept, gone = split_superseded(_old_rows(old_holdout, "eval"), _read_jsonl(prepared["all"]), cfg.fact_key)
    d = work / "data"
    listed = [{"question": (question_key(r) or "").split(": ", 1)[-1][:80], "fact": r.get(cfg.fact_key) if cfg.fact_key else None,
               "why": r["superseded_by"]} for r in gone]
    out = {"superseded": len(gone), "kept": len(kept), "listed": listed, "enabled": True,
           "path": _write_jsonl(d / "superseded.jsonl", gone) if gone else None}
    out["old_holdout"] = ([_write_jsonl(d / "old_holdout_kept.jsonl", kept)] if kept else []) if gone else old_holdout
    return out


def mix_data(recipe: Recipe, production: ModelVersion, prepared: dict, work: Path) -> dict:
    """Step 4: new training rows plus a replay sample of production's training data (share refresh.replay of the mix);
    old rows the new data contradicts are not replayed (refresh.supersede)."""
    from tailor.mlops.supersede import split_superseded

    cfg = recipe.refresh
    new = _read_jsonl(prepared["train"])
    old_paths = history(production.recipe, "train")
    picked: list[dict] = []
    want = round(len(new) * cfg.replay / (1 - cfg.replay))
    available = dropped = 0
    if want:
        if not old_paths:
            raise TailorError(f"{production.name} v{production.version} records no training data to replay",
                              where="refresh.replay", fix="set refresh.replay=0, or register the version with a --recipe "
                              "whose data.train lists its training files")
        old = _old_rows(old_paths, "train")
        if cfg.supersede:
            old, gone = split_superseded(old, _read_jsonl(prepared["all"]), cfg.fact_key)
            dropped = len(gone)
        available = len(old)
        picked = random.Random(recipe.train.seed).sample(old, min(want, available))
    rows = new + picked
    random.Random(recipe.train.seed).shuffle(rows)
    return {"path": _write_jsonl(work / "data" / "mix.jsonl", rows), "new_rows": len(new), "replay_rows": len(picked),
            "replay_wanted": want, "old_rows_available": available, "replay_superseded": dropped, "old_data": old_paths}


def load_adapter_weights(model, adapter_dir: str | Path) -> None:
    """Load a saved LoRA adapter's weights into the same-shaped, trainable peft model (what
    PeftModel.from_pretrained(..., is_trainable=True) does); a shape or key mismatch is an error."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    result = set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir), device="cpu"))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise TailorError(f"production's adapter does not fit the adapter being trained: {len(missing)} missing, "
                          f"{len(result.unexpected_keys)} unexpected weights (e.g. {(missing + result.unexpected_keys)[0]})",
                          where=str(adapter_dir), fix="the adapter settings must match the production version's recipe")


def _adapter_settings(production: ModelVersion) -> dict:
    """The adapter section that rebuilds production's LoRA adapter: its recorded recipe's, else adapter_config.json's."""
    recorded = (production.recipe or {}).get("adapter") or {}
    if recorded.get("method") in ("lora", "dora", "qlora"):
        return AdapterConfig.model_validate(recorded).model_dump(mode="json")
    cfg = json.loads((Path(production.path) / "adapter_config.json").read_text(encoding="utf-8"))
    if cfg.get("peft_type") != "LORA":
        raise TailorError(f"refresh.mode=continue-adapter continues LoRA/DoRA adapters, not {cfg.get('peft_type')}",
                          where="refresh.mode", fix="use refresh.mode=last-n-layers")
    targets = cfg.get("target_modules")
    return {"method": "dora" if cfg.get("use_dora") else "lora", "r": cfg["r"], "alpha": cfg["lora_alpha"],
            "dropout": cfg.get("lora_dropout", 0.0), "rslora": bool(cfg.get("use_rslora")),
            "target_modules": sorted(targets) if isinstance(targets, list) else targets}


class ContinueAdapter(TrainerCallback):
    """Production's adapter weights go into the freshly built LoRA when the Trainer is built (on_init_end): before
    a resumed run loads its checkpoint over them, and before the first step of a new one."""

    def __init__(self, adapter_dir: str):
        self.adapter_dir = adapter_dir

    def on_init_end(self, args, state, control, model=None, **kw):
        load_adapter_weights(model, self.adapter_dir)


def _merged(adapter_dir: str, base: str):
    """(model, tokenizer, base): production's adapter folded into its base, so the last blocks of that model train."""
    from tailor.adapters.loading import load_with_adapter

    model, tokenizer = load_with_adapter(adapter_dir, base)
    return model.merge_and_unload().train(), tokenizer, Path(base)


def train_candidate(recipe: Recipe, production: ModelVersion, mix: dict, work: Path) -> dict:
    """Step 5: incremental training from production on the mix; resumes its own checkpoints after a crash."""
    from tailor.adapters.loading import adapter_base, is_adapter_dir
    from tailor.training.checkpoints import latest_checkpoint
    from tailor.training.recipes.lm import train

    cfg = recipe.refresh
    out = work / "train"
    ckpt = latest_checkpoint(out) if out.is_dir() else None
    if out.is_dir() and ckpt is None:
        shutil.rmtree(out)  # cut before its first checkpoint: start that training again cleanly
    is_adapter = is_adapter_dir(production.path)
    base = production.base_path or (adapter_base(production.path) if is_adapter else None)
    settings = {"data": {"train": [mix["path"]], "eval": [], "sources": [], "val_ratio": 0.0},
                "train": {"output_dir": str(out), "resume": ckpt is not None}}
    start, callbacks = None, None
    if cfg.mode == "continue-adapter":
        if not is_adapter:
            raise TailorError(f"{production.name} v{production.version} is a full model, not an adapter", where="refresh.mode",
                              fix="use refresh.mode=last-n-layers to train its last blocks")
        settings["model"] = {"path": base, "tokenizer": _tokenizer_dir(production)}
        settings["adapter"] = _adapter_settings(production)
        callbacks = [ContinueAdapter(production.path)]
    else:
        settings["adapter"] = {"method": "freeze", "freeze_last_n": cfg.last_n_layers}
        settings["model"] = {"path": base if is_adapter else production.path, "tokenizer": _tokenizer_dir(production)}
        if is_adapter:
            start = _merged(production.path, base)
    train_recipe = build(Recipe, merge_settings(recipe.model_dump(mode="json"), settings), "tailor refresh (training)")
    result = train(train_recipe, callbacks, start=start)
    m = result.metrics
    return {"path": str(result.final_dir.resolve()), "base_path": str(Path(result.base_dir).resolve()) if result.base_dir else None,
            "steps": m["steps"], "train_loss": m["train_loss"], "seconds": m["seconds"],
            "trainable_parameters": m["trainable_parameters"], "resumed_from": ckpt.name if ckpt else None,
            "recipe": train_recipe.model_dump(mode="json")}


# ---------------------------------------------------------------------------------------------
# The command


def run(recipe: Recipe, *, force: bool = False, registry: str | None = None, console=None) -> RefreshResult:
    """Measure drift, retrain, gate and register as the recipe's refresh section says; prints a summary table."""
    _check(recipe)
    with Registry(registry or recipe.refresh.registry, create=False) as reg:
        result = _run(recipe, reg, force)
    if console is not None:
        from tailor.mlops.refresh_report import print_summary

        print_summary(result, console)
    return result


def _run(recipe: Recipe, reg: Registry, force: bool) -> RefreshResult:
    cfg = recipe.refresh
    name = cfg.model_name
    prod = reg.production(name)
    if prod is None:
        known = [f"v{v.version} ({v.stage})" for v in reg.versions(name)]
        raise TailorError(f"{name} has no production version to refresh" + (f"; it has {', '.join(known)}" if known else ""),
                          where=f"registry {reg.where}", fix="register and promote one first: tailor registry register "
                          f"{name} DIR --recipe RECIPE --metrics EVAL_RESULTS.json, then tailor registry promote {name} 1")
    fingerprint = drift.data_fingerprint(cfg.new_data)
    key = run_key(name, prod.version, fingerprint, recipe)
    concluded = [e for e in reg.events(name) if (e["details"] or {}).get("key") == key and e["details"].get("decision")]
    if concluded and not force:
        last = concluded[-1]
        candidate = last["version"] if last["details"]["decision"] in ("promoted", "rejected") else None
        return RefreshResult("already-done", name, last["details"]["run_id"], prod.version, candidate,
                             f"this refresh (production v{prod.version}, data {fingerprint[:12]}, same recipe) already "
                             f"concluded at {last['time']}: {last['details']['decision']} - {last['reason']}",
                             work_dir=Path(cfg.work_dir) / name.replace("/", "__") / last["details"]["run_id"])
    run_id = key if not force else f"{key}-f{sum(1 for e in concluded if e['details'].get('forced')) + 1}"
    work = Path(cfg.work_dir) / name.replace("/", "__") / run_id
    log = RefreshLog(work / "refresh.jsonl", run_id)
    log.write("run", "start", model=name, production=prod.version, data_fingerprint=fingerprint, force=force,
              registry=reg.where, new_data=cfg.new_data)
    old_holdout = history(prod.recipe, "holdout")
    prepared = _step(work, log, "prepare", lambda: prepare_new(recipe, prod, work))
    d = _step(work, log, "drift", lambda: measure_drift(recipe, prod, prepared, old_holdout, work))
    base = {"key": key, "run_id": run_id, "forced": force, "data_fingerprint": fingerprint, "drift": _brief(d)}
    if not d["degraded"] and not force:
        reason = (f"no drift: perplexity {d['perplexity_baseline']:.3f} -> {d['perplexity_new']:.3f} ({d['rise']:+.1%}, "
                  f"threshold +{cfg.threshold:.0%}); nothing to do")
        reg.log_event(name, "refresh", reason, prod.version, {**base, "decision": "no-drift"})
        log.write("decision", "no-drift", reason=reason)
        return RefreshResult("no-drift", name, run_id, prod.version, None, reason, d, {}, work, prepared)
    if not old_holdout:
        raise TailorError(f"{name} v{prod.version} records no held-out data for the gate's old set",
                          where="the version's recipe (eval.data or data.eval)",
                          fix="register production with a --recipe whose eval.data lists its held-out files")
    sup = _step(work, log, "supersede", lambda: supersede_old(recipe, prepared, old_holdout, work))
    mix = _step(work, log, "mix", lambda: mix_data(recipe, prod, prepared, work))
    trained = _step(work, log, "train", lambda: train_candidate(recipe, prod, mix, work))
    ecfg = drift.eval_settings(recipe, prepared["task"], cfg)
    old_kept = sup["old_holdout"]
    saved = {"old": work / "eval" / "production-old"} if (work / "eval" / "production-old" / "measure.json").is_file() \
        and not sup["superseded"] else {}
    g = _step(work, log, "gate", lambda: drift.gate(prod.path, trained["path"], old_kept, [prepared["eval"]], ecfg, cfg,
                                                     work / "gate", saved))
    g["superseded"] = {k: sup.get(k) for k in ("superseded", "kept", "path", "listed")}
    decision = "promoted" if g["passed"] else "rejected"
    lineage = {"train_data": history(prod.recipe, "train") + [prepared["train"]], "holdout": old_kept + [prepared["eval"]],
               "run_id": run_id, "mix": {k: v for k, v in mix.items() if k != "old_data"}}
    metrics = _candidate_metrics(g, prepared["task"], cfg.task_metric)
    mv = reg.register(name, trained["path"], base_path=trained["base_path"], recipe={**trained["recipe"], "lineage": lineage},
                      data_fingerprint=fingerprint, parent=prod.version, metrics=metrics,
                      stage="production" if g["passed"] else "rejected", note=f"tailor refresh run {run_id}",
                      reason=g["reason"], expect_production=prod.version,
                      details={**base, "decision": decision, "superseded": sup["superseded"], "gate": [{k: c[k] for k in ("set", "requirement", "a", "b", "holds")}
                                                                      for c in g["checks"]]})
    log.write("decision", decision, version=mv.version, reason=g["reason"])
    return RefreshResult(decision, name, run_id, mv.version if g["passed"] else prod.version, mv.version, g["reason"],
                         d, g, work, prepared)


def _brief(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _candidate_metrics(g: dict, task: str, task_metric: str | None) -> dict:
    """The candidate's metrics on its whole held-out set (old + new): the baseline of the next drift check."""
    ppl_key, tok_key = drift.PPL_KEYS[task]
    parts = {label: g["sets"][label]["candidate"] for label in ("old", "new") if label in g["sets"]}
    both = drift.combine(list(parts.values()), task_metric)
    out = {ppl_key: both["perplexity"], tok_key: both["tokens"], "n": both["n"],
           **{f"{label}/{ppl_key}": m["perplexity"] for label, m in parts.items()}}
    if task_metric and task_metric in both:
        out.update({task_metric: both[task_metric], **{f"{label}/{task_metric}": m[task_metric] for label, m in parts.items()}})
    return out
