"""The FastAPI app factory: routes, OpenAI-shaped errors, API keys, body limits and request metrics.

Two small ASGI middlewares run before FastAPI sees a request: the API-key check (so a request
without a valid key gets 401 before its body is even parsed) and the body limit (the body is read
up to serve.max_body_bytes; past it the answer is 413, whether or not Content-Length was sent).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tailor.config import ServeConfig
from tailor.serving.engine import Engine
from tailor.serving.metrics import new_metrics
from tailor.serving.routes import APIError, ServerState, router
from tailor.serving.safety import InputGuard, OutputFilter, key_allowed, load_api_keys

log = logging.getLogger(__name__)

OPEN_PATHS = ("/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/generate", "/health", "/ready", "/metrics",
           "/admin/reload"}


def create_app(cfg: ServeConfig, engine: Engine, model_name: str | None = None) -> FastAPI:
    """An OpenAI-compatible app serving `engine` (started with the app, stopped on shutdown)."""
    import tailor

    if engine.metrics is None:
        engine.metrics = new_metrics()
    state = ServerState(cfg=cfg, engine=engine, model_name=model_name or cfg.model_name or "tailor",
                        guard=InputGuard(cfg), output=OutputFilter(cfg))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not state.engine.alive():
            state.engine.start()
        # A registry follower (set on the state after create_app) polls while the server runs.
        polling = asyncio.get_running_loop().create_task(state.follower.run()) if state.follower else None
        yield
        if polling:
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)
            await state.follower.close()
        state.engine.stop()  # the engine serving now, which after a swap is not the one passed in

    app = FastAPI(title="tailor", version=getattr(tailor, "__version__", "0"), lifespan=lifespan,
                  description="OpenAI-compatible API for a model customized with tailor.")
    app.state.tailor = state
    app.include_router(router)
    app.openapi = lambda: _openapi(app, state)
    _add_error_handlers(app)
    keys = load_api_keys(cfg)
    # Outermost first: metrics see every answer (401 and 413 included), then keys, then the body limit.
    app.add_middleware(_BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(_ApiKeys, keys=keys)
    app.add_middleware(_RequestMetrics, metrics=engine.metrics)
    return app


def _openapi(app: FastAPI, state: ServerState) -> dict:
    """The spec with this server's facts filled in: the model names it serves and its token and `n` limits."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    names = [state.model_name, *state.cfg.adapters]
    limits = {"model": {"enum": names}, "max_tokens": {"maximum": state.cfg.max_tokens},
              "max_completion_tokens": {"maximum": state.cfg.max_tokens}, "n": {"maximum": state.cfg.max_n}}
    for name in ("ChatCompletionRequest", "CompletionRequest", "GenerateRequest"):
        props = schema.get("components", {}).get("schemas", {}).get(name, {}).get("properties", {})
        for field, extra in limits.items():
            if field in props:
                prop = props[field]
                target = next((a for a in prop.get("anyOf", []) if a.get("type") != "null"), prop)
                target.update(extra)
    app.openapi_schema = schema
    return schema


def _error(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
           code: str | None = None, headers: dict | None = None):
    return APIError(status, message, type, param, code, headers).response()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems, param = [], None
        for err in exc.errors()[:5]:
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            if err.get("type") == "json_invalid":
                return _error(400, f"the request body is not valid JSON ({err.get('msg')})", code="invalid_json")
            if not loc and err.get("type") in ("model_attributes_type", "dict_type", "missing"):
                return _error(400, "the request body must be a JSON object (send Content-Type: application/json)",
                              code="invalid_json")
            where = ".".join(loc) or "body"
            param = param or where
            problems.append(f"{where}: {err.get('msg')}")
        return _error(400, "invalid request: " + "; ".join(problems), param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc.detail), type=kind, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return _error(500, "internal server error; details are in the server log", type="server_error")


async def _send_json(send, status: int, body: dict, headers: dict | None = None) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


class _ApiKeys:
    """401 unless `Authorization: Bearer KEY` names a configured key (health and the spec stay open)."""

    def __init__(self, app, keys: list[bytes]):
        self.app, self.keys = app, keys

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.keys or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if key_allowed(auth, self.keys):
            return await self.app(scope, receive, send)
        await _send_json(send, 401, {"error": {"message": "missing or invalid API key: send 'Authorization: Bearer KEY'",
                                               "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
                         {"WWW-Authenticate": "Bearer"})


class _BodyLimit:
    """Read the request body up to max_bytes and replay it to the app; a larger body gets 413."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_big = {"error": {"message": f"the request body is larger than this server's limit of {self.max_bytes} bytes",
                             "type": "invalid_request_error", "param": None, "code": "request_too_large"}}
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_json(send, 413, too_big)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _send_json(send, 413, too_big)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # afterwards: wait for the client's disconnect, as the app expects

        await self.app(scope, replay, send)


class _RequestMetrics:
    """Count requests by route and status, and time them to the last byte (streams included)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics
        # Every route's latency and 200-count series exported at 0 from the start: a series first scraped with its
        # first requests already counted shows no increase to rate(), and the dashboard's panels would stay empty.
        for route in (*sorted(_ROUTES), "other"):
            metrics.latency.labels(route)
            metrics.requests.labels(route, "200")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in _ROUTES else "other"  # bounded label values under fuzzing
        status, t0 = 500, time.perf_counter()

        async def tracking_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
