"""Load test of `tailor serve`: 32 concurrent streaming clients vs the same requests one at a time.

Starts the server as a real process (a model built from a preset in a temp dir, or --model DIR),
warms it up, then sends the same greedy chat requests twice: sequentially (baseline) and from 32
concurrent streaming clients. Prints failures, generated tokens/s of both runs and their ratio,
p50/p95 time to first token, and the server's RSS after warm-up and after the test.

    python bench/bench_serve.py                    # llama-tiny built from its preset, 96 requests
    python bench/bench_serve.py --model DIR --requests 128 --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CORPUS = ["The return window for laptops is 30 days. Tents can be returned within 60 days.",
          "Shipping to the north region takes 3 to 5 business days; the south region takes 2 days.",
          "Our store in Springfield opens at 9 am and closes at 8 pm on weekdays.",
          "笔记本电脑的退货期限是30天。帐篷可以在60天内退货。", "Hello! How can I help you today?"] * 40
TOPICS = ["laptops", "tents", "shipping north", "shipping south", "opening hours", "returns", "warranty", "gift cards"]


def build_model(out: Path, preset: str) -> Path:
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, vocab_size=1000, out_dir=out / "tokenizer")
    init_model(preset, tok, out_dir=out / "model", seed=0)
    return out / "model"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(client: httpx.AsyncClient, url: str, i: int, max_tokens: int) -> dict:
    body = {"model": "bench", "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Question {i}: tell me about {TOPICS[i % len(TOPICS)]}."}]}
    t0 = time.perf_counter()
    ttft, tokens, text = None, 0, []
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return {"ok": False, "status": r.status_code}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return {"ok": False, "status": chunk["error"].get("type")}
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for c in chunk.get("choices", []):
                    if ttft is None and c["delta"].get("content"):
                        ttft = time.perf_counter() - t0
                    text.append(c["delta"].get("content") or "")
    except httpx.HTTPError as e:
        return {"ok": False, "status": type(e).__name__}
    return {"ok": True, "ttft": ttft if ttft is not None else time.perf_counter() - t0, "tokens": tokens,
            "seconds": time.perf_counter() - t0, "text": "".join(text)}


async def run(url: str, ids: list[int], concurrency: int, max_tokens: int) -> tuple[list[dict], float]:
    queue: asyncio.Queue = asyncio.Queue()
    for i in ids:
        queue.put_nowait(i)
    results: dict[int, dict] = {}

    async def worker(client):
        while not queue.empty():
            i = queue.get_nowait()
            results[i] = await one(client, url, i, max_tokens)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return [results[i] for i in ids], time.perf_counter() - t0


def summary(results: list[dict], seconds: float) -> dict:
    ok = [r for r in results if r["ok"]]
    ttfts = sorted(r["ttft"] for r in ok)
    tokens = sum(r["tokens"] for r in ok)
    return {"requests": len(results), "failed": len(results) - len(ok), "seconds": round(seconds, 2),
            "generated_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
            "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
            "ttft_p95_s": round(ttfts[max(0, int(0.95 * len(ttfts)) - 1)], 3) if ttfts else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory to serve (default: build --preset in a temp dir)")
    ap.add_argument("--preset", default="llama-tiny")
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--device", help="serve.device (default: best available)")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    model = Path(a.model) if a.model else build_model(tmp, a.preset)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "tailor.cli", "serve", str(model), f"max_batch_size={a.clients}",
           f"max_queue={a.requests}", f"max_tokens={a.max_tokens}"] + ([f"device={a.device}"] if a.device else [])
    cmd += ["--port", str(port), "--model-name", "bench"]
    server = subprocess.Popen(cmd, stdout=open(tmp / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if server.poll() is not None:
                print((tmp / "server.log").read_text(), file=sys.stderr)
                return 1
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 300:
                print("server did not become ready", file=sys.stderr)
                return 1
            time.sleep(0.2)
        ids = list(range(a.requests))
        asyncio.run(run(url, ids[: a.clients], a.clients, a.max_tokens))  # warm-up: every batch size once
        asyncio.run(run(url, ids[:4], 1, a.max_tokens))
        rss_warm = rss_mb(server.pid)
        seq_results, seq_s = asyncio.run(run(url, ids, 1, a.max_tokens))
        con_results, con_s = asyncio.run(run(url, ids, a.clients, a.max_tokens))
        rss_after = rss_mb(server.pid)
        seq, con = summary(seq_results, seq_s), summary(con_results, con_s)
        same = sum(x.get("text") == y.get("text") for x, y in zip(seq_results, con_results))
        report = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                        "device": a.device or "auto"},
            "model": str(model) if a.model else a.preset, "max_tokens": a.max_tokens, "clients": a.clients,
            "sequential": seq, "concurrent": con,
            "throughput_ratio": round(con["tokens_per_s"] / seq["tokens_per_s"], 2) if seq["tokens_per_s"] else None,
            "identical_answers": f"{same}/{len(ids)}",
            "rss_mb_after_warmup": round(rss_warm, 1), "rss_mb_after_test": round(rss_after, 1),
            "rss_growth": round(rss_after / rss_warm - 1, 4),
        }
        print(json.dumps(report, indent=2))
        ok = con["failed"] == 0 and seq["failed"] == 0 and report["rss_growth"] <= 0.10
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
