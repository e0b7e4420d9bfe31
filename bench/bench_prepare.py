"""Benchmark: `tailor data prepare` on real alpaca data, first run vs the cached second run.

    .venv/bin/python bench/bench_prepare.py [--data FILE ...] [--num-proc 2]

Prepares the alpaca demo files (or generated conversations when ../shared/datasets is absent) with
cleaning, exact + near de-dup, a test split and tokenization; then prepares again with unchanged input
and recipe. Prints both times, the ratio (target: second run >= 20x faster), and the tokenization
time with num_proc=1 vs --num-proc in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT / "src"))


def _generated(tmp: Path) -> list[Path]:
    import random

    rng = random.Random(0)
    words = "order refund shipping warranty tent laptop return days store open price size color delivery".split()
    rows = []
    for i in range(2000):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))
        a = " ".join(rng.choice(words) for _ in range(rng.randint(5, 200)))
        rows.append({"instruction": f"Question {i}: {q}?", "input": "", "output": a})
    path = tmp / "generated.json"
    path.write_text(json.dumps(rows))
    return [path]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="*", help="alpaca/sharegpt/messages files (default: the shared alpaca demos)")
    ap.add_argument("--num-proc", type=int, default=2)
    args = ap.parse_args()

    from tailor.config import load_recipe
    from tailor.data.loading import load_records
    from tailor.data.prepare import run
    from tailor.data.tokenize import tokenize_split
    from tailor.models.loading import load_tokenizer
    from tailor.models.tokenizer import train_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        files = [Path(f) for f in args.data] if args.data else (
            [SHARED / "alpaca_en_demo.json", SHARED / "alpaca_zh_demo.json"] if SHARED.is_dir() else _generated(tmp))
        texts = [m["content"] for r in load_records(files) for m in r["messages"]]
        tok_dir = tmp / "tok"
        train_tokenizer(texts, vocab_size=4000, out_dir=tok_dir)
        sources = ", ".join(f"{{path: '{f}'}}" for f in files)
        overrides = [f"model.tokenizer={tok_dir}", f"data.sources=[{sources}]", "data.clean=[nfkc, strip_control, whitespace]",
                     "data.split.test=0.05", "data.max_length=1024", f"data.prepared_dir={tmp / 'prepared'}",
                     f"data.num_proc={args.num_proc}"]
        recipe = load_recipe(None, overrides)
        tok = load_tokenizer(tok_dir)
        t0 = time.perf_counter()
        first = run(recipe, tok)
        t1 = time.perf_counter()
        second = run(recipe, tok)
        t2 = time.perf_counter()
        assert second.cached and second.splits == first.splits
        cold, warm = t1 - t0, t2 - t1

        train = first.records("train")
        t3 = time.perf_counter()
        tokenize_split(train, tok, recipe.data.max_length, num_proc=1)
        t4 = time.perf_counter()
        tokenize_split(train, tok, recipe.data.max_length, num_proc=args.num_proc)
        t5 = time.perf_counter()

        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
        print(f"data: {', '.join(f.name for f in files)}; splits {first.splits}")
        print(f"first prepare (load, clean, de-dup, split, tokenize): {cold:.2f} s")
        print(f"second prepare (unchanged input and recipe, cache):   {warm:.3f} s")
        print(f"ratio first/second: {cold / warm:.1f}x  (target >= 20x: {'met' if cold / warm >= 20 else 'NOT met'})")
        print(f"tokenization of {len(train)} train rows: num_proc=1 {t4 - t3:.2f} s, num_proc={args.num_proc} {t5 - t4:.2f} s "
              f"(speed-up {(t4 - t3) / (t5 - t4):.2f}x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
