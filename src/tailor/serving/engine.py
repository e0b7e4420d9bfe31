"""The generation engine: continuous batching over a KV cache on one background thread.

The requests admitted in one loop iteration are prefilled together, one forward pass per adapter:
their prompts are left-padded to a common length (the attention mask hides the padding, and each
row gets its own position ids), which gives every row its first token and a KV cache; the rows that
go on are then stacked into the running batch of their adapter, again left-padded to a common
length. Prefilling arrivals together rather than one by one is what keeps time to first token low
when many clients arrive at once.
Every loop iteration admits waiting requests into free slots, drops finished, cancelled and
expired rows (their cache rows are cut out at once and shared leading padding is trimmed), and
runs one decode step -- a single forward pass -- for one batch. With several LoRA adapters there
is one batch per adapter, served in turn, because peft applies one active adapter to a forward
pass.

Admission is bounded: at most `max_batch_size` sequences generate and `max_queue` wait; beyond
that `submit` raises `Overloaded` at once (the server answers 429 with Retry-After).

Models whose cache is not a plain `DynamicCache` of `DynamicLayer`s (sliding-window or static
caches) are still served, but each request is then prefilled alone and runs in its own batch of one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The admission queue is full."""


@dataclass
class Event:
    """What the engine tells a request: a text delta (with token logprobs), the end, or an error."""

    kind: str  # "delta" | "done" | "error"
    text: str = ""
    tokens: list = field(default_factory=list)  # [(token text, logprob, [(alt text, logprob), ...])] when asked
    finish_reason: str | None = None
    error: str | None = None  # "timeout" | "internal"


@dataclass
class Sequence:
    """One generation: a prompt, its sampling settings, and its running state."""

    prompt_ids: list[int]
    max_tokens: int
    on_event: Callable[[Event], None]
    adapter: str | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None = off, k = chosen token plus k alternatives
    deadline: float = math.inf  # time.monotonic() after which the request is stopped
    json_schema: dict | None = None  # constrain decoding to JSON matching it (tailor.models.grammar)
    image_inputs: dict | None = None  # a vision-language prompt's pixel values, as its processor made them
    # running state, owned by the engine thread
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    _prefix_offset: int = 0
    _read_offset: int = 0
    _generator: torch.Generator | None = None
    _constraint: object | None = None  # the grammar state when json_schema is set, built by the engine thread
    _released: bool = False

    def cancel(self) -> None:
        """Ask the engine to stop this sequence (client gone); its slot is freed on the next iteration."""
        self.cancelled = True


@dataclass
class _Batch:
    adapter: str | None
    seqs: list[Sequence]
    cache: object  # transformers DynamicCache, rows aligned with seqs
    mask: torch.Tensor  # (rows, cached length): 1 = real token, 0 = left padding
    stackable: bool


def _plain_cache(cache) -> bool:
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class Engine:
    """Continuous-batching generation for one model (optionally a peft model with named adapters)."""

    def __init__(self, model, tokenizer, max_batch_size: int = 16, max_queue: int = 64, max_context: int | None = None,
                 metrics=None, processor=None):
        """`processor`: a vision-language model's processor (requests may then carry images), else None."""
        self.model, self.tokenizer, self.metrics, self.processor = model, tokenizer, metrics, processor
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        text_config = getattr(model.config, "text_config", None) or model.config
        self.max_context = max_context or getattr(text_config, "max_position_embeddings", None) or 2048
        head = model.get_output_embeddings()  # the logits' width, for grammar masks (a quantized head has no .weight)
        self.vocab_size = getattr(head, "out_features", None) or head.weight.shape[0]
        self.device = next(model.parameters()).device
        self.is_peft = hasattr(model, "peft_config")
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}
        self._waiting: deque[Sequence] = deque()
        self._admitted = 0  # sequences waiting or generating (guarded by _cv)
        self._batches: list[_Batch] = []
        self._cv = threading.Condition()
        self._turn = itertools.count()
        self._adapter_on: str | None | bool = False  # which adapter the peft model has active (False = unknown)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._stackable = False  # whether caches can be padded and stacked (known after the warm-up)
        self.ready = False

    # -- public -----------------------------------------------------------------------------

    def start(self) -> "Engine":
        """Warm up (one tiny forward pass) and start the background loop."""
        self.model.eval()
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([[self.tokenizer.eos_token_id or 0]], device=self.device),
                             use_cache=True)
        self._stackable = _plain_cache(out.past_key_values)
        self._thread = threading.Thread(target=self._loop, name="tailor-engine", daemon=True)
        self._thread.start()
        self.ready = True
        return self

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout=10)
        self.ready = False

    def alive(self) -> bool:
        return self.ready and self._thread is not None and self._thread.is_alive()

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences together (all or none); raise Overloaded when they do not fit."""
        with self._cv:
            if self._stopping:
                raise Overloaded("the engine is shutting down")
            if self._admitted + len(seqs) > self.max_batch_size + self.max_queue:
                if self.metrics:
                    self.metrics.rejected.inc()
                raise Overloaded(f"{self.active()} requests are generating and {len(self._waiting)} are waiting")
            for s in seqs:
                if s.temperature > 0:
                    s._generator = torch.Generator().manual_seed(s.seed if s.seed is not None else random.getrandbits(63))
                self._waiting.append(s)
            self._admitted += len(seqs)
            self._gauges()
            self._cv.notify()

    def active(self) -> int:
        """Sequences holding a batch slot (being prefilled or decoded)."""
        return self._admitted - len(self._waiting)

    def queued(self) -> int:
        return len(self._waiting)

    # -- the loop ---------------------------------------------------------------------------

    def _release(self, seq: Sequence) -> None:
        """Give a finished, cancelled or expired sequence's slot back (once)."""
        if not seq._released:
            seq._released = True
            with self._cv:
                self._admitted -= 1

    def _gauges(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.active.set(self.active())

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._batches:
                    self._cv.wait()
                if self._stopping:
                    break
                now = time.monotonic()
                for seq in [s for s in self._waiting if s.cancelled or now > s.deadline]:
                    self._waiting.remove(seq)  # a client gone or timed out while queued frees its place now
                    self._expired(seq, now)
                    seq._released = True
                    self._admitted -= 1
                new = []
                while self._waiting and self.active() < self.max_batch_size:
                    new.append(self._waiting.popleft())
                self._gauges()
            try:
                with torch.inference_mode():
                    self._prefill(new)
                    self._reap()
                    if self._batches:
                        batch = self._batches[next(self._turn) % len(self._batches)]
                        self._decode(batch)
            except Exception:  # a failed forward pass must not take the server down
                log.exception("generation step failed")
                self._fail_all(extra=new)
            with self._cv:
                self._gauges()
        self._fail_all("the server is shutting down")

    def _fail_all(self, why: str = "internal", extra: list[Sequence] = ()) -> None:
        """End every sequence with an error event (`extra`: ones taken from the queue but not yet batched)."""
        with self._cv:
            seqs = [s for b in self._batches for s in b.seqs] + list(self._waiting) + list(extra)
            self._batches, self._waiting = [], deque()
        for s in seqs:
            if s.finish_reason is None:
                s.finish_reason = "error"
                s.on_event(Event("error", error=why))
            self._release(s)

    def _use_adapter(self, name: str | None):
        """Activate `name` on the peft model (None = the plain base) for the next forward pass."""
        if not self.is_peft:
            return contextlib.nullcontext()
        if name is None:
            return self.model.disable_adapter()
        if self._adapter_on != name:
            self.model.set_adapter(name)
            self._adapter_on = name
        return contextlib.nullcontext()

    def _expired(self, seq: Sequence, now: float) -> bool:
        if seq.cancelled:
            seq.finish_reason = "cancelled"
            return True
        if now > seq.deadline:
            seq.finish_reason = "timeout"
            seq.on_event(Event("error", error="timeout"))
            return True
        return False

    def _prefill(self, new: list[Sequence]) -> None:
        """Prefill the newly admitted sequences: together per adapter, or one by one for unstackable caches."""
        now = time.monotonic()
        live = []
        for seq in new:
            if self._expired(seq, now) or not self._constrain(seq):
                self._release(seq)
            else:
                live.append(seq)
        groups: dict[str | None, list[Sequence]] = {}
        for seq in live:
            groups.setdefault(seq.adapter, []).append(seq)
        for group in groups.values():
            for part in ([group] if self._stackable else [[s] for s in group]):
                self._prefill_rows(part)

    def _constrain(self, seq: Sequence) -> bool:
        """Build the grammar state of a sequence with a json_schema; one that fails ends alone, with an error."""
        if seq.json_schema is None or seq._constraint is not None:
            return True
        from tailor.models.grammar import json_constraint

        try:
            seq._constraint = json_constraint(self.tokenizer, seq.json_schema, self.vocab_size, self.eos_ids)
            return True
        except Exception:  # the routes check schemas; this guards the other sequences of the batch
            log.exception("cannot constrain a sequence to its JSON schema")
            seq.finish_reason = "error"
            seq.on_event(Event("error", error="internal"))
            return False

    def _prefill_rows(self, seqs: list[Sequence]) -> None:
        """One forward pass over left-padded prompts; rows that go on join their adapter's running batch."""
        width = max(len(s.prompt_ids) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0  # masked out anyway
        ids = torch.tensor([[pad] * (width - len(s.prompt_ids)) + s.prompt_ids for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s.prompt_ids)) + [1] * len(s.prompt_ids) for s in seqs],
                            device=self.device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # each row counts from its first real token
        # images of all rows in row order: the model scatters them into its image tokens in that order
        images = [s.image_inputs for s in seqs if s.image_inputs]
        pixels = {k: torch.cat([x[k] for x in images]).to(self.device) for k in images[0]} if images else {}
        pixels = {k: v.to(self.model.dtype) if v.is_floating_point() else v for k, v in pixels.items()}
        with self._use_adapter(seqs[0].adapter):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **pixels)
        self._advance(seqs, out.logits[:, -1].float())
        keep = [i for i, s in enumerate(seqs) if s.finish_reason is None]
        for i in set(range(len(seqs))) - set(keep):
            self._release(seqs[i])
        if not keep:
            return
        cache = out.past_key_values
        if len(seqs) > 1:
            # Drop rows that already finished, trim padding all kept rows share, and zero the padded
            # positions so the cache looks exactly like one stacked from single-row prefills.
            idx = torch.tensor(keep, device=self.device)
            mask = mask[idx]
            start = int((mask.sum(0) > 0).nonzero()[0])
            mask = mask[:, start:]
            real = mask.bool()[:, None, :, None]
            for layer in cache.layers:
                layer.keys = torch.where(real, layer.keys[idx, :, start:], 0)
                layer.values = torch.where(real, layer.values[idx, :, start:], 0)
        self._join([seqs[i] for i in keep], cache, mask)

    def _join(self, seqs: list[Sequence], cache, mask: torch.Tensor) -> None:
        """Stack new rows (their cache and left-padding mask) into the running batch of their adapter."""
        stackable = self._stackable and _plain_cache(cache)
        adapter = seqs[0].adapter
        for b in self._batches:
            if b.stackable and stackable and b.adapter == adapter:
                width = max(b.mask.shape[1], mask.shape[1])
                for old, new in zip(b.cache.layers, cache.layers):
                    old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)])
                    old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)])
                b.mask = torch.cat([_pad_left(b.mask, width, dim=1), _pad_left(mask, width, dim=1)])
                b.seqs.extend(seqs)
                return
        self._batches.append(_Batch(adapter, list(seqs), cache, mask, stackable))

    def _reap(self) -> None:
        """Cut finished, cancelled and expired rows out of their batches."""
        now = time.monotonic()
        kept = []
        for b in self._batches:
            keep = [i for i, s in enumerate(b.seqs) if s.finish_reason is None and not self._expired(s, now)]
            for i in set(range(len(b.seqs))) - set(keep):
                self._release(b.seqs[i])
            if not keep:
                continue
            if len(keep) < len(b.seqs):
                idx = torch.tensor(keep, device=self.device)
                b.seqs = [b.seqs[i] for i in keep]
                b.mask = b.mask[idx]
                start = int((b.mask.sum(0) > 0).nonzero()[0])  # padding every remaining row shares
                b.mask = b.mask[:, start:]
                for layer in b.cache.layers:
                    layer.keys = layer.keys[idx, :, start:]
                    layer.values = layer.values[idx, :, start:]
            kept.append(b)
        self._batches = kept

    def _decode(self, b: _Batch) -> None:
        rows = len(b.seqs)
        ids = torch.tensor([[s.ids[-1]] for s in b.seqs], device=self.device)
        positions = b.mask.sum(1, keepdim=True)  # each row's next position ignores its left padding
        mask = torch.cat([b.mask, torch.ones((rows, 1), dtype=b.mask.dtype, device=self.device)], dim=1)
        with self._use_adapter(b.adapter):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=b.cache,
                             use_cache=True)
        b.mask = mask
        if self.metrics:
            self.metrics.batch_size.observe(rows)
        self._advance(b.seqs, out.logits[:, -1].float())

    # -- tokens -----------------------------------------------------------------------------

    def _advance(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        """Choose each row's next token, then emit its text and decide whether it is finished."""
        for i, s in enumerate(seqs):
            if s._constraint is not None:
                s._constraint.mask(logits[i])  # only tokens the grammar allows next (end-of-sequence when complete)
        chosen = logits.argmax(-1).tolist()
        logp = torch.log_softmax(logits, -1) if any(s.logprobs is not None for s in seqs) else None
        for i, s in enumerate(seqs):
            if s.temperature > 0:
                chosen[i] = _sample(logits[i], s.temperature, s.top_p, s._generator)
            if s._constraint is not None:
                s._constraint.advance(chosen[i])
            self._append(s, chosen[i], logp[i] if logp is not None and s.logprobs is not None else None)

    def _append(self, s: Sequence, token: int, logp: torch.Tensor | None) -> None:
        now = time.monotonic()
        if s.first_token is None:
            s.first_token = now
            if self.metrics:
                self.metrics.ttft.observe(now - s.submitted)
        s.ids.append(token)
        if self.metrics:
            self.metrics.generated.inc()
        if token in self.eos_ids:
            self._finish(s, "stop", flush=True)
            return
        before = len(s.text)
        delta = self._detokenize(s)
        info = []
        if logp is not None:
            top = torch.topk(logp, s.logprobs) if s.logprobs else None
            alts = [(self.tokenizer.decode([t]), float(v)) for v, t in zip(top.values.tolist(), top.indices.tolist())] if top else []
            info = [(self.tokenizer.decode([token]), float(logp[token]), alts)]
        s.text += delta
        hit = _find_stop(s.text, s.stop, before)
        if hit is not None:
            s.text = s.text[:hit]
            self._emit(s, len(s.text), info)
            self._finish(s, "stop")
            return
        full = len(s.ids) >= s.max_tokens or len(s.prompt_ids) + len(s.ids) >= self.max_context
        complete = s._constraint is not None and s._constraint.finished  # the JSON is closed: nothing may follow
        self._emit(s, len(s.text) if full or complete else len(s.text) - _holdback(s.text, s.stop), info)
        if complete:
            self._finish(s, "stop", flush=True)
        elif full:
            self._finish(s, "length", flush=True)

    def _emit(self, s: Sequence, upto: int, info: list) -> None:
        if upto > s.emitted or info:
            s.on_event(Event("delta", text=s.text[s.emitted:max(upto, s.emitted)], tokens=info))
            s.emitted = max(upto, s.emitted)

    def _finish(self, s: Sequence, reason: str, flush: bool = False) -> None:
        if flush:  # text held back for an unfinished multi-byte character is final now: send it as decoded
            prefix = self.tokenizer.decode(s.ids[s._prefix_offset:s._read_offset], skip_special_tokens=True)
            rest = self.tokenizer.decode(s.ids[s._prefix_offset:], skip_special_tokens=True)[len(prefix):]
            before, s.text = len(s.text), s.text + rest
            hit = _find_stop(s.text, s.stop, before)
            if hit is not None:
                s.text, reason = s.text[:hit], "stop"
        self._emit(s, len(s.text), [])
        s.finish_reason = reason
        self._release(s)  # the slot counts as free now; its cache row goes at the next reap
        s.on_event(Event("done", finish_reason=reason))

    def _detokenize(self, s: Sequence) -> str:
        """Text the newest token adds; held back while it ends inside a multi-byte character."""
        prefix = self.tokenizer.decode(s.ids[s._prefix_offset:s._read_offset], skip_special_tokens=True)
        text = self.tokenizer.decode(s.ids[s._prefix_offset:], skip_special_tokens=True)
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            s._prefix_offset, s._read_offset = s._read_offset, len(s.ids)
            return text[len(prefix):]
        return ""


def _pad_left(x: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    # Tiny temperatures overflow logits / t to inf; below 1e-4 sampling is argmax in all but name.
    if temperature < 1e-4:
        return int(logits.argmax())
    probs = torch.softmax(logits.double() / temperature, -1).cpu()
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        cut = (sorted_p.cumsum(0) - sorted_p) >= top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p[cut] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    if not torch.isfinite(probs).all() or probs.sum() <= 0:
        return int(logits.argmax())
    return int(torch.multinomial(probs, 1, generator=generator))


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    """Position of the earliest stop string that ends in the new text, or None."""
    best = None
    for stop in stops:
        pos = text.find(stop, max(0, start - len(stop) + 1))
        if pos >= 0 and (best is None or pos < best):
            best = pos
    return best


def _holdback(text: str, stops: list[str]) -> int:
    """Characters at the end of text that could be the start of a stop string (not sent yet)."""
    for k in range(min(len(text), max((len(s) for s in stops), default=1) - 1), 0, -1):
        if any(stop.startswith(text[-k:]) for stop in stops):
            return k
    return 0
