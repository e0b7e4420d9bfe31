"""LoRA SFT on variable-length chats: tailor's path (packing) vs the plain transformers Trainer + peft recipe.

    flock /work/notes/bench.lock .venv/bin/python bench/bench_lora_sft.py [--data PATH|synthetic] [--samples 400]
        [--baseline-padding longest|max_length] [--baseline-bf16] [--model preset|llama-30m]
        [--variant NAME:KEY=VALUE,... (repeatable)] [--min-ratio X] [--min-speedup Y]

(A) is the recipe most guides show: `get_peft_model(model, LoraConfig(...))`, `Trainer` with
`DataCollatorForSeq2Seq` padding every batch of --batch-size samples to its longest sample (or, with
--baseline-padding max_length, to data.max_length as guides that tokenize with padding="max_length" do), in
random order; --baseline-bf16 adds (A-bf16), the same with `bf16=True`. Each tailor run (one per --variant,
default `B:train.precision=fp32`, today's fp32 packed path) is `tailor.training.train` with `data.packing=true`
and the variant's recipe overrides: samples packed into rows of data.max_length with per-sample attention (no
attention across samples), as many rows per step as give about the same number of optimizer steps as (A). All start
from the same base weights, the same LoRA settings (r 16, alpha 32, all-linear, seeded), the same tokenized samples
(tailor's chat template with loss on assistant tokens only) and optimizer settings, and see every training sample
exactly once. --model llama-30m trains the ~30M Llama of bench_train_mfu.py instead of --preset.

Timing: the runs train in threads that hand a baton around after every optimizer step, so their steps alternate
in time and load from other processes on the machine falls on all alike. A step's time runs from getting the
baton to `on_step_end`: data loading, forward, backward, optimizer, callbacks, logging (the one-off precision
checks of train.precision=auto run before the first step and are not in it).
Loss-bearing tokens/s = the tokens whose label is predicted (identical in all runs) / summed step time.
Validation loss: every final model scores the same held-out samples (token-weighted mean, same code).
Exit 1 when the first variant / A is below --min-ratio, the last variant / the first is below --min-speedup, or a
held-out loss is more than --loss-tolerance above its reference (A for the first variant, the first for the rest).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transformers import TrainerCallback  # noqa: E402

from bench_packing import DEFAULT_DATA, synthetic_records  # noqa: E402
from tailor.config import load_recipe  # noqa: E402
from tailor.data.packing import PadCollator  # noqa: E402
from tailor.data.records import record_text  # noqa: E402
from tailor.data.tokenize import sft_dataset  # noqa: E402
from tailor.data.loading import load_records  # noqa: E402
from tailor.data.packing import pack_dataset  # noqa: E402
from tailor.models.presets import init_model  # noqa: E402
from tailor.models.tokenizer import train_tokenizer  # noqa: E402


class Baton:
    """Lets one registered run at a time proceed; `pass_on` hands the turn to the next run still going."""

    def __init__(self, order: list[str]):
        self.order, self.active, self.turn = order, set(order), None
        self.cv = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.turn == name)

    def give(self, name: str) -> None:
        with self.cv:
            self.turn = name
            self.cv.notify_all()

    def _next(self, name: str) -> None:
        i = self.order.index(name)
        nxt = [n for n in self.order[i + 1:] + self.order[:i + 1] if n in self.active]
        self.turn = nxt[0] if nxt else None
        self.cv.notify_all()

    def pass_on(self, name: str) -> None:
        with self.cv:
            self._next(name)

    def done(self, name: str) -> None:
        with self.cv:
            self.active.discard(name)
            if self.turn == name:
                self._next(name)


class Turns(TrainerCallback):
    """Times each optimizer step of one run and alternates runs through the baton."""

    def __init__(self, name: str, baton: Baton, ready: threading.Event):
        self.name, self.baton, self.ready = name, baton, ready
        self.seconds, self.steps = 0.0, 0

    def on_train_begin(self, args, state, control, **kw):
        self.ready.set()
        self.baton.wait(self.name)
        self.mark = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.seconds += time.perf_counter() - self.mark
        self.steps += 1
        self.baton.pass_on(self.name)
        self.baton.wait(self.name)
        self.mark = time.perf_counter()


def held_out_loss(model, rows: list[dict], pad_id: int, batch_size: int) -> float:
    """Token-weighted mean loss over the held-out samples (padded batches, attention mask)."""
    collate = PadCollator(pad_id)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = collate(rows[i:i + batch_size])
            n = int((b["labels"][:, 1:] != -100).sum())
            total += model(**b).loss.item() * n
            count += n
    return total / max(count, 1)


def loss_tokens(ds) -> int:
    return sum(sum(lab != -100 for lab in labels[1:]) for labels in ds["labels"])


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    return name, [o for o in overrides.split(",") if o]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help=f"SFT file or 'synthetic'; default {DEFAULT_DATA.name} when present")
    ap.add_argument("--samples", type=int, default=400, help="training samples, each seen once by every run")
    ap.add_argument("--eval-samples", type=int, default=100, help="held-out samples for the validation loss")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8, help="samples per step in the baseline")
    ap.add_argument("--baseline-padding", choices=("longest", "max_length"), default="longest")
    ap.add_argument("--baseline-bf16", action="store_true",
                    help="also run the plain Trainer + peft recipe with bf16=True (A-bf16), a second baseline")
    ap.add_argument("--preset", default="llama-tiny")
    ap.add_argument("--model", choices=("preset", "llama-30m"), default="preset",
                    help="llama-30m: the ~30M Llama of bench_train_mfu.py (hidden 512, 8 layers) instead of --preset")
    ap.add_argument("--variant", action="append", default=None, metavar="NAME:KEY=VALUE,...",
                    help="a tailor run with these recipe overrides on top of packing (repeatable; the first is the "
                         "reference the others are compared with); default B:train.precision=fp32")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP stalls on a shared machine)")
    ap.add_argument("--min-ratio", type=float, default=2.0,
                    help="exit 1 when the first variant's tokens/s over A's is below this")
    ap.add_argument("--min-speedup", type=float, default=0.0,
                    help="exit 1 when the last variant's tokens/s over the first variant's is below this")
    ap.add_argument("--loss-tolerance", type=float, default=0.01,
                    help="exit 1 when a variant's validation loss exceeds A's (the first variant's, for the others) "
                         "by more than this fraction")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    variants = dict(parse_variant(v) for v in (args.variant or ["B:train.precision=fp32"]))

    data = args.data or (str(DEFAULT_DATA) if DEFAULT_DATA.is_file() else "synthetic")
    if data == "synthetic":
        records, source = synthetic_records(args.samples + args.eval_samples, args.seed), "synthetic conversations"
    elif not Path(data).is_file():
        ap.error(f"--data {data}: no such file")
    else:
        records, source = [r for r in load_records([data]) if "messages" in r], data
    random.Random(args.seed).shuffle(records)
    if len(records) < args.samples + args.eval_samples:
        ap.error(f"{source} has {len(records)} conversations; --samples + --eval-samples need {args.samples + args.eval_samples}")
    train_recs, eval_recs = records[:args.samples], records[args.samples:args.samples + args.eval_samples]

    tmp = Path(tempfile.mkdtemp(prefix="bench_lora_sft_"))
    tokenizer = train_tokenizer([record_text(r) for r in records], vocab_size=args.vocab, out_dir=tmp / "tok")
    if args.model == "llama-30m":
        from bench_train_mfu import MODEL

        model_name = "llama-30m"
        init_model("llama-tiny", tokenizer, out_dir=tmp / "base", seed=args.seed, **MODEL)
    else:
        model_name = args.preset
        init_model(args.preset, tokenizer, out_dir=tmp / "base", seed=args.seed)
    for name, recs in (("train", train_recs), ("eval", eval_recs)):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n"
                                                   for r in recs), encoding="utf-8")
    train_ds = sft_dataset(train_recs, tokenizer, args.max_length)
    eval_rows = list(sft_dataset(eval_recs, tokenizer, args.max_length))
    packed, stats = pack_dataset(train_ds, args.max_length, args.seed)
    steps_a = math.ceil(len(train_ds) / args.batch_size)
    rows_per_step = max(1, round(stats.packed / steps_a))

    baselines = ["A"] + (["A-bf16"] if args.baseline_bf16 else [])
    names = [*variants, *baselines]
    baton, results, errors = Baton(names), {}, []
    turns = {n: Turns(n, baton, threading.Event()) for n in names}

    def in_thread(name, fn):
        def go():
            torch.set_num_threads(args.threads)  # OpenMP thread counts are per thread
            try:
                results[name] = fn()
            except BaseException as e:  # surfaced by the main thread
                errors.append(e)
                turns[name].ready.set()
            finally:
                baton.done(name)
        t = threading.Thread(target=go, name=name)
        t.start()
        return t

    # The tailor runs: the recipe path with packing, each variant's overrides on top.
    from tailor.training import train as run

    threads = []
    for name, overrides in variants.items():
        recipe = load_recipe(None, [
            f"model.path={tmp / 'base'}", f"data.train=[{tmp / 'train.jsonl'}]", f"data.eval=[{tmp / 'eval.jsonl'}]",
            f"train.output_dir={tmp / name}", "train.objective=sft", "adapter.method=lora", "adapter.r=16",
            "adapter.alpha=32", "data.packing=true", f"data.max_length={args.max_length}",
            f"train.batch_size={rows_per_step}", "train.epochs=1", f"train.lr={args.lr}", "train.save_steps=100000",
            "train.logging_steps=10", f"train.seed={args.seed}", *overrides])
        threads.append(in_thread(name, lambda recipe=recipe, name=name: run(recipe, callbacks=[turns[name]])))
        turns[name].ready.wait()

    # The plain recipe, set up while the tailor runs wait at their first step (same seed and order of set-up as run()).
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from tailor.models.loading import load_model

    pad = dict(padding="max_length", max_length=args.max_length) if args.baseline_padding == "max_length" else dict(padding="longest")
    plain_models = {}
    for name in baselines:
        set_seed(args.seed)
        base = load_model(tmp / "base", device="cpu", for_training=True)
        plain_models[name] = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                             bias="none", task_type="CAUSAL_LM"))
        trainer = Trainer(
            model=plain_models[name], train_dataset=train_ds,
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, **pad),
            args=TrainingArguments(output_dir=str(tmp / name), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
                                   learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.0,
                                   max_grad_norm=1.0, logging_steps=10, save_strategy="no", report_to="none", seed=args.seed,
                                   data_seed=args.seed, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
                                   bf16=name == "A-bf16"),
            callbacks=[turns[name]])
        threads.append(in_thread(name, trainer.train))
        turns[name].ready.wait()
    baton.give(names[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]

    from tailor.adapters.merge import load_with_adapter

    n_loss = loss_tokens(train_ds)
    assert n_loss == stats.loss_tokens, "every run must train on the same loss-bearing tokens"
    rows = {}
    for name in names:
        model = plain_models[name] if name in plain_models else load_with_adapter(results[name].final_dir)[0]
        rows[name] = {"steps": turns[name].steps, "seconds": turns[name].seconds, "tok_s": n_loss / turns[name].seconds,
                      "eval": held_out_loss(model, eval_rows, tokenizer.pad_token_id, args.batch_size),
                      "precision": results[name].metrics.get("precision", "") if name in variants else
                      ("bf16" if name == "A-bf16" else "fp32")}
    ref = names[0]
    ratio = rows[ref]["tok_s"] / rows["A"]["tok_s"]
    speedup = rows[names[len(variants) - 1]]["tok_s"] / rows[ref]["tok_s"]
    loss_ok = rows[ref]["eval"] <= rows["A"]["eval"] * (1 + args.loss_tolerance) and all(
        rows[n]["eval"] <= rows[ref]["eval"] * (1 + args.loss_tolerance) for n in variants)
    load_after = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {cpu_description()} | cpu_count={os.cpu_count()} | torch {torch.__version__} threads={args.threads} | "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"data: {source}: {len(train_ds)} training samples ({n_loss} loss-bearing tokens, {stats.tokens} tokens), "
          f"{len(eval_rows)} held out; max_length {args.max_length}; model {model_name} (vocab {len(tokenizer)}) + LoRA r16 all-linear")
    print(f"A: Trainer + peft, DataCollatorForSeq2Seq padding={args.baseline_padding}, {args.batch_size} samples/step, "
          f"random order{'; A-bf16: the same with bf16=True' if args.baseline_bf16 else ''}")
    print(f"tailor runs: run(), data.packing=true: {stats.samples} samples -> {stats.packed} rows (fill {stats.fill_ratio:.1%}), "
          f"{rows_per_step} rows/step; " + "; ".join(f"{n}: {' '.join(o) or 'defaults'}" for n, o in variants.items()))
    print(f"{'run':10} {'precision':9} {'steps':>5} {'seconds':>8} {'loss tok/s':>11} {'vs A':>6} {'vs ' + ref:>8} {'held-out loss':>14}")
    for name, r in rows.items():
        print(f"{name:10} {r['precision']:9} {r['steps']:5d} {r['seconds']:8.1f} {r['tok_s']:11.0f} "
              f"{r['tok_s'] / rows['A']['tok_s']:5.2f}x {r['tok_s'] / rows[ref]['tok_s']:7.2f}x {r['eval']:14.5f}")
    print(f"ratio {ref}/A loss-bearing tokens/s: {ratio:.2f}x (target >= {args.min_ratio}x: "
          f"{'met' if ratio >= args.min_ratio else 'NOT met'}); {names[len(variants) - 1]}/{ref}: {speedup:.2f}x (target >= "
          f"{args.min_speedup}x: {'met' if speedup >= args.min_speedup else 'NOT met'}); held-out losses within "
          f"{args.loss_tolerance:.0%}: {'met' if loss_ok else 'NOT met'}; total wall {time.perf_counter() - started:.0f} s")
    return 0 if ratio >= args.min_ratio and speedup >= args.min_speedup and loss_ok else 1


def cpu_description() -> str:
    """CPU model name and its bf16/AMX/AVX flags (what decides the precision), from /proc/cpuinfo."""
    from tailor.models.loading import cpu_flags

    try:
        name = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    flags = sorted(f for f in cpu_flags() if f.startswith(("amx", "avx512_bf16", "avx512f", "avx2")))
    return f"{name} [{' '.join(flags) or 'no avx2/avx512/amx flags'}]"


if __name__ == "__main__":
    sys.exit(main())
