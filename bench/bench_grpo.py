"""GRPO after SFT on a computed answer about the quickstart store's facts, against SFT's own plateau.

    .venv/bin/python bench/bench_grpo.py --model SFT_MODEL_DIR --data QS_DATA_DIR [--seeds 0,1,2] \
        [--sft-steps 300] [--control-steps 300] [--grpo-steps 300] [--grpo-prompts labelled|fresh] \
        [--num-generations 8] [--prompts-per-step 8] [--grpo-lr 1e-4] [--beta 0] [--out runs/bench_grpo]

The task: "I bought my laptop 23 days ago. Can I still return it?" The answer is yes or no, computed from the
product's return window (a store fact the quickstart model was trained on) and the number of days. Products with
a window of at most --max-window days; a question is a cell (product, day count) asked in one of 3 wordings, day
counts 1 to min(2 x window + 2, 99). The cells are split once (seed 0) into three disjoint sets: labelled (40%;
every cell in all 3 wordings, answered "Yes." / "No."), fresh (30%; questions without an answer in the data, only
the reward knows it) and held out (30%; balanced yes/no, at most --held-questions, asked in the 3 wordings).
Per seed:
  1. task SFT: full fine-tuning of the quickstart model on the labelled questions (--sft-steps of 16, --lr);
  2. control: SFT continued from the task SFT model for --control-steps more steps on the GRPO prompts with
     their reference answers. With --grpo-prompts labelled (the default) these are the task SFT's own
     questions, so the control is the plateau check (does more SFT raise held-out accuracy?); with fresh it is
     SFT on the same extra prompts that GRPO sees, answered by the same facts the reward reads;
  3. GRPO from the task SFT model on the --grpo-prompts questions: --num-generations sampled answers of at most
     4 tokens per question, --prompts-per-step questions per step, reward bench/yes_no_reward.py (a user reward
     file: 1 when the answer's first yes/no word is right), KL weight --beta;
  4. all three scored greedily on the held-out questions (right = the first yes/no word is right).
Prints per seed the held-out accuracy of each model, the paired difference GRPO - task SFT and GRPO - control
with its 95% bootstrap interval over questions, the reward curve (mean of each 10 steps) and s/GRPO step; then
the mean over seeds with a 95% t-interval, the machine and the load; writes results.json into --out.
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

from bench_preference import t_interval  # noqa: E402
from machine_line import machine  # noqa: E402

WORDINGS = ["I bought my {e} {n} days ago. Can I still return it?",
            "My {e} arrived {n} days ago. Is it still returnable?",
            "It has been {n} days since my {e} was delivered. Can I send it back?"]
REWARD_FILE = Path(__file__).resolve().parent / "yes_no_reward.py"


def return_windows(data_dir: str) -> dict[str, int]:
    """Each product's return window in days, from the quickstart data's facts.jsonl (English rows)."""
    facts = [json.loads(x) for x in (Path(data_dir) / "facts.jsonl").read_text().splitlines() if x.strip()]
    return {f["entity"]: int(f["answer"].split()[0]) for f in facts if f["topic"] == "return_window" and f["lang"] == "en"}


def first_yes_no(text: str) -> str | None:
    m = re.search(r"\b(yes|no)\b", text.lower())
    return m.group(1) if m else None


def question(entity: str, days: int, window: int, wording: str) -> dict:
    return {"prompt": wording.format(e=entity.replace("_", " "), n=days), "answer": "yes" if days <= window else "no",
            "entity": entity, "days": days}


def split_task(windows: dict[str, int], held_questions: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Labelled, fresh and held-out questions over disjoint (product, day count) cells (fixed split, seed 0)."""
    rng = random.Random(0)
    cells = [(e, n) for e, w in sorted(windows.items()) for n in range(1, min(2 * w + 2, 99) + 1)]
    rng.shuffle(cells)
    a, b = int(0.4 * len(cells)), int(0.7 * len(cells))
    labelled = [question(e, n, windows[e], wd) for e, n in cells[:a] for wd in WORDINGS]
    fresh = [question(e, n, windows[e], wd) for e, n in cells[a:b] for wd in WORDINGS]
    held = [question(e, n, windows[e], rng.choice(WORDINGS)) for e, n in cells[b:]]
    yes, no = [r for r in held if r["answer"] == "yes"], [r for r in held if r["answer"] == "no"]
    k = min(len(yes), len(no), held_questions // 2)
    return labelled, fresh, yes[:k] + no[:k]


def accuracy(model, tokenizer, rows: list[dict]) -> list[int]:
    from tailor.models.generation import generate

    answers = generate(model, tokenizer, [[{"role": "user", "content": r["prompt"]}] for r in rows], 8)
    return [int(first_yes_no(a) == r["answer"]) for a, r in zip(answers, rows)]


def paired_ci(before: list[int], after: list[int], seed: int, n: int = 2000) -> tuple[float, float, float]:
    rng = random.Random(seed)
    d = [b - a for a, b in zip(before, after)]
    means = sorted(sum(d[rng.randrange(len(d))] for _ in d) / len(d) for _ in range(n))
    return sum(d) / len(d), means[int(0.025 * n)], means[int(0.975 * n)]


def sft_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                                     {"role": "assistant", "content": r["answer"].capitalize() + "."}]})
                            + "\n" for r in rows))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--held-questions", type=int, default=120)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--control-steps", type=int, default=300)
    ap.add_argument("--grpo-steps", type=int, default=300)
    ap.add_argument("--grpo-prompts", choices=["labelled", "fresh"], default="labelled")
    ap.add_argument("--lr", type=float, default=5e-4, help="task SFT (and control) learning rate, full fine-tuning")
    ap.add_argument("--grpo-lr", type=float, default=1e-4)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=0.0, help="grpo.beta (KL to the task SFT model)")
    ap.add_argument("--max-window", type=int, default=90,
                    help="products whose return window is at most this many days (day counts stay 1-2 digit tokens)")
    ap.add_argument("--out", default="runs/bench_grpo")
    a = ap.parse_args()

    import torch

    from tailor.adapters.loading import load_any
    from tailor.config import Recipe
    from tailor.models.loading import load_model, load_tokenizer
    from tailor.training import train

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    windows = {e: w for e, w in return_windows(a.data).items() if w <= a.max_window}
    labelled, fresh, held = split_task(windows, a.held_questions)
    grpo_rows = labelled if a.grpo_prompts == "labelled" else fresh
    sft_data = sft_file(out / "task_sft.jsonl", labelled)
    control_data = sft_file(out / "control_sft.jsonl", grpo_rows)
    grpo_data = out / "task_grpo.jsonl"
    grpo_data.write_text("".join(json.dumps(r) + "\n" for r in grpo_rows))
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"return windows: {windows}; {len(labelled)} labelled questions, {len(fresh)} fresh, {len(held)} held out "
          f"({sum(r['answer'] == 'yes' for r in held)} yes); GRPO prompts: {a.grpo_prompts}")
    base, tok = load_model(a.model), load_tokenizer(a.model)
    quick = accuracy(base, tok, held)
    print(f"quickstart model, untouched: held-out accuracy {sum(quick) / len(quick):.3f}")
    del base

    def sft(start: str, data: Path, steps: int, name: str, seed: int):
        return train(Recipe.model_validate({
            "model": {"path": start}, "adapter": {"method": "full"},
            "data": {"train": [str(data)], "max_length": 96, "val_ratio": 0.0},
            "train": {"objective": "sft", "output_dir": str(out / name), "max_steps": steps, "batch_size": 16,
                      "lr": a.lr, "logging_steps": 20, "save_steps": 10_000, "seed": seed, "precision": "fp32"}}))

    def score(path) -> list[int]:
        model, tokenizer = load_any(str(path))
        return accuracy(model, tokenizer, held)

    seeds, results = list(map(int, a.seeds.split(","))), []
    for seed in seeds:
        t0 = time.perf_counter()
        sft_dir = sft(a.model, sft_data, a.sft_steps, f"sft-s{seed}", seed).final_dir
        sft_seconds = time.perf_counter() - t0
        control_dir = sft(str(sft_dir), control_data, a.control_steps, f"control-s{seed}", seed).final_dir
        t0 = time.perf_counter()
        grpo_run = train(Recipe.model_validate({
            "model": {"path": str(sft_dir)}, "adapter": {"method": "full"},
            "data": {"train": [str(grpo_data)], "max_length": 96, "val_ratio": 0.0},
            "train": {"objective": "grpo", "output_dir": str(out / f"grpo-s{seed}"), "max_steps": a.grpo_steps,
                      "batch_size": a.num_generations * a.prompts_per_step, "lr": a.grpo_lr, "logging_steps": 1,
                      "save_steps": 10_000, "seed": seed, "precision": "fp32"},
            "grpo": {"num_generations": a.num_generations, "max_completion_length": 4, "beta": a.beta,
                     "temperature": a.temperature, "rewards": [{"file": str(REWARD_FILE)}]}}))
        grpo_seconds = time.perf_counter() - t0
        before, control, after = score(sft_dir), score(control_dir), score(grpo_run.final_dir)
        diff, lo, hi = paired_ci(before, after, seed)
        cdiff, clo, chi = paired_ci(control, after, seed)
        metrics = [json.loads(x) for x in (out / f"grpo-s{seed}" / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rewards = [m["reward"] for m in metrics if "reward" in m]
        curve = [round(sum(rewards[i:i + 10]) / len(rewards[i:i + 10]), 3) for i in range(0, len(rewards), 10)]
        row = {"seed": seed, "sft_accuracy": sum(before) / len(before), "control_accuracy": sum(control) / len(control),
               "grpo_accuracy": sum(after) / len(after), "difference": diff, "difference_ci": [lo, hi],
               "difference_vs_control": cdiff, "difference_vs_control_ci": [clo, chi], "reward_curve_per_10": curve,
               "sft_seconds": round(sft_seconds, 1), "grpo_seconds": round(grpo_seconds, 1),
               "grpo_seconds_per_step": round(grpo_run.metrics["seconds"] / max(grpo_run.metrics["steps"], 1), 3)}
        results.append(row)
        print(f"seed {seed}: task SFT {row['sft_accuracy']:.3f}, control (+{a.control_steps} SFT steps on the GRPO "
              f"prompts) {row['control_accuracy']:.3f}, GRPO {row['grpo_accuracy']:.3f}; GRPO - task SFT "
              f"{100 * diff:+.1f} points (95% CI {100 * lo:+.1f}..{100 * hi:+.1f}), GRPO - control {100 * cdiff:+.1f} "
              f"({100 * clo:+.1f}..{100 * chi:+.1f}); {row['grpo_seconds_per_step']} s/GRPO step; "
              f"reward per 10 steps {curve}", flush=True)
        (out / "results.json").write_text(json.dumps({"untouched": sum(quick) / len(quick), "runs": results,
                                                      "args": vars(a)}, indent=1))
    for key in ("difference", "difference_vs_control"):
        m, h = t_interval([r[key] for r in results])
        print(f"seeds {seeds}: {key} {100 * m:+.1f} points (95% t-interval ±{100 * h:.1f})")
    print("mean accuracy: " + ", ".join(f"{k} {t_interval([r[k] for r in results])[0]:.3f}"
                                        for k in ("sft_accuracy", "control_accuracy", "grpo_accuracy")))
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
