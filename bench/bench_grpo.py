"""GRPO teaches what SFT did not: a computed answer on the quickstart store's facts.

    flock /work/notes/bench.lock .venv/bin/python bench/bench_grpo.py --model SFT_MODEL_DIR --data QS_DATA_DIR \
        [--seeds 0,1,2] [--sft-steps 60] [--grpo-steps 40] [--adapter full|lora] [--num-generations 8] \
        [--prompts-per-step 4] [--temperature 1.0] [--beta 0.04] [--out runs/bench_grpo]

The task: "I bought a laptop 23 days ago. Can I still return it?" The answer is yes or no, computed from the
product's return window (a fact the quickstart model was trained on) and the number of days: recall, then compare.
Products with a window of at most --max-window days (so day counts stay below 100). Questions are balanced yes/no;
training and held-out questions use different wordings and different day counts (odd in training, even held out).
Per seed:
  1. task SFT: SFT of the quickstart SFT model on the training questions answered "Yes." / "No." (--adapter;
     a LoRA adapter is merged);
  2. GRPO from that model: --num-generations sampled answers per question, --prompts-per-step questions per
     step, the reward is bench/yes_no_reward.py (a user reward file: 1 when the answer's first yes/no word is
     right), KL weight --beta;
  3. both scored on the same held-out questions (greedy; right = the first yes/no word is right).
Prints per seed the accuracy before and after with the paired difference and its 95% bootstrap interval over
questions, the mean over seeds with a 95% t-interval, the reward curve (reward per logged step), the machine
and the load; writes results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_preference import machine, t_interval  # noqa: E402

TRAIN_WORDINGS = ["I bought a {e} {n} days ago. Can I still return it?",
                  "My {e} arrived {n} days ago. Is it still returnable?",
                  "It has been {n} days since my {e} was delivered. Can I send it back?"]
HELD_WORDINGS = ["Can I return a {e} that I received {n} days ago?",
                 "{n} days after delivery, may I still bring back my {e}?"]
REWARD_FILE = Path(__file__).resolve().parent / "yes_no_reward.py"


def first_yes_no(text: str) -> str | None:
    m = re.search(r"\b(yes|no)\b", text.lower())
    return m.group(1) if m else None


def task(windows: dict[str, int], wordings: list[str], parity: int, count: int, rng: random.Random,
         max_days: int = 99) -> list[dict]:
    """Balanced yes/no questions; day counts of the given parity (-1: any) up to max_days."""
    rows = []
    while len(rows) < count:
        entity, window = rng.choice(sorted(windows.items()))
        want_yes = len(rows) % 2 == 0  # balanced
        lo, hi = (1, window) if want_yes else (window + 1, min(2 * window + 2, max_days))
        days = [n for n in range(lo, hi + 1) if parity < 0 or n % 2 == parity]
        if not days:
            continue
        n = rng.choice(days)
        q = rng.choice(wordings).format(e=entity.replace("_", " "), n=n)
        rows.append({"prompt": q, "answer": "yes" if n <= window else "no", "entity": entity, "days": n})
    return rows


def accuracy(model, tokenizer, rows: list[dict]) -> list[int]:
    from tailor.models.generation import generate

    answers = generate(model, tokenizer, [[{"role": "user", "content": r["prompt"]}] for r in rows], 8)
    return [int(first_yes_no(a) == r["answer"]) for a, r in zip(answers, rows)]


def paired_ci(before: list[int], after: list[int], seed: int, n: int = 2000) -> tuple[float, float, float]:
    rng = random.Random(seed)
    d = [b - a for a, b in zip(before, after)]
    means = sorted(sum(d[rng.randrange(len(d))] for _ in d) / len(d) for _ in range(n))
    return sum(d) / len(d), means[int(0.025 * n)], means[int(0.975 * n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train-questions", type=int, default=400)
    ap.add_argument("--held-questions", type=int, default=120)
    ap.add_argument("--sft-steps", type=int, default=60)
    ap.add_argument("--grpo-steps", type=int, default=40)
    ap.add_argument("--adapter", default="full", help="adapter.method of both stages (full, or lora: r 16, alpha 32)")
    ap.add_argument("--lr", type=float, default=5e-4, help="task SFT learning rate")
    ap.add_argument("--grpo-lr", type=float, default=1e-4)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=0.04, help="grpo.beta (KL to the task SFT model)")
    ap.add_argument("--max-window", type=int, default=60,
                    help="products whose return window is at most this many days (day counts stay 2-digit tokens)")
    ap.add_argument("--out", default="runs/bench_grpo")
    a = ap.parse_args()

    import torch

    from tailor.adapters.merge import merge
    from tailor.config import Recipe
    from tailor.models.loading import load_model, load_tokenizer
    from tailor.training import train

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    facts = [json.loads(x) for x in (Path(a.data) / "facts.jsonl").read_text().splitlines() if x.strip()]
    windows = {f["entity"]: int(f["answer"].split()[0]) for f in facts if f["topic"] == "return_window" and f["lang"] == "en"}
    windows = {e: w for e, w in windows.items() if w <= a.max_window}
    rng = random.Random(0)
    train_q = task(windows, TRAIN_WORDINGS, 1, a.train_questions, rng)
    held_q = task(windows, HELD_WORDINGS, 0, a.held_questions, rng)
    files = {
        "sft": out / "task_sft.jsonl", "grpo": out / "task_grpo.jsonl"}
    files["sft"].write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                                             {"role": "assistant", "content": r["answer"].capitalize() + "."}]})
                                    + "\n" for r in train_q))
    files["grpo"].write_text("".join(json.dumps(r) + "\n" for r in train_q))
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"return windows: {windows}; {len(train_q)} training questions, {len(held_q)} held out")
    base = load_model(a.model)
    tok = load_tokenizer(a.model)
    quick = accuracy(base, tok, held_q)
    print(f"quickstart SFT model, untouched: held-out accuracy {sum(quick) / len(quick):.3f}")
    del base

    seeds, results = list(map(int, a.seeds.split(","))), []
    for seed in seeds:
        adapter = {"method": "lora", "r": 16, "alpha": 32} if a.adapter == "lora" else {"method": a.adapter}
        common = {"data": {"max_length": 96, "val_ratio": 0.0}, "adapter": adapter}
        t0 = time.perf_counter()
        sft_run = train(Recipe.model_validate({
            **common, "model": {"path": a.model}, "data": {**common["data"], "train": [str(files["sft"])]},
            "train": {"objective": "sft", "output_dir": str(out / f"sft-s{seed}"), "max_steps": a.sft_steps,
                      "batch_size": 16, "lr": a.lr, "logging_steps": 10, "save_steps": 10_000, "seed": seed, "precision": "fp32"}}))
        sft_dir = merge(sft_run.final_dir, out / f"sft-s{seed}" / "merged") if a.adapter == "lora" else sft_run.final_dir
        sft_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        grpo_run = train(Recipe.model_validate({
            **common, "model": {"path": str(sft_dir)}, "data": {**common["data"], "train": [str(files["grpo"])]},
            "train": {"objective": "grpo", "output_dir": str(out / f"grpo-s{seed}"), "max_steps": a.grpo_steps,
                      "batch_size": a.num_generations * a.prompts_per_step, "lr": a.grpo_lr, "logging_steps": 1,
                      "save_steps": 10_000, "seed": seed, "precision": "fp32"},
            "grpo": {"num_generations": a.num_generations, "max_completion_length": 4, "beta": a.beta,
                     "temperature": a.temperature,
                     "rewards": [{"file": str(REWARD_FILE)}]}}))
        grpo_seconds = time.perf_counter() - t0
        from tailor.adapters.loading import load_any

        sft_model, sft_tok = load_model(sft_dir), load_tokenizer(sft_dir)
        before = accuracy(sft_model, sft_tok, held_q)
        del sft_model
        grpo_model, grpo_tok = load_any(str(grpo_run.final_dir))
        after = accuracy(grpo_model, grpo_tok, held_q)
        diff, lo, hi = paired_ci(before, after, seed)
        metrics = [json.loads(x) for x in (out / f"grpo-s{seed}" / "metrics.jsonl").read_text().splitlines() if x.strip()]
        curve = [round(m["reward"], 3) for m in metrics if "reward" in m]
        row = {"seed": seed, "sft_accuracy": sum(before) / len(before), "grpo_accuracy": sum(after) / len(after),
               "difference": diff, "difference_ci": [lo, hi], "reward_curve": curve,
               "sft_seconds": round(sft_seconds, 1), "grpo_seconds": round(grpo_seconds, 1),
               "grpo_seconds_per_step": round(grpo_run.metrics["seconds"] / max(grpo_run.metrics["steps"], 1), 3)}
        results.append(row)
        print(f"seed {seed}: task SFT {row['sft_accuracy']:.3f} -> GRPO {row['grpo_accuracy']:.3f} "
              f"({100 * diff:+.1f} points, 95% CI {100 * lo:+.1f}..{100 * hi:+.1f}); "
              f"{row['grpo_seconds_per_step']} s/GRPO step; reward curve {curve}")
        (out / "results.json").write_text(json.dumps({"untouched": sum(quick) / len(quick), "runs": results,
                                                      "args": vars(a)}, indent=1))
    m, h = t_interval([r["difference"] for r in results])
    print(f"\nseeds {seeds}: GRPO - task SFT = {100 * m:+.1f} points (95% t-interval ±{100 * h:.1f}); "
          f"task SFT {t_interval([r['sft_accuracy'] for r in results])[0]:.3f}, "
          f"GRPO {t_interval([r['grpo_accuracy'] for r in results])[0]:.3f}")
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
