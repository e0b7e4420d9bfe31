"""HTTP routes: thin handlers that validate, render the prompt, queue sequences and shape responses.

Chat and /generate prompts go through `tailor.data.templates.encode_prompt`, the one prompt path
shared with training and evaluation. /v1/completions continues raw text (the OpenAI contract),
tokenized like pretraining text (no special tokens added).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tailor.config import ServeConfig
from tailor.data.reasoning import ReasoningStream
from tailor.data.templates import encode_prompt
from tailor.errors import TailorError
from tailor.serving import protocol as P
from tailor.serving.engine import Engine, Event, Overloaded, Sequence
from tailor.serving.safety import GuardViolation, InputGuard, OutputFilter
from tailor.serving.structured import (BadRequest, ChatPlan, ToolCallStream, assistant_message, canonical_messages,
                                      plan_chat)
from tailor.serving.vision import load_request_images, request_images, vision_prompt


class APIError(Exception):
    """An error returned to the client in the OpenAI error shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = P.ErrorResponse(error=P.ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


@dataclass
class ServerState:
    """Everything the handlers share, kept on `app.state.tailor`.

    `engine` is replaced on the event loop when a registry follower swaps versions; a handler reads it
    and submits its sequences without awaiting in between, so one request never spans two engines.
    """

    cfg: ServeConfig
    engine: Engine
    model_name: str
    guard: InputGuard
    output: OutputFilter
    version: int | None = None  # the registry version served (serve --registry), else None
    follower: object | None = None  # follow.Follower when following a production source (a registry)

    def adapter_for(self, name: str | None) -> str | None:
        """The adapter a request's `model` selects (None = the base); 404 for an unknown name."""
        if name is None or name == self.model_name:
            return None
        if name in self.cfg.adapters:
            return name
        raise APIError(404, f"the model '{name}' does not exist on this server; GET /v1/models lists "
                            f"{[self.model_name, *self.cfg.adapters]}", param="model", code="model_not_found")

    def budget(self, requested: int | None, prompt_len: int) -> int:
        """Tokens a request may generate: its max_tokens checked against serve.max_tokens and the context."""
        room = self.engine.max_context - prompt_len
        if room < 1:
            raise APIError(400, f"the prompt has {prompt_len} tokens; this model's context holds "
                                f"{self.engine.max_context} (prompt and answer together)", param="messages",
                           code="context_length_exceeded")
        if requested is None:
            return min(self.cfg.max_tokens, room)
        if requested > self.cfg.max_tokens:
            raise APIError(400, f"max_tokens={requested} is above this server's limit of {self.cfg.max_tokens}",
                           param="max_tokens")
        if requested > room:
            raise APIError(400, f"max_tokens={requested} does not fit: the prompt has {prompt_len} tokens and the "
                                f"context holds {self.engine.max_context}", param="max_tokens",
                           code="context_length_exceeded")
        return requested


def _state(request: Request) -> ServerState:
    return request.app.state.tailor


router = APIRouter()
_ERRORS = {code: {"model": P.ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 503, 504)}


# ---------------------------------------------------------------------------------------------
# Running sequences


class _Run:
    """The sequences of one request and the queue their engine events arrive on."""

    def __init__(self, st: ServerState, specs: list[dict]):
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        deadline = time.monotonic() + st.cfg.request_timeout
        self.seqs = [Sequence(on_event=self._callback(i), deadline=deadline, **spec) for i, spec in enumerate(specs)]
        try:
            st.engine.submit(self.seqs)
        except Overloaded as e:
            raise APIError(429, f"the server is at capacity ({e}); retry after {st.cfg.retry_after} s",
                           type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(st.cfg.retry_after)}) from None
        self.open = len(self.seqs)

    def _callback(self, index: int):
        return lambda ev: self.loop.call_soon_threadsafe(self.events.put_nowait, (index, ev))

    async def next(self, request: Request) -> tuple[int, Event]:
        """The next event; a client that went away cancels the run."""
        while True:
            try:
                index, ev = await asyncio.wait_for(self.events.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    self.cancel()
                    raise APIError(499, "the client closed the request", code="client_closed_request") from None
                continue
            if ev.kind != "delta":
                self.open -= 1
            if ev.kind == "error":
                self.cancel()
                raise _engine_error(ev)
            return index, ev

    def cancel(self) -> None:
        for s in self.seqs:
            s.cancel()

    def usage(self, prompt_tokens: int) -> P.Usage:
        done = sum(len(s.ids) for s in self.seqs)
        return P.Usage(prompt_tokens=prompt_tokens, completion_tokens=done, total_tokens=prompt_tokens + done)


def _engine_error(ev: Event) -> APIError:
    if ev.error == "timeout":
        return APIError(504, "the request ran past the server's deadline (serve.request_timeout)", type="timeout",
                        code="deadline_exceeded")
    return APIError(500, "generation failed on the server; the error is in its log", type="server_error")


def _sampling(req, st: ServerState, prompt_len: int, requested: int | None, logprobs: int | None) -> dict:
    if req.n > st.cfg.max_n:
        raise APIError(400, f"n={req.n} is above this server's limit of {st.cfg.max_n}", param="n")
    return dict(max_tokens=st.budget(requested, prompt_len), adapter=st.adapter_for(req.model),
                temperature=req.temperature, top_p=req.top_p, stop=req.stops(), logprobs=logprobs)


def _seeded(spec: dict, seed: int | None, n: int) -> list[dict]:
    return [dict(spec, seed=None if seed is None else seed + i) for i in range(n)]


def _guard(st: ServerState, texts: list[str]) -> None:
    try:
        st.guard.check(texts)
    except GuardViolation as v:
        raise APIError(400, v.message, param="messages", code=f"guard:{v.rule}") from None


def _render(st: ServerState, messages: list[dict]) -> list[int]:
    try:
        return encode_prompt(st.engine.tokenizer, messages)
    except TailorError as e:
        raise APIError(400, f"the conversation cannot be rendered with this model's chat template: {e.what}",
                       param="messages") from None
    except Exception:  # jinja templates raise their own errors (e.g. on role order); they are the client's
        raise _template_error() from None


def _template_error() -> APIError:
    return APIError(400, "the conversation cannot be rendered with this model's chat template (check the order of "
                         "roles)", param="messages")


async def _prompt(st: ServerState, messages: list[dict], request_messages: list[P.ChatMessage]):
    """(prompt ids, image inputs or None) of canonical messages: a vision-language model's through its processor
    (`tailor.serving.vision`, the code `tailor chat --image` runs), images checked against the serve limits."""
    parts = request_images(request_messages)
    processor = getattr(st.engine, "processor", None)
    if processor is None:
        if parts:
            where = parts[0][0].removesuffix(".image_url.url")
            raise APIError(400, f"{where}: the model '{st.model_name}' is text-only and cannot read images; send text "
                                "only, or serve a vision-language model", param=where, code="model_not_multimodal")
        return _render(st, messages), None

    def prepare():
        return vision_prompt(processor, messages, load_request_images(parts, st.cfg))

    try:
        ids, images = await asyncio.to_thread(prepare)  # decoding and resizing images stays off the event loop
    except BadRequest as e:
        raise APIError(400, e.message, param=e.param, code="invalid_image") from None
    except TailorError as e:
        raise APIError(400, f"{e.what} ({e.fix})", param="messages") from None
    except Exception:  # the chat template's own errors (e.g. on role order) are the client's
        raise _template_error() from None
    return ids, images or None


def _messages(msgs: list[P.ChatMessage]) -> list[dict]:
    try:
        return canonical_messages(msgs)
    except BadRequest as e:
        raise APIError(400, e.message, param=e.param) from None


# ---------------------------------------------------------------------------------------------
# Endpoints


@router.get("/v1/models", response_model=P.ModelList, responses=_ERRORS)
async def list_models(request: Request) -> P.ModelList:
    """The base model and every adapter, by the names requests pass as `model`."""
    st = _state(request)
    cards = [P.ModelCard(id=st.model_name, version=st.version)]
    cards += [P.ModelCard(id=n, parent=st.model_name) for n in st.cfg.adapters]
    return P.ModelList(data=cards)


@router.post("/admin/reload", responses=_ERRORS)
async def reload(request: Request) -> dict:
    """Check the registry now and switch to its production version (retrying one that failed to load)."""
    st = _state(request)
    if st.follower is None:
        raise APIError(400, "this server does not follow a model registry (start it with --registry and "
                            "--registry-model)", code="no_registry")
    return await st.follower.check(force=True)


@router.post("/v1/chat/completions", response_model=P.ChatCompletion, responses=_ERRORS)
async def chat_completions(req: P.ChatCompletionRequest, request: Request):
    """Answer a conversation; with `stream` as server-sent events ending in `data: [DONE]`."""
    st = _state(request)
    try:
        plan = plan_chat(req)  # tools, tool_choice and response_format checked; the constraint built
    except BadRequest as e:
        raise APIError(400, e.message, param=e.param, code="invalid_value") from None
    _guard(st, [m["content"] for m in plan.messages])
    st.adapter_for(req.model)
    prompt, images = await _prompt(st, plan.messages, req.messages)
    top = (req.top_logprobs or 0) if req.logprobs else None
    spec = _sampling(req, st, len(prompt), req.max_completion_tokens or req.max_tokens, top)
    run = _Run(st, _seeded(dict(spec, prompt_ids=prompt, json_schema=plan.schema, image_inputs=images), req.seed, req.n))
    st.engine.metrics and st.engine.metrics.prompt_tokens.inc(len(prompt))
    if req.stream:
        return _sse(_chat_stream(st, run, req, plan, len(prompt), request))
    texts, reasons, logprobs = await _collect(st, run, request)
    choices = []
    for i in range(req.n):
        message, reason = assistant_message(texts[i], plan, reasons[i])
        lp = P.ChoiceLogprobs(content=[_chat_lp(t) for t in logprobs[i]]) if req.logprobs else None
        choices.append(P.ChatChoice(index=i, message=message, finish_reason=reason, logprobs=lp))
    return P.ChatCompletion(model=req.model, choices=choices, usage=run.usage(len(prompt)))


@router.post("/v1/completions", response_model=P.Completion, responses=_ERRORS)
async def completions(req: P.CompletionRequest, request: Request):
    """Continue raw text (no chat template); a list of prompts gets n choices each."""
    st = _state(request)
    prompts = req.prompts()
    if not prompts:
        raise APIError(400, "prompt is an empty list", param="prompt")
    _guard(st, prompts)
    st.adapter_for(req.model)
    tok = st.engine.tokenizer
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if any(not ids for ids in encoded):
        raise APIError(400, "a prompt is empty: there is no text to continue", param="prompt")
    specs = []
    for ids in encoded:
        spec = _sampling(req, st, len(ids), req.max_tokens, req.logprobs)
        specs += _seeded(dict(spec, prompt_ids=ids), req.seed, req.n)
    run = _Run(st, specs)
    prompt_tokens = sum(len(ids) for ids in encoded)
    st.engine.metrics and st.engine.metrics.prompt_tokens.inc(prompt_tokens)
    if req.stream:
        return _sse(_completion_stream(st, run, req, prompt_tokens, request))
    texts, reasons, logprobs = await _collect(st, run, request)
    choices = [P.CompletionChoice(index=i, text=texts[i], finish_reason=reasons[i],
                                  logprobs=_completion_lp(logprobs[i]) if req.logprobs is not None else None)
               for i in range(len(specs))]
    return P.Completion(model=req.model, choices=choices, usage=run.usage(prompt_tokens))


@router.post("/generate", response_model=P.GenerateResponse, responses=_ERRORS)
async def generate(req: P.GenerateRequest, request: Request) -> P.GenerateResponse:
    """The simple endpoint: `prompt` (one user message) or `messages` in, text out."""
    st = _state(request)
    if (req.prompt is None) == (req.messages is None):
        raise APIError(400, "pass exactly one of `prompt` or `messages`", param="prompt")
    messages = [{"role": "user", "content": req.prompt}] if req.prompt is not None else _messages(req.messages)
    _guard(st, [m["content"] for m in messages])
    adapter = st.adapter_for(req.model)
    prompt, images = await _prompt(st, messages, req.messages or [])
    spec = dict(prompt_ids=prompt, max_tokens=st.budget(req.max_tokens, len(prompt)), adapter=adapter,
                temperature=req.temperature, top_p=req.top_p, stop=req.stops(), seed=req.seed, image_inputs=images)
    run = _Run(st, [spec])
    texts, reasons, _ = await _collect(st, run, request)
    return P.GenerateResponse(text=texts[0], finish_reason=reasons[0], usage=run.usage(len(prompt)))


@router.get("/health", response_model=P.Health)
async def health(request: Request) -> P.Health:
    """Liveness: the process answers (and how busy it is)."""
    e = _state(request).engine
    return P.Health(status="ok", active=e.active(), queued=e.queued())


@router.get("/ready", response_model=P.Health, responses={503: {"model": P.Health}})
async def ready(request: Request):
    """Readiness: the model is loaded and the engine loop runs (503 otherwise)."""
    e = _state(request).engine
    if not e.alive():
        return JSONResponse(P.Health(status="loading").model_dump(), status_code=503)
    return P.Health(status="ok", active=e.active(), queued=e.queued())


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latencies, time to first token, tokens, queue depth, batch size."""
    body, content_type = _state(request).engine.metrics.render()
    return Response(body, media_type=content_type)


# ---------------------------------------------------------------------------------------------
# Response assembly


async def _collect(st: ServerState, run: _Run, request: Request):
    """Wait for every sequence of a non-streaming request; text goes through the output rules."""
    n = len(run.seqs)
    texts, reasons, logprobs = [""] * n, [None] * n, [[] for _ in range(n)]
    try:
        while run.open:
            i, ev = await run.next(request)
            texts[i] += ev.text
            logprobs[i] += ev.tokens
            if ev.kind == "done":
                reasons[i] = ev.finish_reason
    finally:
        run.cancel()  # no-op for finished sequences; frees the slots of a cancelled request
    return [st.output.apply(t) for t in texts], reasons, logprobs


def _sse(gen):
    from sse_starlette import EventSourceResponse

    return EventSourceResponse(gen, ping=15, sep="\n")


async def _events(st: ServerState, run: _Run, request: Request):
    """(index, text, token logprobs, finish reason) per engine event, output rules applied; errors become data."""
    filters = [st.output.stream() for _ in run.seqs]
    try:
        while run.open:
            try:
                i, ev = await run.next(request)
            except APIError as e:
                yield None, e
                return
            text = filters[i].feed(ev.text)
            if ev.kind == "done":
                text += filters[i].flush()
            yield (i, text, ev.tokens, ev.finish_reason if ev.kind == "done" else None), None
    finally:
        run.cancel()  # the client went away (or the stream ended): stop generating at once


def _error_data(e: APIError) -> dict:
    body = P.ErrorResponse(error=P.ErrorDetail(message=e.message, type=e.type, param=e.param, code=e.code))
    return {"data": body.model_dump_json()}


async def _chat_stream(st: ServerState, run: _Run, req: P.ChatCompletionRequest, plan: ChatPlan, prompt_tokens: int,
                       request: Request):
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(choices, usage=None):
        return {"data": P.ChatCompletionChunk(id=cid, created=created, model=req.model, choices=choices,
                                              usage=usage).model_dump_json(exclude_none=True)}

    for i in range(req.n):
        yield chunk([P.ChatChunkChoice(index=i, delta=P.Delta(role="assistant", content=""))])
    splitters = [ReasoningStream() for _ in range(req.n)]  # a <think> block streams as reasoning_content
    calls = [ToolCallStream(plan.tool_names, plan.max_calls) if plan.tool_names is not None else None
             for _ in range(req.n)]
    async for item, err in _events(st, run, request):
        if err:
            yield _error_data(err)
            return
        i, text, tokens, reason = item
        reasoning, content = splitters[i].feed(text)
        if reason:
            more = splitters[i].flush()
            reasoning, content = reasoning + more[0], content + more[1]
        fragments, problem = [], None
        if calls[i] is not None:  # text that may be a tool call waits until it is complete
            content = calls[i].feed(content)
            if reason:
                rest, fragments, problem, reason = calls[i].finish(reason)
                content += rest
        if reasoning or content or tokens:
            lp = P.ChoiceLogprobs(content=[_chat_lp(t) for t in tokens]) if req.logprobs and tokens else None
            delta = P.Delta(content=content if content or not reasoning else None, reasoning_content=reasoning or None)
            yield chunk([P.ChatChunkChoice(index=i, delta=delta, logprobs=lp)])
        for fragment in fragments:
            yield chunk([P.ChatChunkChoice(index=i, delta=P.Delta(tool_calls=[fragment]))])
        if reason:
            yield chunk([P.ChatChunkChoice(index=i, delta=P.Delta(tool_call_error=problem), finish_reason=reason)])
    if req.stream_options and req.stream_options.include_usage:
        yield chunk([], usage=run.usage(prompt_tokens))
    yield {"data": "[DONE]"}


async def _completion_stream(st: ServerState, run: _Run, req: P.CompletionRequest, prompt_tokens: int,
                             request: Request):
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(choices, usage=None):
        return {"data": P.Completion(id=cid, created=created, model=req.model, choices=choices,
                                     usage=usage).model_dump_json(exclude_none=True)}

    async for item, err in _events(st, run, request):
        if err:
            yield _error_data(err)
            return
        i, text, tokens, reason = item
        if text or tokens or reason:
            lp = _completion_lp(tokens) if req.logprobs is not None and tokens else None
            yield chunk([P.CompletionChoice(index=i, text=text, logprobs=lp, finish_reason=reason)])
    if req.stream_options and req.stream_options.include_usage:
        yield chunk([], usage=run.usage(prompt_tokens))
    yield {"data": "[DONE]"}


def _chat_lp(t: tuple) -> P.TokenLogprob:
    token, logprob, alts = t
    return P.TokenLogprob(token=token, logprob=logprob, bytes=list(token.encode()),
                          top_logprobs=[P.TopLogprob(token=a, logprob=v, bytes=list(a.encode())) for a, v in alts])


def _completion_lp(tokens: list) -> P.CompletionLogprobs:
    out, offset = P.CompletionLogprobs(), 0
    for token, logprob, alts in tokens:
        out.tokens.append(token)
        out.token_logprobs.append(logprob)
        out.top_logprobs.append(dict(alts))
        out.text_offset.append(offset)
        offset += len(token)
    return out
