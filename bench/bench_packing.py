"""Packed vs padded SFT: loss-bearing tokens per second, and the loss each reaches, on the same samples.

    .venv/bin/python bench/bench_packing.py [--data PATH|synthetic] [--samples N] [--preset llama-tiny] [--threads N]

Both runs start from the same weights, see the same samples once (same seed) at the same
max_length, and are timed step by step in alternation, so load from other processes on the machine
falls on both alike. (a) is the baseline: random order, batches of `--batch-size` samples padded by
tailor's PadCollator. (b) is what `data.packing=true` trains with: `pack_dataset` + `PackingCollator`,
split into as many batches (optimizer steps) as (a) has, so each step sees about as many real tokens.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

from tailor.data.loading import LoadReport, load_records
from tailor.data.packing import PackingCollator, PadCollator, pack_dataset
from tailor.data.records import record_text
from tailor.data.tokenize import sft_dataset
from tailor.models.presets import init_model
from tailor.models.tokenizer import train_tokenizer

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "alpaca_en_demo.json"
WORDS = ("the order ships within days refund policy store opens laptop tent return window customer asks "
         "about delivery price warranty battery screen size colour north south region business").split()


def synthetic_records(n: int, seed: int) -> list[dict]:
    """Conversations whose lengths vary like instruction data (log-normal, a long tail)."""
    rng = random.Random(seed)

    def text(mean_words):
        return " ".join(rng.choice(WORDS) for _ in range(max(2, int(rng.lognormvariate(0, 0.8) * mean_words))))

    return [{"messages": [{"role": "user", "content": text(15)}, {"role": "assistant", "content": text(90)}]}
            for _ in range(n)]


def batches(rows: list[dict], size: int, collate) -> list[dict]:
    return [collate(rows[i:i + size]) for i in range(0, len(rows), size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None,
                    help=f"SFT file (alpaca/sharegpt/messages) or 'synthetic'; default {DEFAULT_DATA.name} when present, else synthetic")
    ap.add_argument("--samples", type=int, default=300, help="training samples (each seen once by both runs)")
    ap.add_argument("--eval-samples", type=int, default=64, help="held-out samples for the final loss")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8, help="samples per padded batch")
    ap.add_argument("--preset", default="llama-tiny")
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0 = torch's default); 1 avoids OpenMP stalls when other processes share the cores")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch.manual_seed(args.seed)

    data = args.data or (str(DEFAULT_DATA) if DEFAULT_DATA.is_file() else "synthetic")
    if data != "synthetic":
        if not Path(data).is_file():
            ap.error(f"--data {data}: no such file")
        records, source = load_records([data]), data
    else:
        records, source = synthetic_records(args.samples + args.eval_samples, args.seed), "synthetic conversations"
    records = [r for r in records if "messages" in r]
    tmp = Path(tempfile.mkdtemp(prefix="bench_packing_"))
    tokenizer = train_tokenizer([record_text(r) for r in records], vocab_size=args.vocab, out_dir=tmp / "tok")
    report = LoadReport()
    ds = sft_dataset(records, tokenizer, args.max_length, report=report)
    order = list(range(len(ds)))
    random.Random(args.seed).shuffle(order)
    train = ds.select(order[:args.samples])
    held_out = ds.select(order[args.samples:args.samples + args.eval_samples])

    pad_rows = list(train)
    random.Random(args.seed).shuffle(pad_rows)
    padded = batches(pad_rows, args.batch_size, PadCollator(tokenizer.pad_token_id))
    packed_ds, stats = pack_dataset(train, args.max_length, seed=args.seed)
    # As many optimizer steps as (a), so both take the same number of updates on the same tokens.
    rows, steps = list(packed_ds), min(len(padded), len(packed_ds))
    collate = PackingCollator(tokenizer.pad_token_id)
    packed = [collate(rows[i * len(rows) // steps:(i + 1) * len(rows) // steps]) for i in range(steps)]

    model = init_model(args.preset, tokenizer, seed=args.seed)
    model.config.use_cache = False
    runs = {}
    for name, data in (("padded", padded), ("packed", packed)):
        m = copy.deepcopy(model).train()
        runs[name] = {"model": m, "opt": torch.optim.AdamW(m.parameters(), lr=args.lr), "batches": data, "next": 0,
                      "seconds": 0.0, "loss_sum": 0.0, "loss_tokens": 0, "slots": 0,
                      "total": sum(int((b["labels"][:, 1:] != -100).sum()) for b in data)}
    assert runs["padded"]["total"] == runs["packed"]["total"] == stats.loss_tokens, "the two runs must see the same loss tokens"

    # Warm-up (allocator, kernels) on a throwaway copy, outside the timed region.
    for name in runs:
        scratch = copy.deepcopy(model).train()
        batch = dict(runs[name]["batches"][0])
        scratch(**batch).loss.backward()
        del scratch

    while any(r["next"] < len(r["batches"]) for r in runs.values()):
        # Step whichever run is behind in loss tokens, so both advance through the same stretch of time.
        name = min((n for n, r in runs.items() if r["next"] < len(r["batches"])),
                   key=lambda n: runs[n]["loss_tokens"] / runs[n]["total"])
        r = runs[name]
        batch = r["batches"][r["next"]]
        n_items = int((batch["labels"][:, 1:] != -100).sum())
        t0 = time.perf_counter()
        loss = r["model"](**batch).loss  # mean over this batch's loss-bearing tokens in both runs
        loss.backward()
        r["opt"].step()
        r["opt"].zero_grad(set_to_none=True)
        r["seconds"] += time.perf_counter() - t0
        r["loss_sum"] += loss.item() * n_items
        r["loss_tokens"] += n_items
        r["slots"] += batch["input_ids"].numel()
        r["next"] += 1

    eval_batches = batches(list(held_out), args.batch_size, PadCollator(tokenizer.pad_token_id))
    for r in runs.values():
        r["model"].eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for b in eval_batches:
                n = int((b["labels"][:, 1:] != -100).sum())
                total += r["model"](**b).loss.item() * n
                count += n
        r["eval_loss"] = total / max(count, 1)

    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | "
          f"cpu_count={os.cpu_count()} | torch {torch.__version__} threads={torch.get_num_threads()} "
          f"| load average {os.getloadavg()[0]:.1f} at the end")
    print(f"data: {source}: {len(records)} conversations, {args.samples} trained, {len(held_out)} held out; "
          f"max_length={args.max_length}; {report.skipped.get('truncated to data.max_length (kept)', 0)} truncated "
          f"(whole file); model {args.preset} (vocab {len(tokenizer)})")
    print(f"packing: {stats.samples} samples -> {stats.packed} rows, fill {stats.fill_ratio:.1%}; "
          f"batches: padded {args.batch_size} samples x {len(padded)} steps, packed {len(rows) / steps:.1f} rows x {len(packed)} steps")
    print(f"{'run':8} {'steps':>5} {'seconds':>8} {'loss tok/s':>11} {'real tok/s':>11} {'non-pad':>8} "
          f"{'train loss/tok':>15} {'held-out loss/tok':>18}")
    for name, r in runs.items():
        print(f"{name:8} {len(r['batches']):5d} {r['seconds']:8.1f} {r['loss_tokens'] / r['seconds']:11.0f} "
              f"{stats.tokens / r['seconds']:11.0f} {stats.tokens / r['slots']:8.1%} "
              f"{r['loss_sum'] / r['loss_tokens']:15.4f} {r['eval_loss']:18.4f}")
    ratio = (runs["packed"]["loss_tokens"] / runs["packed"]["seconds"]) / (runs["padded"]["loss_tokens"] / runs["padded"]["seconds"])
    print(f"ratio packed/padded (loss-bearing tokens/s): {ratio:.2f}x  [{runs['padded']['loss_tokens']} loss tokens each; "
          f"total wall {time.perf_counter() - started:.0f} s]")


if __name__ == "__main__":
    main()
