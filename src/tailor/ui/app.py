"""The UI's FastAPI app: server-rendered pages (Jinja2), a job runner, and guards for a shared machine.

Guards, in order, on every request: the Host header must name this server (a page on another site cannot reach
it through DNS rebinding); with an access token (any address other than loopback) the request must carry it
(query `?token=` once, then a cookie); a state-changing request must come from this origin (no cross-site form
posts). Pages read files and the job table only; every heavy step runs as a job in a subprocess.
"""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tailor.errors import TailorError
from tailor.ui.jobs import JobTable, Runner
from tailor.ui.project import Workspace
from tailor.ui.roots import Roots

HERE = Path(__file__).parent
COOKIE = "tailor_ui_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
PAGES = [("/", "Start"), ("/data", "Data"), ("/model", "Model"), ("/train", "Train"), ("/evaluate", "Evaluate"),
         ("/chat", "Chat"), ("/ship", "Ship"), ("/jobs", "Jobs")]


@dataclass
class Context:
    """What every route reads: the settings, the workspace, the job table and runner, the allowed roots."""

    workspace: Workspace
    roots: Roots
    table: JobTable
    runner: Runner
    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None
    max_upload_bytes: int = 512 * 2**20
    device: str = "default"
    allowed_hosts: set[str] = field(default_factory=set)

    def cli(self, *args: str) -> list[str]:
        """The command line of a tailor command (what the job runs is what a user would type)."""
        return [sys.executable, "-m", "tailor.cli", *args]

    def cli_task(self, *args: str) -> list[str]:
        """The command line of a UI task (tailor.ui.tasks: stage functions whose results the pages read as JSON)."""
        return [sys.executable, "-m", "tailor.ui.tasks", *args]


def form_data(body: bytes) -> dict[str, str]:
    """An urlencoded form body as a dict (the last value of a repeated name wins)."""
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def ctx_of(request: Request) -> "Context":
    return request.app.state.ctx


def render(request: Request, name: str, status: int = 200, **values):
    """A page from its template (templates/NAME) with `values`."""
    return request.app.state.templates.TemplateResponse(request, name, values, status_code=status)


def error_dict(exc: TailorError) -> dict:
    return {"what": exc.what, "where": exc.where, "fix": exc.fix}


def create_app(workspace: str | Path, roots: list[str | Path] | None = None, *, host: str = "127.0.0.1",
               port: int = 7860, token: str | None = None, max_upload_mb: float = 512, device: str = "default",
               slots_per_device: int = 1, nice: int = 10, runner_interval: float = 0.5) -> FastAPI:
    """The UI app over WORKSPACE; file access confined to the workspace and `roots`.

    `token` is required on every request when given (tailor.ui.server makes one for non-loopback addresses)."""
    ws = Workspace(workspace)
    table = JobTable(ws.root)
    # COLUMNS: the commands' rich tables and progress lines are written to a log file, read in a wide page
    env = {"COLUMNS": "160"}
    if device != "default":
        env["TAILOR_DEVICE"] = device  # every job's stage picks this device (tailor.models.loading.resolve_device)
    runner = Runner(table, slots_per_device, nice, env=env)
    ctx = Context(ws, Roots([ws.root, *(roots or [])]), table, runner, host, port,
                  token, int(max_upload_mb * 2**20), device)
    ctx.allowed_hosts = {h for h in (*LOOPBACK, host) if h not in ("0.0.0.0", "::")}
    @asynccontextmanager
    async def lifespan(app):
        ctx.runner.start(runner_interval)
        yield
        ctx.runner.close()

    app = FastAPI(title="tailor ui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.ctx = ctx
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(pages=PAGES, fmt_time=_fmt_time, fmt_dur=_fmt_dur, fmt_num=_fmt_num)
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        hostname = (request.headers.get("host") or "").rsplit(":", 1)[0] if not (request.headers.get("host") or "").startswith("[") \
            else (request.headers.get("host") or "").split("]")[0] + "]"
        if ctx.host not in ("0.0.0.0", "::") and hostname not in ctx.allowed_hosts:
            return PlainTextResponse(f"unknown host {hostname!r}: open the address `tailor ui` printed", status_code=421)
        if ctx.token:
            given = request.query_params.get("token") or request.cookies.get(COOKIE) or \
                request.headers.get("authorization", "").removeprefix("Bearer ")
            if not secrets.compare_digest(given or "", ctx.token):
                return PlainTextResponse("this UI needs its access token: open the address with ?token=... that "
                                         "`tailor ui` printed when it started", status_code=401)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("origin")
            if origin and urlsplit(origin).netloc != request.headers.get("host"):
                return PlainTextResponse("cross-site request refused", status_code=403)
        response = await call_next(request)
        if ctx.token and request.query_params.get("token"):
            response.set_cookie(COOKIE, ctx.token, httponly=True, samesite="strict")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                    "style-src 'self' 'unsafe-inline'; script-src 'self'")
        return response

    @app.exception_handler(TailorError)
    async def tailor_error(request: Request, exc: TailorError):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": error_dict(exc)}, status_code=400)
        return templates.TemplateResponse(request, "error.html", {"error": exc, "active": ""}, status_code=400)

    from tailor.ui import pages_data, pages_ship, pages_train

    for module in (pages_data, pages_train, pages_ship):
        app.include_router(module.router)

    @app.get("/files")
    async def files(path: str, download: int = 0):
        p = ctx.roots.check(path, "file")
        if not p.is_file():
            raise TailorError(f"{p} is not a file", where="download", fix="pick a file from the page's list")
        if p.suffix == ".html" and not download:
            # tailor's reports are self-contained (inline CSS, data: images, no script); any other HTML file under
            # a root is shown sandboxed too, so it cannot script the UI's origin
            return FileResponse(p, media_type="text/html", headers={
                "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"})
        return FileResponse(p, filename=p.name if download else None)

    @app.get("/jobs", response_class=HTMLResponse)
    async def jobs_page(request: Request):
        return templates.TemplateResponse(request, "jobs.html", {"active": "/jobs", "jobs": ctx.table.list()})

    @app.get("/jobs/table", response_class=HTMLResponse)
    async def jobs_table(request: Request, kind: str | None = None):
        return templates.TemplateResponse(request, "_jobs.html", {"jobs": ctx.table.list(kind=kind, limit=50)})

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job_page(request: Request, job_id: int):
        job = ctx.table.get(job_id)
        if job.kind == "train":
            return RedirectResponse(f"/runs/{job_id}", status_code=303)
        return templates.TemplateResponse(request, "job.html", {"active": "/jobs", "job": job, "log": ctx.table.log_tail(job_id, 60)})

    @app.get("/jobs/{job_id}/status", response_class=HTMLResponse)
    async def job_status(request: Request, job_id: int):
        job = ctx.table.get(job_id)
        return templates.TemplateResponse(request, "_status.html", {"job": job, "log": ctx.table.log_tail(job_id, 30)})

    @app.get("/api/jobs/{job_id}")
    async def job_json(job_id: int):
        return {**ctx.table.get(job_id).to_dict(), "log": ctx.table.log_tail(job_id, 30)}

    @app.post("/jobs/{job_id}/stop")
    async def stop(request: Request, job_id: int):
        ctx.runner.stop(job_id)
        return RedirectResponse(request.headers.get("referer") or f"/jobs/{job_id}", status_code=303)

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)

    return app


def _fmt_time(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def _fmt_dur(a: float | None, b: float | None = None) -> str:
    if not a:
        return "-"
    s = int((b or time.time()) - a)
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _fmt_num(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}"
    return "-" if v is None else str(v)
