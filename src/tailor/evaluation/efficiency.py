"""Efficiency figures: time to first token, tokens/s, per-request latency, peak memory.

Latency figures come from single requests (batch of one, the way a chat user waits), rendered and
decoded exactly like serving (`encode_prompt`, `decoding_kwargs`); a streamer records the time of
every generated token, so time to first token is measured, not estimated. Peak memory is
`torch.cuda.max_memory_allocated` on a GPU (reset when evaluation starts); on a CPU it is the
process's peak resident set size from `resource.getrusage` (the peak since the process started,
which includes loading the model; tracemalloc would miss tensors, which torch allocates outside
Python's allocator).
"""

from __future__ import annotations

import sys
import time

import torch
from transformers.generation.streamers import BaseStreamer

from tailor.config import EvalConfig
from tailor.evaluation import metrics as M


class TokenClock(BaseStreamer):
    """A generate() streamer that notes when each new token arrives (the first put is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def start(device: torch.device) -> float:
    """Reset the GPU peak-memory counter; return the start time."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return time.perf_counter()


def peak_memory(device: torch.device) -> dict:
    """Peak memory in MiB and where the number comes from."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_source": "torch.cuda.max_memory_allocated (since evaluation started)"}
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    return {"peak_memory_mb": mb, "peak_memory_source": "peak RSS of the process (resource.getrusage ru_maxrss, since process start)"}


@torch.no_grad()
def time_requests(model, tokenizer, conversations: list[list[dict]], cfg: EvalConfig) -> dict:
    """Time the first eval.efficiency_requests conversations one at a time with the eval decoding settings."""
    from tailor.data.templates import encode_prompt
    from tailor.models.generation import decoding_kwargs

    model.eval()
    device = next(model.parameters()).device
    kwargs = decoding_kwargs(tokenizer, cfg.max_new_tokens, cfg.do_sample, cfg.temperature, cfg.top_p)
    ttft, latency, counts = [], [], []
    for conv in conversations[:cfg.efficiency_requests]:
        ids = torch.tensor([encode_prompt(tokenizer, conv)], device=device)
        clock = TokenClock()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=clock, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        if clock.times:
            ttft.append(clock.times[0] - t0)
        latency.append(t1 - t0)
        counts.append(len(clock.times))
    n = len(latency)
    out = {"requests": n, "generated_tokens": sum(counts)}
    if n:
        out.update({
            "ttft_ms_mean": 1000 * sum(ttft) / len(ttft) if ttft else float("nan"),
            "ttft_ms_p50": 1000 * M.percentile(ttft, 50),
            "latency_ms_p50": 1000 * M.percentile(latency, 50),
            "latency_ms_p95": 1000 * M.percentile(latency, 95),
            # end to end, prefill included: what a single user sees
            "tokens_per_second": sum(counts) / sum(latency) if sum(latency) else float("nan"),
        })
    return out
