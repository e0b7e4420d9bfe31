"""Evaluate (base vs tuned with `tailor compare`'s confidence intervals), Chat (streaming, two models side by
side, each answered by a `tailor serve` job) and Ship (merge, quantize, export with the before/after table,
downloads, registry)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from tailor.errors import TailorError
from tailor.ui.app import ctx_of, form_data, render
from tailor.ui.project import find_models, model_summary

router = APIRouter()
EXPORT_FORMATS = ("safetensors", "gguf", "onnx", "web")
QUANTIZE_METHODS = ("int8-dynamic", "int8-weight", "int4-weight")




def _model(ctx, path: str, where: str) -> Path:
    p = ctx.roots.check(path, where)
    model_summary(p)  # a TailorError for a folder that is not a model or adapter
    return p


def _choices(ctx) -> list[dict]:
    return [m for m in find_models(ctx.roots.roots) if m.get("kind") in ("model", "adapter")]


# ---------------------------------------------------------------------------------------------
# Evaluate


@router.get("/evaluate", response_class=HTMLResponse)
async def evaluate_page(request: Request, error: str | None = None):
    ctx = ctx_of(request)
    state = ctx.workspace.state()
    runs = [j for j in ctx.table.list(kind="train", states=("done",))]
    tuned = str(Path(runs[0].run_dir) / "final") if runs else ""
    eval_file = ctx.workspace.eval_file()
    return render(request, "evaluate.html", active="/evaluate", models=_choices(ctx), a=state.get("model") or "",
                   b=tuned, data=str(eval_file) if eval_file else "", jobs=ctx.table.list(kind="compare", limit=10))


@router.post("/evaluate/start")
async def evaluate_start(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    try:
        a = _model(ctx, form.get("a", ""), "model A (base)")
        b = _model(ctx, form.get("b", ""), "model B (tuned)")
        data = ctx.roots.check(form.get("data", ""), "evaluation data")
        if not data.is_file():
            raise TailorError(f"{data} is not a file", where="evaluation data", fix="prepare data with a held-out share, or pick a file")
        n = int(form.get("max_new_tokens") or 32)
    except (TailorError, ValueError) as exc:
        exc = exc if isinstance(exc, TailorError) else TailorError(str(exc), where="answer length", fix="a whole number")
        return render(request, "error.html", 400, active="/evaluate", error=exc, back="/evaluate")
    out = ctx.workspace.new_dir("evals", f"{a.name}-vs-{b.parent.name if b.name == 'final' else b.name}")
    job = ctx.table.add("compare", f"compare {a.name} vs {b.parent.name}/{b.name}",
                        ctx.cli("compare", str(a), str(b), f"max_new_tokens={n}", "--data", str(data), "--out", str(out)),
                        device=ctx.device, run_dir=out)
    return RedirectResponse(f"/evaluate/{job.id}", status_code=303)


@router.get("/evaluate/{job_id}", response_class=HTMLResponse)
async def evaluate_result(request: Request, job_id: int):
    ctx = ctx_of(request)
    job = ctx.table.get(job_id)
    result = None
    f = Path(job.run_dir or "") / "compare.json"
    if job.state == "done" and f.is_file():
        result = json.loads(f.read_text(encoding="utf-8"))
    return render(request, "compare.html", active="/evaluate", job=job, result=result,
                   report=str(Path(job.run_dir) / "report.html") if result else None, log=ctx.table.log_tail(job_id, 30))


# ---------------------------------------------------------------------------------------------
# Chat: each model is answered by its own `tailor serve` job on a free loopback port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@router.get("/chat", response_class=HTMLResponse)
async def chat_page(request: Request):
    ctx = ctx_of(request)
    servers = [j for j in ctx.table.list(kind="serve", states=("queued", "running"))]
    return render(request, "chat.html", active="/chat", models=_choices(ctx), servers=servers)


@router.post("/chat/start")
async def chat_start(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    try:
        paths = [_model(ctx, form[k], f"model {i + 1}") for i, k in enumerate(("model1", "model2")) if form.get(k)]
        if not paths:
            raise TailorError("no model chosen", where="Chat page", fix="pick a model or a trained run")
    except TailorError as exc:
        return render(request, "error.html", 400, active="/chat", error=exc, back="/chat")
    for job in ctx.table.list(kind="serve", states=("queued", "running")):
        ctx.runner.stop(job.id)  # one chat session at a time: its models hold memory
    for p in paths:
        port = _free_port()
        ctx.table.add("serve", f"chat with {p.parent.name + '/' if p.name == 'final' else ''}{p.name}",
                      ctx.cli("serve", str(p), "--host", "127.0.0.1", "--port", str(port), "--model-name", "m"),
                      run_dir=p, meta={"port": port, "model": str(p)})
    return RedirectResponse("/chat", status_code=303)


async def _server(ctx, job_id: int) -> str:
    job = ctx.table.get(job_id)
    if job.kind != "serve" or job.state != "running":
        raise TailorError(f"chat server {job_id} is {job.state}", where="Chat page", fix="start the chat again")
    return f"http://127.0.0.1:{int(job.meta['port'])}"


@router.get("/api/chat/{job_id}/ready")
async def chat_ready(request: Request, job_id: int):
    ctx = ctx_of(request)
    job = ctx.table.get(job_id)
    if job.state != "running":
        return {"ready": False, "state": job.state, "log": ctx.table.log_tail(job_id, 8)}
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            r = await client.get(await _server(ctx, job_id) + "/ready")
        return {"ready": r.status_code == 200, "state": job.state}
    except httpx.HTTPError:
        return {"ready": False, "state": job.state}


@router.post("/api/chat/{job_id}")
async def chat(request: Request, job_id: int):
    """Stream the model's answer: the server's OpenAI-style SSE events passed through as they come."""
    ctx = ctx_of(request)
    body = await request.json()
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TailorError("no message", where="chat", fix="type a message")
    url = await _server(ctx, job_id)
    payload = {"model": "m", "messages": messages, "stream": True,
               "max_tokens": max(1, min(int(body.get("max_tokens") or 128), 1024)),
               "temperature": float(body.get("temperature") or 0.0)}

    async def relay():
        async with httpx.AsyncClient(timeout=None) as client:
            async with client.stream("POST", url + "/v1/chat/completions", json=payload) as r:
                if r.status_code != 200:
                    text = (await r.aread()).decode(errors="replace")
                    yield f"data: {json.dumps({'error': text[:500]})}\n\n"
                    return
                async for line in r.aiter_lines():
                    if line:
                        yield line + "\n\n"

    return StreamingResponse(relay(), media_type="text/event-stream")


# ---------------------------------------------------------------------------------------------
# Ship


def _reports(job) -> dict | None:
    for name in ("export_report.json", "compression_report.json"):
        f = Path(job.run_dir or "") / name
        if f.is_file():
            return json.loads(f.read_text(encoding="utf-8"))
    return None


def _files(job) -> list[dict]:
    d = Path(job.run_dir or "")
    if job.state != "done" or not d.is_dir():
        return []
    return [{"path": str(f), "name": str(f.relative_to(d)), "mb": round(f.stat().st_size / 2**20, 2)}
            for f in sorted(d.rglob("*")) if f.is_file()][:60]


def _versions(db: Path) -> list[dict]:
    """The registry's versions (read in the UI process: one small SQLite query), newest first."""
    if not db.is_file():
        return []
    from tailor.mlops.registry import Registry

    with Registry(db, create=False) as reg:
        return [v.to_dict() for v in sorted(reg.versions(), key=lambda v: (v.name, -v.version))]


@router.get("/ship", response_class=HTMLResponse)
async def ship_page(request: Request):
    ctx = ctx_of(request)
    runs = ctx.table.list(kind="train", states=("done",))
    jobs = ctx.table.list(kind="ship", limit=10)
    shipped = [{"job": j, "report": _reports(j) if j.state == "done" else None, "files": _files(j)} for j in jobs]
    return render(request, "ship.html", active="/ship", models=_choices(ctx), shipped=shipped,
                   default=str(Path(runs[0].run_dir) / "final") if runs else "", formats=EXPORT_FORMATS,
                   methods=QUANTIZE_METHODS, eval_file=ctx.workspace.eval_file(),
                   registry=str(ctx.workspace.root / "registry.db"), reg_jobs=ctx.table.list(kind="registry", limit=5),
                   zips=ctx.table.list(kind="zip", limit=10), versions=_versions(ctx.workspace.root / "registry.db"))


@router.post("/ship/start")
async def ship_start(request: Request):
    ctx = ctx_of(request)
    form = form_data(await request.body())
    action = form.get("action", "")
    try:
        model = _model(ctx, form.get("model", ""), "model to ship")
        if action not in ("merge", "quantize", "export"):
            raise TailorError(f"unknown action {action!r}", where="Ship page", fix="merge, quantize or export")
        label = model.parent.name if model.name == "final" else model.name
        out = ctx.workspace.new_dir("ship", f"{label}-{action}-{form.get('format') or form.get('method') or ''}".rstrip("-"))
        measure = []
        eval_file = ctx.workspace.eval_file()
        if eval_file is not None and action != "merge":
            raw = form.get("max_examples") or "16"
            if not raw.isdigit() or int(raw) < 1:
                raise TailorError(f"examples measured must be a whole number >= 1, not {form.get('max_examples')!r}",
                                  where="examples measured", fix="e.g. 16 (more: a steadier before/after table, slower)")
            n = int(raw)
            measure = ["--eval-data", str(eval_file), "--max-examples", str(n)]
        if action == "merge":
            if model_summary(model)["kind"] != "adapter":
                raise TailorError(f"{model} is a full model: nothing to merge", where="model to ship",
                                  fix="merge applies to adapters (LoRA runs); export or quantize a full model")
            argv = ctx.cli("merge", str(model), "--out", str(out))
        elif action == "quantize":
            method = form.get("method", "int8-dynamic")
            if method not in QUANTIZE_METHODS:
                raise TailorError(f"unknown quantization method {method!r}", where="method", fix=", ".join(QUANTIZE_METHODS))
            argv = ctx.cli("quantize", str(model), "--method", method, "--out", str(out), *measure)
        else:
            fmt = form.get("format", "safetensors")
            if fmt not in EXPORT_FORMATS:
                raise TailorError(f"unknown export format {fmt!r}", where="format", fix=", ".join(EXPORT_FORMATS))
            argv = ctx.cli("export", str(model), "--format", fmt, "--out", str(out), *measure)
    except TailorError as exc:
        return render(request, "error.html", 400, active="/ship", error=exc, back="/ship")
    ctx.table.add("ship", f"{action} {label} {form.get('format') or form.get('method') or ''}".strip(), argv,
                  device=ctx.device, run_dir=out)
    return RedirectResponse("/ship", status_code=303)


@router.post("/ship/zip")
async def zip_folder(request: Request):
    """One .zip of a result folder for download, written by a job (a large model takes a while to pack)."""
    import sys

    ctx = ctx_of(request)
    folder = ctx.roots.check(form_data(await request.body()).get("path", ""), "folder to download")
    if not folder.is_dir():
        raise TailorError(f"{folder} is not a folder", where="download", fix="pick a result folder on the Ship page")
    out = ctx.workspace.ship / f"{folder.parent.name}-{folder.name}.zip" if folder.name == "final" else \
        ctx.workspace.ship / f"{folder.name}.zip"
    ctx.table.add("zip", f"zip {out.name}", [sys.executable, "-m", "zipfile", "-c", str(out), str(folder)],
                  run_dir=folder, meta={"zip": str(out)})
    return RedirectResponse("/ship", status_code=303)


@router.post("/ship/registry")
async def registry(request: Request):
    """Register a model in the workspace's registry (and promote it to production when asked)."""
    ctx = ctx_of(request)
    form = form_data(await request.body())
    db = str(ctx.workspace.root / "registry.db")
    try:
        model = _model(ctx, form.get("model", ""), "model to register")
        name = form.get("name", "").strip()
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise TailorError(f"model name {name!r} is not usable", where="registry name", fix="letters, digits, - _ . e.g. support-bot")
    except TailorError as exc:
        return render(request, "error.html", 400, active="/ship", error=exc, back="/ship")
    stage = "production" if form.get("promote") == "on" else "candidate"
    ctx.table.add("registry", f"register {name} ({stage})",
                  ctx.cli("registry", "register", name, str(model), "--url", db, "--stage", stage), run_dir=model)
    return RedirectResponse("/ship", status_code=303)


@router.post("/ship/promote")
async def promote(request: Request):
    """Make a registered version production (`tailor registry promote`; the previous one is archived)."""
    ctx = ctx_of(request)
    form = form_data(await request.body())
    name, version = form.get("name", ""), form.get("version", "")
    known = {(v["name"], str(v["version"])) for v in _versions(ctx.workspace.root / "registry.db")}
    if (name, version) not in known:
        raise TailorError(f"no version {version!r} of {name!r} in the registry", where="promote",
                          fix="pick a version from the registry table")
    ctx.table.add("registry", f"promote {name} v{version}",
                  ctx.cli("registry", "promote", name, version, "--url", str(ctx.workspace.root / "registry.db"),
                          "--reason", "promoted in tailor ui"))
    return RedirectResponse("/ship", status_code=303)
