"""Batched evaluation generation vs one-at-a-time `generate` calls: same greedy outputs, how much faster.

    .venv/bin/python bench/bench_eval_batching.py [--n 200] [--batch-size 32] [--max-new-tokens 16] [--model DIR]

Without --model it builds a quickstart-like model: a byte-level BPE tokenizer (4096 tokens) trained
on the synthetic store-support domain and a `deepseek-v3-tiny` model from its preset, with random
weights (training it is the quickstart's job and takes minutes). An untrained model rarely emits
EOS, so every answer runs to --max-new-tokens, which is the best case for batching; with a trained
model (`--model runs/quickstart/merged`) answers end at different lengths and a batch runs as long
as its longest answer. Questions are the domain's held-out questions (cycled when --n exceeds them).

Both paths use the eval prompt path (`encode_prompt`) and the same greedy decoding settings
(`decoding_kwargs`); the baseline calls `model.generate` once per question with no padding, the
batched path is `tailor.models.generation.generate` (left-padded batches with KV cache), which
`tailor eval` uses. Left padding changes the shapes of the float32 matrix products, so an answer
can differ where two tokens' logits nearly tie; the script counts matches and shows differences.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tailor.quickstart.store_domain import generate_store_domain  # noqa: E402
from tailor.data.templates import encode_prompt  # noqa: E402
from tailor.models.generation import decoding_kwargs, generate  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    load = ", load average %.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}{load}"


def build_model(out: Path):
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer

    domain = generate_store_domain(seed=0, doc_variants=8, train_per_fact=12)
    corpus = list(domain.documents) + [m["content"] for r in domain.train for m in r["messages"]]
    tok = train_tokenizer(corpus, 4096, out / "tokenizer")
    model = init_model("deepseek-v3-tiny", tok, seed=0)
    return model, tok


def questions(n: int) -> list[list[dict]]:
    pool = [r["messages"][:-1] for r in generate_store_domain(seed=0, eval_per_fact=3).eval]
    return [pool[i % len(pool)] for i in range(n)]


@torch.no_grad()
def one_at_a_time(model, tok, convs, max_new_tokens: int) -> list[str]:
    device = next(model.parameters()).device
    kwargs = decoding_kwargs(tok, max_new_tokens)
    out = []
    for conv in convs:
        ids = torch.tensor([encode_prompt(tok, conv)], device=device)
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="questions to answer (the issue's target is 500)")
    ap.add_argument("--batch-size", type=int, default=32, help="prompts per batch on the batched path (default 32)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="tokens per answer (default 16)")
    ap.add_argument("--model", help="a trained model directory (e.g. runs/quickstart/merged) instead of a fresh one")
    ap.add_argument("--min-ratio", type=float, default=0.0, help="exit 1 when the speed-up is below this")
    a = ap.parse_args()

    from tailor import runtime
    from tailor.adapters.loading import load_any

    with tempfile.TemporaryDirectory() as tmp:
        if a.model:
            model, tok = load_any(a.model)
            runtime.enable(model)  # as `tailor eval` loads it
            what = a.model
        else:
            model, tok = build_model(Path(tmp))
            what = "deepseek-v3-tiny, random weights, 4096-token domain tokenizer"
    model.eval()
    convs = questions(a.n)
    params = sum(p.numel() for p in model.parameters())
    print(f"machine: {machine()}")
    print(f"model:   {what} ({params:,} parameters, {next(model.parameters()).dtype}, {next(model.parameters()).device})")
    print(f"task:    {a.n} questions, greedy, max_new_tokens={a.max_new_tokens}, batch_size={a.batch_size}")

    generate(model, tok, convs[:2], max_new_tokens=2, batch_size=2)  # warm-up: first-call set-up outside the timings
    t = time.perf_counter()
    batched = generate(model, tok, convs, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    single = one_at_a_time(model, tok, convs, a.max_new_tokens)
    t_single = time.perf_counter() - t

    same = sum(x == y for x, y in zip(batched, single))
    ratio = t_single / t_batched
    print(f"one at a time: {t_single:7.2f} s  ({a.n / t_single:6.2f} questions/s)")
    print(f"batched:       {t_batched:7.2f} s  ({a.n / t_batched:6.2f} questions/s)")
    print(f"speed-up:      {ratio:.2f}x   identical answers: {same}/{a.n}")
    for i, (x, y) in enumerate(zip(batched, single)):
        if x != y:
            print(f"  differs at {i}: batched {x[:60]!r} vs single {y[:60]!r}")
            if sum(1 for u, v in zip(batched[:i + 1], single[:i + 1]) if u != v) >= 3:
                break
    return 1 if ratio < a.min_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
