"""Decode speed of constrained decoding: tokens/s of the serving engine with and without a JSON-schema constraint.

The same greedy chat requests run through tailor's batched engine (`tailor.serving.engine.Engine`, the model
loaded as `tailor serve` loads it) per batch size, in alternating order: free text, and JSON constrained to a
schema by llguidance (`tailor.models.grammar`). For the speed figures every sequence generates exactly
--max-tokens tokens (free text ignores end-of-sequence, the schema's answer string is longer than the cap), so
both runs do the same forward passes and the ratio is the grammar's cost alone. Also printed: the time spent in
the grammar (mask + advance) per token, and a separate check that every constrained answer, given room to
finish, parses and validates. Run under the bench lock:

    flock /work/notes/bench.lock python bench/bench_structured.py --model /work/artifacts/qs14/merged
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["product", "days", "answer"],
          "properties": {"product": {"type": "string", "enum": ["laptop", "tent", "stove", "jacket"]},
                         "days": {"type": "integer", "minimum": 0, "maximum": 365},
                         "answer": {"type": "string", "maxLength": 400}}}
LONG = {**SCHEMA, "properties": {**SCHEMA["properties"], "answer": {"type": "string", "maxLength": 4000}}}
QUESTIONS = ["How long can I return a laptop?", "Can I return a tent after camping?", "How long is the stove warranty?",
             "Do jackets ship to the north region?", "笔记本电脑可以退货多久？", "帐篷的退货期限是多久？"]


def cpu_description() -> str:
    try:
        name = next(x for x in Path("/proc/cpuinfo").read_text().splitlines()
                    if x.startswith("model name")).split(":", 1)[1].strip()
        flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags")).split()
    except (OSError, StopIteration):
        name, flags = platform.processor() or platform.machine(), []
    keep = sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f", "avx2")))
    return f"{name} [{' '.join(keep) or 'no avx2/avx512/amx flags'}], {os.cpu_count()} CPUs"


def run(engine, prompts: list[list[int]], max_tokens: int, schema: dict | None) -> tuple[float, list, list]:
    """Submit all prompts at once; (wall seconds, generated ids per sequence, texts)."""
    from tailor.serving.engine import Sequence

    done = threading.Semaphore(0)
    seqs = [Sequence(prompt_ids=p, max_tokens=max_tokens, json_schema=schema,
                     on_event=lambda ev: ev.kind != "delta" and done.release()) for p in prompts]
    t0 = time.perf_counter()
    engine.submit(seqs)
    for _ in seqs:
        done.acquire()
    return time.perf_counter() - t0, [s.ids for s in seqs], [s.text for s in seqs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="/work/artifacts/qs14/merged")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 6])
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--check-tokens", type=int, default=400, help="cap for the validity check")
    args = ap.parse_args()

    import jsonschema_rs
    import torch

    from tailor.config import ServeConfig
    from tailor.data.templates import encode_prompt
    from tailor.models import grammar
    from tailor.serving.server import build_engine

    print(f"machine: {cpu_description()}; torch threads {torch.get_num_threads()}; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    cfg = ServeConfig(max_batch_size=max(args.batch), max_tokens=max(args.max_tokens, args.check_tokens))
    engine = build_engine(args.model, cfg).start()
    tok = engine.tokenizer
    system = "Answer as JSON: " + json.dumps(SCHEMA)
    spent = {"s": 0.0, "n": 0}
    mask, advance = grammar.Constraint.mask, grammar.Constraint.advance

    def timed(fn):
        def wrapper(self, *a):
            t0 = time.perf_counter()
            out = fn(self, *a)
            spent["s"] += time.perf_counter() - t0
            spent["n"] += fn is mask
            return out
        return wrapper

    grammar.Constraint.mask, grammar.Constraint.advance = timed(mask), timed(advance)
    run(engine, [encode_prompt(tok, [{"role": "user", "content": "hi"}])], 4, SCHEMA)  # warm-up, both paths
    run(engine, [encode_prompt(tok, [{"role": "user", "content": "hi"}])], 4, None)
    ok = True
    for batch in args.batch:
        prompts = [encode_prompt(tok, [{"role": "system", "content": system},
                                       {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]) for i in range(batch)]
        totals = {"free": [0.0, 0], "json": [0.0, 0]}
        spent.update(s=0.0, n=0)
        eos = engine.eos_ids
        for r in range(args.repeats):
            for name in (("free", "json") if r % 2 == 0 else ("json", "free")):
                engine.eos_ids = set() if name == "free" else eos  # free text runs to the cap like the JSON
                wall, ids, _ = run(engine, prompts, args.max_tokens, LONG if name == "json" else None)
                engine.eos_ids = eos
                totals[name][0] += wall
                totals[name][1] += sum(len(x) for x in ids)
        per_token = spent["s"] / max(spent["n"], 1) * 1e3
        _, _, texts = run(engine, prompts, args.check_tokens, SCHEMA)
        valid = 0
        for t in texts:
            try:
                jsonschema_rs.validate(SCHEMA, json.loads(t))
                valid += 1
            except (ValueError, jsonschema_rs.ValidationError):
                print(f"  not valid: {t[:100]!r}")
        free, cons = (totals[k][1] / totals[k][0] for k in ("free", "json"))
        print(f"batch {batch}: free {free:.1f} tok/s ({totals['free'][1]} tokens), json-schema {cons:.1f} tok/s "
              f"({totals['json'][1]} tokens); constrained/free = {cons / free:.3f}; grammar {per_token:.3f} ms per "
              f"token per sequence; {valid}/{batch} constrained answers (cap {args.check_tokens}) parse and validate")
        ok = ok and valid == batch
    engine.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
