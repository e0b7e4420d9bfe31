"""Train page (a form generated from the recipe schema, its YAML and `tailor train` command) and run pages
(live curves from metrics.jsonl, logs, stop and resume)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

from tailor.errors import TailorError
from tailor.ui.app import ctx_of, form_data, render
from tailor.ui.forms import EXTRA, FormErrors, recipe_yaml, schema_fields, settings_from_form, split_fields, validate
from tailor.ui.pages_data import data_settings
from tailor.ui.project import read_metrics

router = APIRouter()
FIELDS = schema_fields()
# Defaults a first run on a small machine should have: short, logged often, checkpointed, evaluated.
SUGGESTED = {"train.logging_steps": "5", "train.save_steps": "50"}



def _managed(ctx, name: str, run_dir: Path) -> dict:
    state = ctx.workspace.state()
    if not state.get("model"):
        raise FormErrors({"model": TailorError("no model chosen yet", where="Model page",
                                               fix="pick a model directory or build one from a preset on the Model page")})
    if not state.get("sources"):
        raise FormErrors({"data": TailorError("no data chosen yet", where="Data page", fix="upload or pick data on the Data page")})
    return {"model": {"path": state["model"]}, "data": data_settings(ctx),
            "train": {"output_dir": str(run_dir / "out")}}


def _page(request: Request, form: dict[str, str], errors: dict | None = None, preview: str | None = None, status: int = 200):
    ctx = ctx_of(request)
    basic, advanced = split_fields(FIELDS)
    runs = ctx.table.list(kind="train", limit=20)
    keys = {f.key for f in FIELDS} | {EXTRA}
    others = {k: e for k, e in (errors or {}).items() if k not in keys}  # section-wide checks, missing model or data
    return render(request, "train.html", status, active="/train", basic=basic, advanced=advanced, form=form,
                  errors=errors or {}, preview=preview, runs=runs, other_errors=others, state=ctx.workspace.state(),
                  extra_key=EXTRA)


@router.get("/train", response_class=HTMLResponse)
async def train_page(request: Request):
    return _page(request, dict(SUGGESTED))


def _recipe(ctx, form: dict[str, str], run_dir: Path) -> tuple[dict, str]:
    """(settings, YAML) of the form plus the page's own keys, validated; FormErrors on any problem."""
    from tailor.config import merge_settings

    settings = merge_settings(_managed(ctx, form.get("name", ""), run_dir), settings_from_form(form, FIELDS))
    validate(settings, FIELDS)
    return settings, recipe_yaml(settings)


@router.post("/train/preview", response_class=HTMLResponse)
async def preview(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    try:
        _, text = _recipe(ctx, form, ctx.workspace.runs / _run_name(form))
    except FormErrors as exc:
        return _page(request, form, exc.errors, status=400)
    return _page(request, form, preview=text)


def _run_name(form: dict) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", form.get("name", "").strip()).strip("-.")
    return name or "run"


@router.post("/train/start")
async def start_training(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    name = _run_name(form)
    try:
        settings, text = _recipe(ctx, form, ctx.workspace.runs / name)  # validated before any folder is made
    except FormErrors as exc:
        return _page(request, form, exc.errors, status=400)
    run_dir = ctx.workspace.new_dir("runs", name)
    settings["train"]["output_dir"] = str(run_dir / "out")
    recipe = run_dir / "recipe.yaml"
    recipe.write_text(recipe_yaml(settings), encoding="utf-8")
    job = ctx.table.add("train", f"train {run_dir.name}", ctx.cli("train", str(recipe)), device=ctx.device,
                        run_dir=run_dir / "out", meta={"recipe": str(recipe), "name": run_dir.name})
    return RedirectResponse(f"/runs/{job.id}", status_code=303)


@router.get("/runs/{job_id}", response_class=HTMLResponse)
async def run_page(request: Request, job_id: int):
    ctx = ctx_of(request)
    job = ctx.table.get(job_id)
    recipe = Path(job.meta.get("recipe", ""))
    final = Path(job.run_dir or "") / "final"
    queued_behind = [j for j in ctx.table.list(kind="train", states=("running",)) if j.id != job.id] if job.state == "queued" else []
    return render(request, "run.html", active="/train", job=job, log=ctx.table.log_tail(job_id, 40),
                  recipe_text=recipe.read_text(encoding="utf-8") if recipe.is_file() else "", recipe_path=str(recipe),
                  final=str(final) if final.is_dir() else None, queued_behind=queued_behind,
                  resumable=job.state in ("failed", "stopped") and any(Path(job.run_dir or "").glob("checkpoint-*")))


@router.get("/api/runs/{job_id}/metrics")
async def metrics(request: Request, job_id: int, after: int = 0):
    job = ctx_of(request).table.get(job_id)
    rows = read_metrics(job.run_dir, after) if job.run_dir else []
    return {"state": job.state, "next": after + len(rows), "rows": rows}


@router.get("/runs/{job_id}/recipe.yaml")
async def download_recipe(request: Request, job_id: int):
    job = ctx_of(request).table.get(job_id)
    p = Path(job.meta.get("recipe", ""))
    if not p.is_file():
        raise TailorError(f"run {job_id} has no recipe file", where=str(p))
    return PlainTextResponse(p.read_text(encoding="utf-8"), media_type="application/x-yaml",
                             headers={"Content-Disposition": f'attachment; filename="{job.meta.get("name", "run")}.yaml"'})


@router.post("/runs/{job_id}/resume")
async def resume(request: Request, job_id: int):
    """Continue a stopped or failed run from its latest checkpoint (train.resume=true, the same weights as an
    uninterrupted run)."""
    ctx = ctx_of(request)
    job = ctx.table.get(job_id)
    if job.kind != "train" or job.active:
        raise TailorError(f"job {job_id} is {job.state}", where="resume", fix="resume a stopped or failed training run")
    argv = [a for a in job.argv if a != "train.resume=true"] + ["train.resume=true"]
    new = ctx.table.add("train", f"{job.title} (resumed)", argv, device=job.device, run_dir=job.run_dir,
                        meta={**job.meta, "resumed_from": job.id})
    return RedirectResponse(f"/runs/{new.id}", status_code=303)
