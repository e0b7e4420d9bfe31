"""The optional vLLM engine: the same interface as `Engine` (submit / events / cancel / limits /
metrics), generating with vLLM's async engine on a GPU.

`serve.engine` picks it: `auto` uses vLLM when `import vllm` works and a CUDA GPU is visible (else
the built-in engine), `vllm` insists and says what is missing, `tailor` never uses it. vLLM is
imported only here and only when chosen, so the package works without it.

Prompts still come from the routes (`encode_prompt`, the one prompt path) and reach vLLM as token
ids; sampling settings map onto `SamplingParams`; LoRA adapters become `LoRARequest(name, id, path)`;
each streamed `RequestOutput` (cumulative, vLLM's default) becomes a text delta. A cancelled
request (client gone) or one past its deadline is aborted in vLLM at once. vLLM schedules its own
batch (`max_num_seqs` = serve.max_batch_size); admission (max_batch_size + max_queue, then 429)
stays here, so `active()` / `queued()` are this server's view, not vLLM's internal queue.

Written against vLLM's documented API (`vllm.AsyncLLMEngine`, `vllm.AsyncEngineArgs`,
`vllm.SamplingParams`, `vllm.lora.request.LoRARequest`); tested against a stand-in module, not a
real vLLM (see the README).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from pathlib import Path

from tailor.config import ServeConfig
from tailor.errors import TailorError
from tailor.serving.engine import Event, Overloaded, Sequence, _holdback

log = logging.getLogger(__name__)

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def vllm_missing() -> str | None:
    """Why the vLLM engine cannot run here (None when it can)."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        return f"vLLM is not installed ({e})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def choose_engine(cfg: ServeConfig, model_dir: str | Path | None = None) -> str:
    """'tailor' or 'vllm' for serve.engine (auto|tailor|vllm); a forced vllm that cannot run is an error."""
    if cfg.engine == "tailor":
        return "tailor"
    from tailor.adapters.loading import is_adapter_dir

    missing = vllm_missing()
    if missing is None and model_dir is not None and is_adapter_dir(Path(model_dir)):
        missing = f"{model_dir} is an adapter directory and vLLM serves full model directories"
    if cfg.engine == "vllm":
        if missing:
            raise TailorError(f"serve.engine=vllm, but {missing}", where="serve.engine",
                              fix="install vLLM on a machine with an NVIDIA GPU (pip install vllm), merge an adapter "
                                  "first (tailor merge ADAPTER_DIR --out DIR), or use engine=auto / engine=tailor "
                                  "for the built-in engine")
        return "vllm"
    if missing:
        log.info("serving with the built-in engine: %s", missing)
        return "tailor"
    return "vllm"


def _context_of(model_dir: Path) -> int:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return 2048
    config = config.get("text_config", config)
    return int(config.get("max_position_embeddings") or 2048)


def _lora_rank(adapters: dict[str, str]) -> int:
    ranks = [json.loads((Path(p) / "adapter_config.json").read_text()).get("r", 8) for p in adapters.values()]
    need = max(ranks, default=8)
    return next((r for r in _LORA_RANKS if r >= need), need)


class VllmEngine:
    """Generation on vLLM's AsyncLLMEngine, behind the interface the routes use for `Engine`."""

    def __init__(self, model_dir: str | Path, tokenizer, cfg: ServeConfig, tokenizer_dir: str | Path | None = None,
                 metrics=None):
        self.model_dir, self.tokenizer, self.cfg, self.metrics = Path(model_dir), tokenizer, cfg, metrics
        self.tokenizer_dir = Path(tokenizer_dir or model_dir)
        self.max_batch_size, self.max_queue = cfg.max_batch_size, cfg.max_queue
        self.max_context = cfg.max_context or _context_of(self.model_dir)
        self._admitted = 0
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[Sequence, asyncio.Task]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._llm = None
        self._watcher: asyncio.Task | None = None
        self._loras: dict[str, object] = {}
        self._stopping = False
        self.ready = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "VllmEngine":
        """Create the vLLM engine on a private event loop thread (the server's loop stays free)."""
        import vllm
        from vllm.lora.request import LoRARequest

        adapters = self.cfg.adapters
        # ids start at 1: vLLM reserves 0 for "no adapter"
        self._loras = {name: LoRARequest(name, i + 1, str(Path(path).resolve()))
                       for i, (name, path) in enumerate(adapters.items())}
        args = vllm.AsyncEngineArgs(
            model=str(self.model_dir), tokenizer=str(self.tokenizer_dir), dtype=self.cfg.model.dtype,
            max_model_len=self.max_context, max_num_seqs=self.max_batch_size,
            trust_remote_code=self.cfg.model.trust_remote_code, load_format="safetensors",
            enable_lora=bool(adapters), max_loras=max(1, len(adapters)), max_lora_rank=_lora_rank(adapters))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tailor-vllm", daemon=True)
        self._thread.start()

        async def create():
            self._llm = vllm.AsyncLLMEngine.from_engine_args(args)
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

        asyncio.run_coroutine_threadsafe(create(), self._loop).result()
        self.ready = True
        return self

    def stop(self) -> None:
        """Abort everything, shut vLLM down and stop the loop thread."""
        if self._loop is None:
            return
        self._stopping = True

        async def drain():
            self._watcher.cancel()
            for _, task in list(self._tasks.values()):
                task.cancel()
            await asyncio.gather(*(t for _, t in self._tasks.values()), return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(drain(), self._loop).result(timeout=10)
        except Exception:
            log.exception("stopping vLLM requests failed")
        if hasattr(self._llm, "shutdown"):
            self._llm.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.ready = False

    def alive(self) -> bool:
        return (self.ready and self._thread is not None and self._thread.is_alive()
                and not getattr(self._llm, "errored", False))

    # -- the routes' interface --------------------------------------------------------------

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences together (all or none); raise Overloaded when they do not fit."""
        with self._lock:
            if self._stopping or not self.ready:
                raise Overloaded("the engine is not running")
            if self._admitted + len(seqs) > self.max_batch_size + self.max_queue:
                if self.metrics:
                    self.metrics.rejected.inc()
                raise Overloaded(f"{self.active()} requests are generating and {self.queued()} are waiting")
            self._admitted += len(seqs)
        for seq in seqs:
            asyncio.run_coroutine_threadsafe(self._start(seq), self._loop)
        self._gauges()

    def active(self) -> int:
        return min(self._admitted, self.max_batch_size)

    def queued(self) -> int:
        return self._admitted - self.active()

    # -- on the vLLM loop -------------------------------------------------------------------

    async def _start(self, seq: Sequence) -> None:
        rid = f"tailor-{uuid.uuid4().hex}"
        task = asyncio.get_running_loop().create_task(self._run(rid, seq))
        self._tasks[rid] = (seq, task)
        # Bookkeeping in a done-callback, not in _run's finally: a task cancelled before its first
        # step never enters _run's body, and its slot must still be freed.
        task.add_done_callback(lambda _: self._done(rid, seq))

    def _done(self, rid: str, seq: Sequence) -> None:
        self._tasks.pop(rid, None)
        if seq.finish_reason is None:
            self._end_abnormally(seq)
        self._release(seq)

    def _release(self, seq: Sequence) -> None:
        """Give the slot back (once), before the client hears the end, as the built-in engine does."""
        with self._lock:
            if seq._released:
                return
            seq._released = True
            self._admitted -= 1
        self._gauges()

    def sampling_params(self, seq: Sequence):
        """vLLM SamplingParams for one sequence (one choice: the routes expand `n` into sequences)."""
        from vllm import SamplingParams

        extra = {}
        if seq.json_schema is not None:  # vLLM's own structured-output backend constrains decoding
            try:
                from vllm.sampling_params import StructuredOutputsParams  # vLLM >= 0.10.2

                extra["structured_outputs"] = StructuredOutputsParams(json=seq.json_schema)
            except ImportError:
                from vllm.sampling_params import GuidedDecodingParams

                extra["guided_decoding"] = GuidedDecodingParams(json=seq.json_schema)
        return SamplingParams(n=1, temperature=seq.temperature, top_p=seq.top_p, max_tokens=seq.max_tokens,
                              stop=list(seq.stop) or None, seed=seq.seed, logprobs=seq.logprobs, **extra)

    async def _run(self, rid: str, seq: Sequence) -> None:
        reason = None
        if seq.cancelled or time.monotonic() > seq.deadline:
            return  # gone (or late) before it started: _done ends it
        try:
            stream = self._llm.generate({"prompt_token_ids": list(seq.prompt_ids)}, self.sampling_params(seq), rid,
                                        lora_request=self._loras.get(seq.adapter) if seq.adapter else None)
            async for out in stream:
                if seq.cancelled:  # stop at once rather than at the watcher's next look
                    await self._abort(rid)
                    break
                choice = out.outputs[0]
                self._update(seq, choice)
                if choice.finish_reason is not None or getattr(out, "finished", False):
                    reason = choice.finish_reason or "stop"
                    break
            if reason in (None, "abort"):  # the stream ended without a normal finish: vLLM aborted it
                self._end_abnormally(seq)
            else:
                self._finish(seq, reason)
        except asyncio.CancelledError:  # cancelled or past its deadline (see _watch), or the server stops
            await self._abort(rid)
            self._end_abnormally(seq)
        except Exception:
            log.exception("vLLM generation failed")
            await self._abort(rid)
            self._release(seq)
            seq.finish_reason = "error"
            seq.on_event(Event("error", error="internal"))

    async def _abort(self, rid: str) -> None:
        try:
            await self._llm.abort(rid)
        except Exception:  # a finished or unknown request: abort is a no-op in vLLM's contract
            log.debug("abort %s failed", rid, exc_info=True)

    def _end_abnormally(self, seq: Sequence) -> None:
        self._release(seq)
        if seq.cancelled:
            seq.finish_reason = "cancelled"  # the client is gone: nobody to tell
        elif time.monotonic() > seq.deadline:
            seq.finish_reason = "timeout"
            seq.on_event(Event("error", error="timeout"))
        else:
            seq.finish_reason = "error"
            seq.on_event(Event("error", error="internal"))

    def _update(self, seq: Sequence, choice) -> None:
        """Turn a cumulative CompletionOutput into a delta event (text held back while it may start a stop string)."""
        new_ids = list(choice.token_ids)[len(seq.ids):]
        if new_ids and seq.first_token is None:
            seq.first_token = time.monotonic()
            if self.metrics:
                self.metrics.ttft.observe(seq.first_token - seq.submitted)
        info = []
        if seq.logprobs is not None and choice.logprobs:
            for j, token in enumerate(new_ids, start=len(seq.ids)):
                info.append(self._token_info(token, choice.logprobs[j], seq.logprobs))
        seq.ids += new_ids
        if self.metrics and new_ids:
            self.metrics.generated.inc(len(new_ids))
        seq.text = choice.text
        finished = choice.finish_reason is not None
        upto = len(seq.text) if finished else len(seq.text) - _holdback(seq.text, seq.stop)
        if upto > seq.emitted or info:
            seq.on_event(Event("delta", text=seq.text[seq.emitted:max(upto, seq.emitted)], tokens=info))
            seq.emitted = max(upto, seq.emitted)

    def _token_info(self, token: int, candidates: dict, k: int) -> tuple:
        def text(tid, lp):
            return lp.decoded_token if getattr(lp, "decoded_token", None) is not None else self.tokenizer.decode([tid])

        chosen = candidates.get(token)
        best = sorted(candidates.items(), key=lambda kv: -kv[1].logprob)[:k]
        return (text(token, chosen) if chosen else self.tokenizer.decode([token]),
                float(chosen.logprob) if chosen else -math.inf, [(text(t, lp), float(lp.logprob)) for t, lp in best])

    def _finish(self, seq: Sequence, reason: str) -> None:
        if len(seq.text) > seq.emitted:
            seq.on_event(Event("delta", text=seq.text[seq.emitted:]))
            seq.emitted = len(seq.text)
        seq.finish_reason = reason
        self._release(seq)
        seq.on_event(Event("done", finish_reason=reason))

    async def _watch(self) -> None:
        """Cancel the tasks of sequences whose client left or whose deadline passed (each aborts in vLLM)."""
        while not self._stopping:
            now = time.monotonic()
            for seq, task in list(self._tasks.values()):
                if (seq.cancelled or now > seq.deadline) and not task.done():
                    task.cancel()
            await asyncio.sleep(0.05)

    def _gauges(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(self.queued())
            self.metrics.active.set(self.active())
