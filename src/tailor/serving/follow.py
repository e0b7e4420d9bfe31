"""Serve whatever a source names as production and follow it as it changes, without dropping requests.

A source is a plain callable (`ProductionSource`): it says where the production model is now, with a
revision that grows whenever that changes. `tailor serve --registry` passes one that reads a model
registry (tailor.mlops.follow.RegistrySource); serving itself knows nothing of registries.

The server starts on the source's production version and calls it every serve.registry_poll_seconds.
When the revision moves, the new version loads on a worker thread while the old engine keeps serving;
then, on the event loop, `ServerState.engine` is pointed at the new engine. Route handlers read
`st.engine` and submit their sequences to it without awaiting in between, so each request runs
entirely on one engine: requests admitted before the swap (streams included) finish on the old engine,
later ones go to the new one. The engine itself counts what is admitted on it (`active() + queued()`);
once that reaches zero the old engine is stopped and dropped (at the latest after serve.request_timeout,
when every request on it has passed its deadline anyway).

A version that fails to load (a broken directory, a missing base) leaves the old one serving; the
error is logged and counted (`tailor_model_reload_failures_total{reason="load"}`), and that version
is not tried again until the revision moves or someone calls POST /admin/reload. A source that cannot
be read is logged and counted under reason="registry"; serving goes on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol

from tailor.errors import TailorError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Production:
    """A version to serve: what a source names as production."""

    name: str
    version: int
    path: str
    base_path: str | None = None


class ProductionSource(Protocol):
    """Where the production model is now. Both calls block (the follower makes them off the event loop)."""

    def __call__(self) -> tuple[int, Production | None]:
        """(revision, the production version or None); the revision grows whenever production changes."""

    def first(self) -> tuple[int, Production]:
        """The same for the version to start on: a TailorError saying why when there is none."""


class Follower:
    """Polls a source, loads a new production version in the background and swaps engines without drops.

    `source()` -> (revision, Production | None) and `load(Production)` -> a started engine are blocking
    calls; they run on one private worker thread (so a source's connection is used from one thread and
    two loads never overlap). Everything else runs on the server's event loop.
    """

    def __init__(self, state, source: Callable[[], tuple[int, Production | None]], load: Callable[[Production], object],
                 *, revision: int, current: Production, interval: float, drain_timeout: float):
        self.state, self.source, self.load = state, source, load
        self.revision, self.current = revision, current
        self.interval, self.drain_timeout = interval, drain_timeout
        self.draining: list = []  # old engines still finishing their requests
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tailor-follow")
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._registry_error: str | None = None
        self._show_version(current)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # a bug in one poll must not end following for the life of the server
                log.exception("checking the registry failed")

    async def check(self, force: bool = False) -> dict:
        """One poll: swap to a newly promoted version. `force` retries the production version even when
        the alias has not moved (e.g. after fixing a version that failed to load)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                revision, target = await loop.run_in_executor(self._pool, self.source)
            except Exception as e:
                message = f"cannot read the registry (still serving version {self.current.version}): {e}"
                quiet = message == self._registry_error  # an outage is logged once, counted every poll
                self._registry_error = message
                return self._failed("registry", message, log_it=not quiet)
            if self._registry_error:
                log.warning("the registry is readable again")
                self._registry_error = None
            if revision == self.revision and not force:
                return self._result("unchanged")
            self.revision = revision
            if target is None:
                log.warning("the registry has no production version of '%s' any more; still serving version %d",
                            self.current.name, self.current.version)
                return self._result("unchanged")
            if target == self.current:
                return self._result("unchanged")
            log.info("loading %s version %d from %s (version %d keeps serving meanwhile)", target.name,
                     target.version, target.path, self.current.version)
            t0 = time.perf_counter()
            try:
                engine = await loop.run_in_executor(self._pool, self.load, target)
            except Exception as e:
                what = e.message() if isinstance(e, TailorError) else f"{type(e).__name__}: {e}"
                return self._failed("load", f"version {target.version} ({target.path}) failed to load, version "
                                            f"{self.current.version} keeps serving: {what}")
            self._swap(engine, target)
            log.info("now serving %s version %d (loaded in %.1f s)", target.name, target.version,
                     time.perf_counter() - t0)
            return self._result("swapped")

    def _swap(self, engine, target: Production) -> None:
        st = self.state
        old = st.engine
        if engine.metrics is None:
            engine.metrics = old.metrics
        st.engine, st.version, self.current = engine, target.version, target  # on the loop: atomic for handlers
        self._show_version(target)
        if old.metrics:
            old.metrics.reloads.inc()
        self.draining.append(old)
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retire(self, old) -> None:
        """Stop `old` once every request admitted on it has finished, then let its memory go."""
        deadline = time.monotonic() + self.drain_timeout
        while old.active() + old.queued() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = old.active() + old.queued()
        if left:
            log.warning("stopping the previous engine with %d sequences still running past serve.request_timeout", left)
        await asyncio.get_running_loop().run_in_executor(None, old.stop)
        self.draining.remove(old)
        del old
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    async def close(self) -> None:
        """Stop polling (the caller cancels run()) and stop engines that are still draining."""
        for task in list(self._tasks):
            task.cancel()
        for engine in self.draining:
            engine.stop()
        self.draining.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _show_version(self, prod: Production) -> None:
        metrics = self.state.engine.metrics
        if metrics:
            metrics.model_version.labels(self.state.model_name).set(prod.version)

    def _failed(self, reason: str, message: str, log_it: bool = True) -> dict:
        if log_it:
            log.error(message)
        if self.state.engine.metrics:
            self.state.engine.metrics.reload_failures.labels(reason).inc()
        return self._result("failed", message)

    def _result(self, status: str, error: str | None = None) -> dict:
        out = {"status": status, "model": self.state.model_name, "version": self.current.version}
        return {**out, "error": error} if error else out


def build_following_app(cfg, source: ProductionSource):
    """The app serving `source`'s production version, following it as it changes (cfg: the ServeConfig)."""
    from tailor.serving.app import create_app
    from tailor.serving.server import build_engine, check_model_name

    revision, prod = source.first()
    name = cfg.model_name or prod.name
    check_model_name(name, cfg)
    app = create_app(cfg, build_engine(prod.path, cfg, base=prod.base_path), model_name=name)
    st = app.state.tailor
    metrics = st.engine.metrics

    def load(p: Production):
        return build_engine(p.path, cfg, base=p.base_path, metrics=metrics).start()

    st.version = prod.version
    # Requests on the old engine end by serve.request_timeout at the latest; a little slack for the last events.
    st.follower = Follower(st, source, load, revision=revision, current=prod, interval=cfg.registry_poll_seconds,
                           drain_timeout=cfg.request_timeout + 5)
    return app
