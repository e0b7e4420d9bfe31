"""The web export in headless Chromium beside `tailor serve`: time to first token and decode tokens/s, same questions.

Builds the quickstart-size model (deepseek-v3-tiny, a tokenizer trained with vocab_size 4096 on the store domain,
untrained weights: speed does not depend on training) unless --model is given, exports it with `--format web` (fp32 with
each ONNX exporter of --exporters, int8 with the first), serves each folder with `python -m http.server` and asks
the page's `window.tailor.generate` the held-out store questions (English and Chinese) one at a time; then starts `tailor serve` on the same model and sends the
same conversations as greedy streaming chat requests, one at a time, with its default threads and with one
thread (the page's WebAssembly runs one thread: http.server sends no cross-origin isolation headers).

Time to first token: from the request (page: the generate call, template and tokenizer included; server: the HTTP
request) to the first new token. Decode tokens/s: (new tokens - 1) / (last token time - first token time), per
answer; the medians are printed. Each page's greedy tokens are compared with PyTorch's (tailor's generate).

    flock /work/notes/bench.lock python bench/bench_web.py    # 16 questions, 64 new tokens, dynamo and torchscript graphs
    python bench/bench_web.py --model DIR --questions 8 --max-tokens 32 --exporters auto
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_line import machine  # noqa: E402  (bench/ is the script's folder)

CHROMIUM = os.environ.get("TAILOR_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    end = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"{url} did not answer:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def build(tmp: Path) -> tuple[Path, list[list[dict]]]:
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer
    from tailor.quickstart.store_domain import generate_store_domain

    domain = generate_store_domain(seed=0)
    corpus = list(domain.documents) + [m["content"] for r in domain.train for m in r["messages"]]
    tok = train_tokenizer(corpus, 4096, tmp / "tokenizer")
    init_model("deepseek-v3-tiny", tok, out_dir=tmp / "model", seed=0)
    return tmp / "model", [r["messages"][:1] for r in domain.eval]


def pick(questions: list[list[dict]], n: int) -> list[list[dict]]:
    """n questions alternating English and Chinese (the eval set holds both)."""
    zh = [q for q in questions if any("\u4e00" <= ch <= "\u9fff" for ch in q[0]["content"])]
    en = [q for q in questions if q not in zh]
    return [x for pair in zip(en, zh) for x in pair][:n]


def summary(rows: list[dict]) -> dict:
    speeds = [r["tokens_per_s"] for r in rows if r["tokens_per_s"]]
    return {"answers": len(rows), "new_tokens": sum(r["n"] for r in rows),
            "ttft_ms_median": round(statistics.median(r["ttft_ms"] for r in rows), 1),
            "decode_tokens_per_s_median": round(statistics.median(speeds), 1) if speeds else None}


def browser_run(folder: Path, chats: list[list[dict]], max_tokens: int) -> tuple[list[dict], float]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = folder.parent / f"{folder.name}-http.log"
    site = subprocess.Popen([sys.executable, "-m", "http.server", "-d", str(folder), "-b", "127.0.0.1", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url + "web.json", site, log)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = b.new_page()
            page.set_default_timeout(600_000)
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("#status[data-ready], #status.error")
            load_s = time.perf_counter() - t0
            if page.get_attribute("#status", "data-ready") != "1":
                raise RuntimeError(page.inner_text("#status"))
            gen = "async ([m, n]) => await window.tailor.generate(m, {maxNewTokens: n})"
            page.evaluate(gen, [chats[0], max_tokens])  # warm-up (first runs allocate and optimize)
            rows = []
            for chat in chats:
                r = page.evaluate(gen, [chat, max_tokens])
                rows.append({"ids": r["ids"], "n": len(r["ids"]), "ttft_ms": r["ttftMs"], "tokens_per_s": r["tokensPerS"]})
            b.close()
        return rows, load_s
    finally:
        site.terminate()
        site.wait(timeout=10)


def serve_one(client: httpx.Client, url: str, chat: list[dict], max_tokens: int) -> dict:
    body = {"model": "bench", "messages": chat, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if any(c["delta"].get("content") for c in chunk.get("choices", [])):
                last = time.perf_counter()
                first = first or last
    first = first or time.perf_counter()
    gap = (last or first) - first
    return {"n": tokens, "ttft_ms": 1000 * (first - t0),
            "tokens_per_s": (tokens - 1) / gap if tokens > 1 and gap > 0 else None}


def serve_run(model: Path, chats: list[list[dict]], max_tokens: int, tmp: Path, threads: int | None) -> list[dict]:
    port = free_port()
    log = tmp / f"serve-{threads or 'default'}.log"
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    cmd = [sys.executable, "-m", "tailor.cli", "serve", str(model), f"max_tokens={max_tokens}", "device=cpu",
           "--port", str(port), "--model-name", "bench"]
    server = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/ready", server, log)
        with httpx.Client(timeout=600) as client:
            serve_one(client, url, chats[0], max_tokens)  # warm-up
            return [serve_one(client, url, c, max_tokens) for c in chats]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: the quickstart-size model, built untrained)")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--exporters", nargs="+", default=["dynamo", "torchscript"], choices=["auto", "dynamo", "torchscript"],
                    help="ONNX exporters to compare, fp32 each; int8 with the first")
    a = ap.parse_args()

    from tailor.data.templates import encode_prompt
    from tailor.export import run
    from tailor.models.generation import generate_rows
    from tailor.models.loading import load_model, load_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_web_"))
    model, questions = build(tmp) if not a.model else (Path(a.model), None)
    if questions is None:
        from tailor.quickstart.store_domain import generate_store_domain

        questions = [r["messages"][:1] for r in generate_store_domain(seed=0).eval]
    chats = pick(questions, a.questions)
    report = {"machine": machine(), "model": str(model) if a.model else "deepseek-v3-tiny (quickstart size, untrained)",
              "questions": len(chats), "max_tokens": a.max_tokens, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    tok, torch_model = load_tokenizer(model), load_model(model, dtype="float32", device="cpu")
    eos = tok.eos_token_id
    torch_rows = [generate_rows(torch_model, tok, [c], max_new_tokens=a.max_tokens, batch_size=1)[0] for c in chats]
    torch_ids = [r[: r.index(eos) + 1] if eos in r else r for r in torch_rows]
    report["prompt_tokens_median"] = statistics.median(len(encode_prompt(tok, c)) for c in chats)
    del torch_model
    for exporter, weights in [(e, "fp32") for e in a.exporters] + [(a.exporters[0], "int8")]:
        t0 = time.perf_counter()
        out = run(model, "web", tmp / f"web-{exporter}-{weights}", exporter=exporter, weights=weights)
        export_s = time.perf_counter() - t0
        rows, load_s = browser_run(out, chats, a.max_tokens)
        info = json.loads((out / "export.json").read_text())
        graph = sum(size for name, size in info["files"].items() if name.startswith("model/model.onnx"))
        same = sum(r["ids"] == t for r, t in zip(rows, torch_ids))
        report[f"browser_{exporter}_{weights}"] = {
            **summary(rows), "page_load_s": round(load_s, 2), "export_s": round(export_s, 1), "exporter_used": info["exporter"],
            "folder_mb": info["total_mb"], "graph_mb": round(graph / 2**20, 2), "identical_to_pytorch_greedy": f"{same}/{len(chats)}"}
    for threads in (None, 1):
        rows = serve_run(model, chats, a.max_tokens, tmp, threads)
        report[f"serve_{'threads_default' if threads is None else 'threads_1'}"] = summary(rows)
    serve1 = report["serve_threads_1"]["decode_tokens_per_s_median"]
    for exporter in a.exporters:
        b = report[f"browser_{exporter}_fp32"]["decode_tokens_per_s_median"]
        report[f"decode_ratio_browser_{exporter}_fp32_vs_serve_1_thread"] = round(b / serve1, 2) if b and serve1 else None
    report["machine_after"] = machine()
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
