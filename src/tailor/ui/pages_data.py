"""Start, Data and Model pages: what the machine has, the user's data (upload, pick, prepare, inspect) and the
model to start from (a local directory or a preset built here), with `tailor plan`'s fit and time per method."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from tailor.errors import TailorError
from tailor.ui.app import ctx_of, error_dict, form_data, render
from tailor.ui.machine import load, machine_info
from tailor.ui.project import find_models, model_summary
from tailor.ui.roots import check_data_file, save_upload

router = APIRouter()




def _last(ctx, kind: str):
    jobs = ctx.table.list(kind=kind, limit=1)
    return jobs[0] if jobs else None


@router.get("/", response_class=HTMLResponse)
async def start(request: Request):
    ctx = ctx_of(request)
    state = ctx.workspace.state()
    return render(request, "start.html", active="/", machine=machine_info(), load=load(), state=state,
                   jobs=ctx.table.list(limit=10), models=find_models(ctx.roots.roots)[:20], roots=ctx.roots.roots)


# ---------------------------------------------------------------------------------------------
# Data


REGISTRY_SEP = "::"  # a project source "DIR/dataset_info.json::NAME" is dataset NAME of that LLaMA-Factory registry


def _source_info(path: str) -> dict:
    p = Path(path.split(REGISTRY_SEP)[0])
    info: dict = {"path": path, "name": p.name}
    try:
        if REGISTRY_SEP in path:
            name = path.split(REGISTRY_SEP, 1)[1]
            entry = json.loads(p.read_text(encoding="utf-8"))[name]
            info.update(name=f"{name} ({p.parent.name}/{p.name})", kind="LLaMA-Factory dataset",
                        detail=", ".join(f"{k}: {v}" for k, v in entry.items() if isinstance(v, str))[:200])
        elif p.is_dir():
            info.update(kind="folder", detail=", ".join(sorted(c.name for c in p.iterdir() if c.is_file())[:8]))
        else:
            checked = check_data_file(p, display=p.name, limit=2000)
            info.update(kind="file", rows=checked["rows"], formats=checked["formats"], first=checked["first"][:3])
    except TailorError as exc:
        info["error"] = error_dict(exc)
    except (OSError, ValueError) as exc:
        info["error"] = {"what": str(exc), "where": path, "fix": "pick another file"}
    return info


def _data_context(request: Request, **extra) -> dict:
    ctx = ctx_of(request)
    ws = ctx.workspace
    state = ws.state()
    prep, insp = _last(ctx, "prepare"), _last(ctx, "inspect")
    report = inspect = None
    if (ws.prepared_dir / "report.json").is_file():
        report = json.loads((ws.prepared_dir / "report.json").read_text(encoding="utf-8"))
    if (ws.data / "inspect.json").is_file():
        inspect = json.loads((ws.data / "inspect.json").read_text(encoding="utf-8"))
    return {"active": "/data", "state": state, "sources": [_source_info(s) for s in state.get("sources", [])],
            "prepare_job": prep, "inspect_job": insp, "report": report, "inspect": inspect,
            "histogram": ws.data / "token_lengths.png", "roots": ctx.roots.roots,
            "max_upload_mb": ctx.max_upload_bytes / 2**20, **extra}


@router.get("/data", response_class=HTMLResponse)
async def data_page(request: Request):
    return render(request, "data.html", **_data_context(request))


@router.put("/api/upload")
async def upload(request: Request, name: str):
    """The browser PUTs the file's bytes (no multipart parsing needed); refused files leave nothing behind."""
    ctx = ctx_of(request)
    declared = int(request.headers.get("content-length") or 0)
    if declared > ctx.max_upload_bytes:
        raise TailorError(f"{name} is larger than the upload limit of {ctx.max_upload_bytes / 2**20:.0f} MiB",
                          where="upload", fix="start `tailor ui --max-upload-mb N`, or pick the file from a root folder")
    path = await save_upload(request.stream(), name, ctx.workspace.uploads, ctx.max_upload_bytes)
    state = ctx.workspace.state()
    ctx.workspace.update(sources=[*state.get("sources", []), str(path)])
    return {"path": str(path), "name": path.name}


@router.get("/api/browse")
async def browse(request: Request, path: str | None = None):
    return JSONResponse(ctx_of(request).roots.listing(path))


@router.post("/data/add")
async def add_source(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    try:
        p = ctx.roots.check(form.get("path", ""), "data path")
        if not p.exists():
            raise TailorError(f"{p} does not exist", where="data path", fix="pick an existing file or folder")
        added = [str(p)]
        if p.name == "dataset_info.json":
            added = [f"{p}{REGISTRY_SEP}{name}" for name in _registry_names(p)]  # each dataset a source (remove any)
        elif p.is_file():
            check_data_file(p, display=p.name, limit=2000)
    except TailorError as exc:
        return render(request, "data.html", **_data_context(request, add_error=exc, add_value=form.get("path", "")), status=400)
    state = ctx.workspace.state()
    have = state.get("sources", [])
    ctx.workspace.update(sources=have + [a for a in added if a not in have])
    return RedirectResponse("/data", status_code=303)


def _registry_names(p: Path) -> list[str]:
    try:
        entries = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TailorError(f"{p.name} is not readable JSON: {exc}", where=str(p), fix="pick a LLaMA-Factory dataset_info.json") from None
    if not isinstance(entries, dict) or not entries:
        raise TailorError(f"{p.name} lists no datasets", where=str(p), fix="a mapping of dataset name -> {file_name: ...}")
    return list(entries)


@router.post("/data/remove")
async def remove_source(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    state = ctx.workspace.state()
    ctx.workspace.update(sources=[s for s in state.get("sources", []) if s != form.get("path")])
    return RedirectResponse("/data", status_code=303)


def data_settings(ctx, eval_share: float | None = None) -> dict:
    """The data section the project's choices make (sources, split, prepared folder): Data prepares it, Train
    trains on it (the preparation is reused when inputs, settings and tokenizer are unchanged)."""
    state = ctx.workspace.state()
    sources = []
    for s in state.get("sources", []):
        if REGISTRY_SEP in s:
            registry, name = s.split(REGISTRY_SEP, 1)
            sources.append({"registry": registry, "name": name})
        else:
            sources.append({"path": s})
    share = state.get("eval_share", 0.1) if eval_share is None else eval_share
    return {"sources": sources, "split": {"eval": share}, "prepared_dir": str(ctx.workspace.prepared_dir)}


@router.post("/data/prepare")
async def prepare(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    ws = ctx.workspace
    state = ws.state()
    try:
        if not state.get("sources"):
            raise TailorError("no data chosen yet", where="Data page", fix="upload a file or pick one first")
        try:
            share = float(form.get("eval_share") or 0.1)
        except ValueError:
            raise TailorError(f"held-out share {form.get('eval_share')!r} is not a number", where="held-out share",
                              fix="a share below 1 (0.1 = 10%) or a row count") from None
        from tailor.config import build, Recipe

        settings = {"data": data_settings(ctx, share)}
        if state.get("model"):
            settings["model"] = {"path": state["model"]}
        build(Recipe, settings, "Data page")  # the schema's own checks, before anything is written
    except TailorError as exc:
        return render(request, "data.html", **_data_context(request, prepare_error=exc), status=400)
    ws.update(eval_share=share)
    recipe = ws.data / "data.yaml"
    recipe.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    for name in ("inspect.json", "token_lengths.png"):
        (ws.data / name).unlink(missing_ok=True)
    job = ctx.table.add("prepare", "prepare data", ctx.cli("data", "prepare", str(recipe), "--force"), run_dir=ws.prepared_dir)
    ctx.table.add("inspect", "inspect prepared data", ctx.cli_task("inspect", str(ws.prepared_dir), str(ws.data)),
                  after=job.id, run_dir=ws.data)
    return RedirectResponse("/data", status_code=303)


@router.get("/data/status", response_class=HTMLResponse)
async def data_status(request: Request):
    return render(request, "_data_results.html", **_data_context(request))


# ---------------------------------------------------------------------------------------------
# Model


def start_plan(ctx, model_path: str) -> None:
    """Plan every training method for this model on this machine (`tailor.plan`), as a job: it builds the model on
    the meta device and times a matmul, work the UI process does not do itself."""
    ws = ctx.workspace
    recipe = ws.models / "plan.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"path": model_path}, "data": data_settings(ctx)}, sort_keys=False), encoding="utf-8")
    (ws.models / "plan.json").unlink(missing_ok=True)
    ctx.table.add("plan", "plan training methods", ctx.cli_task("plan", str(recipe), str(ws.models / "plan.json")), run_dir=ws.models)


def _plan(ctx, model_path: str) -> tuple[list[dict], object]:
    f = ctx.workspace.models / "plan.json"
    job = _last(ctx, "plan")
    if f.is_file():
        data = json.loads(f.read_text(encoding="utf-8"))
        if data.get("model") == model_path:
            return data["plans"], job
    return [], job


@router.get("/model", response_class=HTMLResponse)
async def model_page(request: Request, error: str | None = None):
    from tailor.models.presets import PRESETS

    ctx = ctx_of(request)
    state = ctx.workspace.state()
    current, current_error, plan, plan_job = None, None, [], None
    build = _last(ctx, "model")
    if build and build.state == "done" and build.meta.get("select") and not build.meta.get("applied"):
        state = ctx.workspace.update(model=build.meta["select"])  # a model built here becomes the chosen one
        ctx.table.update(build.id, meta={**build.meta, "applied": True})
        start_plan(ctx, state["model"])
    if state.get("model"):
        try:
            current = model_summary(state["model"])
            plan, plan_job = _plan(ctx, state["model"])
        except TailorError as exc:
            current_error = exc
    return render(request, "model.html", active="/model", state=state, current=current, current_error=current_error,
                   models=find_models(ctx.roots.roots), presets=list(PRESETS), build_job=_last(ctx, "model"),
                   plan=plan, plan_job=plan_job, roots=ctx.roots.roots)


@router.post("/model/select")
async def select_model(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    try:
        p = ctx.roots.check(form.get("path", ""), "model directory")
        summary = model_summary(p)
        if summary["kind"] != "model":
            raise TailorError(f"{p} is an adapter: training starts from a full model", where="model directory",
                              fix="pick its base model (" + str(summary.get("base")) + "), or merge it on the Ship page first")
    except TailorError as exc:
        return render(request, "error.html", active="/model", error=exc, back="/model", status=400)
    ctx.workspace.update(model=str(p))
    start_plan(ctx, str(p))
    return RedirectResponse("/model", status_code=303)


@router.post("/model/build")
async def build_model(request: Request):
    """A new model from a preset, with a byte-level BPE tokenizer trained on the project's data first."""
    from tailor.models.presets import PRESETS

    ctx = ctx_of(request)
    form = form_data(await request.body())
    ws = ctx.workspace
    try:
        preset = form.get("preset", "")
        if preset not in PRESETS:
            raise TailorError(f"unknown preset {preset!r}", where="preset", fix="pick one of " + ", ".join(PRESETS))
        try:
            vocab = int(form.get("vocab_size") or 1000)
        except ValueError:
            raise TailorError("vocabulary size must be a whole number", where="vocabulary size", fix="e.g. 1000") from None
        if vocab < 300:
            raise TailorError(f"vocabulary size {vocab} is too small", where="vocabulary size",
                              fix="at least 300 (the 256 bytes and the chat template's special tokens)")
        files = [s for s in ws.state().get("sources", []) if REGISTRY_SEP not in s and Path(s).is_file()]
        if not files:
            raise TailorError("the tokenizer is trained on your data, and no data file is chosen yet", where="Model page",
                              fix="upload or pick a data file on the Data page first")
    except TailorError as exc:
        return render(request, "error.html", active="/model", error=exc, back="/model", status=400)
    out = ws.new_dir("models", f"{preset}-{len(list(ws.models.iterdir())) + 1}")
    tok = ctx.table.add("model", f"train tokenizer ({vocab} tokens)",
                        ctx.cli("tokenizer", "train", "--data", *files, "--vocab-size", str(vocab), "--out", str(out / "tokenizer")),
                        run_dir=out / "tokenizer")
    ctx.table.add("model", f"build {preset}", ctx.cli("model", "init", preset, "--out", str(out / "model"),
                                                      "--tokenizer", str(out / "tokenizer")),
                  after=tok.id, run_dir=out / "model", meta={"select": str(out / "model")})
    return RedirectResponse("/model", status_code=303)
