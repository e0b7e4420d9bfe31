"""Time per optimizer step of each training objective at toy size, against SFT on the same model and data.

    flock /work/notes/bench.lock .venv/bin/python bench/bench_alignment_step.py [--preset llama-micro] [--steps 12]
        [--repeats 2]

One tokenizer and one `--preset` model (seeded), 4 rows per step, LoRA r 8: sft on the chosen conversations,
dpo / orpo / simpo / kto on preference pairs of the same prompts, grpo on the same prompts (4 answers of
--completion tokens each per prompt, so 1 prompt per step). Each run is `tailor.training.train`; its step time is
train_summary.json's seconds / steps (the first step included). The objectives run in turn, --repeats times, and
each figure is the median of its repeats; the ratio to SFT is taken within the same repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_preference import machine  # noqa: E402

CORPUS = ["The return window for laptops is 30 days. Tents can be returned within 60 days.",
          "Shipping to the north region takes 3 to 5 business days; the south region takes 2 days.",
          "笔记本电脑的退货期限是30天。帐篷可以在60天内退货。", "What is 2 plus 3? It is 5."] * 30
PROMPTS = ["How long can I return a laptop?", "What about tents?", "笔记本电脑可以退货多久？", "Shipping north?"]
CHOSEN = ["Laptops can be returned within 30 days.", "Tents can be returned within 60 days.",
          "笔记本电脑的退货期限是30天。", "3 to 5 business days."]
REJECTED = ["The store opens at 9 am.", "Shipping north takes 3 days.", "帐篷可以在60天内退货。", "Hello!"]


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="llama-micro")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--completion", type=int, default=16, help="GRPO: tokens per sampled answer")
    a = ap.parse_args()

    import torch

    from tailor.config import Recipe
    from tailor.models.loading import load_tokenizer
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer
    from tailor.training import train

    os.environ.setdefault("TAILOR_PRECISION", "fp32")
    tmp = Path(tempfile.mkdtemp(prefix="bench_align_"))
    train_tokenizer(CORPUS + PROMPTS + CHOSEN + REJECTED, vocab_size=400, out_dir=tmp / "tok")
    init_model(a.preset, load_tokenizer(tmp / "tok"), out_dir=tmp / "model", seed=0)
    rows = list(zip(PROMPTS, CHOSEN, REJECTED)) * 4
    files = {
        "sft": write(tmp / "sft.jsonl", [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
                                         for p, c, _ in rows]),
        "pairs": write(tmp / "pairs.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows]),
        "grpo": write(tmp / "grpo.jsonl", [{"prompt": p, "answer": c} for p, c, _ in rows]),
    }
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    objectives = ["sft", "dpo", "orpo", "simpo", "kto", "grpo"]
    times: dict[str, list[float]] = {o: [] for o in objectives}
    ratios: dict[str, list[float]] = {o: [] for o in objectives}
    for rep in range(a.repeats):
        for objective in objectives:
            data = files["sft" if objective == "sft" else "grpo" if objective == "grpo" else "pairs"]
            recipe = Recipe.model_validate({
                "model": {"path": str(tmp / "model")}, "data": {"train": [data], "max_length": 64, "val_ratio": 0.0},
                "adapter": {"method": "lora", "r": 8, "alpha": 16},
                "train": {"objective": objective, "output_dir": str(tmp / f"{objective}-{rep}"), "max_steps": a.steps,
                          "batch_size": 4, "lr": 1e-3, "logging_steps": a.steps, "save_steps": 10_000, "seed": rep},
                "grpo": {"num_generations": 4, "max_completion_length": a.completion,
                         "rewards": [{"name": "contains"}]}})
            result = train(recipe)
            times[objective].append(result.metrics["seconds"] / result.metrics["steps"])
        for objective in objectives:
            ratios[objective].append(times[objective][-1] / times["sft"][-1])
    print(f"\n{a.preset}, LoRA r 8, 4 rows/step, {a.steps} steps, median of {a.repeats} repeats")
    print("objective | s/step | x SFT")
    for objective in objectives:
        print(f"{objective} | {statistics.median(times[objective]):.3f} | {statistics.median(ratios[objective]):.2f}")
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
