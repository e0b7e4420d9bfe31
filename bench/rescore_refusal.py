"""Score models that bench_preference.py trained on the second and third held-out test sets of off-domain questions.

    .venv/bin/python bench/rescore_refusal.py --before SFT_MODEL_DIR --runs RUN_DIR [RUN_DIR ...] \
        [--label NAME=RUN_DIR ...] [--max-new-tokens 32] [--out rescore.json]

bench_preference.py's refusal settings (anchor count, the anchors' rejected answer) were chosen on its 34 held-out
off-domain questions, so its table for the chosen setting is optimistic by the choice. TEST2 in
bench/offdomain_questions.py was written after that choice and before any model answered it; this script answers
it with every final model under each RUN_DIR (RUN_DIR/s{seed}/{stage}/final, a bench_preference --out folder) and
with the model before preference training (--before), greedily, as bench_preference scores (a refusal = the answer
contains the refusal's key phrase). It also re-scores the first held-out set, as a check that the models load and
answer as they did when trained. TEST3 was written after TEST2's misses had chosen more store-word training
questions (--train-set broad-more-store-words) and before any model trained on them or answered it: TEST2 is the
validation set of that choice and TEST3 its test. Prints per stage and seed the refusal rates, the mean over seeds
with a 95% t-interval, EN / ZH, TEST3's store-word / other split, and the questions that were not refused; writes
--out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_preference import HELD_EN, HELD_ZH, questions, refused, t_interval  # noqa: E402
from machine_line import machine  # noqa: E402
from offdomain_questions import test2_questions, test3_questions  # noqa: E402


def answer(path: str, rows: list[dict], max_new_tokens: int) -> list[str]:
    from tailor.adapters.loading import load_any
    from tailor.models.generation import generate

    model, tokenizer = load_any(path)
    return generate(model, tokenizer, [[{"role": "user", "content": q["q"]}] for q in rows], max_new_tokens)


def rates(answers: list[str], rows: list[dict]) -> dict:
    out = {"all": sum(map(refused, answers)) / len(rows)}
    for lang in ("en", "zh"):
        got = [refused(a) for a, q in zip(answers, rows) if q["lang"] == lang]
        out[lang] = sum(got) / len(got)
    if "store_word" in rows[0]:
        for key, flag in (("store_word", True), ("no_store_word", False)):
            got = [refused(a) for a, q in zip(answers, rows) if q["store_word"] == flag]
            out[key] = sum(got) / len(got)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the model before preference training (0%% refusals expected)")
    ap.add_argument("--runs", nargs="*", default=[], help="bench_preference --out folders")
    ap.add_argument("--label", nargs="*", default=[], help="NAME=RUN_DIR: report RUN_DIR's stages as 'NAME: stage' (runs under one NAME pool their seeds)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", default="runs/rescore_refusal.json")
    a = ap.parse_args()

    import torch

    test2, held = test2_questions(), questions(HELD_EN, "en") + questions(HELD_ZH, "zh")
    test3 = test3_questions()
    runs = [(None, Path(r)) for r in a.runs] + [(x.split("=", 1)[0], Path(x.split("=", 1)[1])) for x in a.label]
    finals = []
    for label, run in runs:
        found = sorted(run.glob("s*/*/final"))
        if not found:
            sys.exit(f"rescore_refusal: no s<seed>/<stage>/final model under {run} (a bench_preference --out folder)")
        finals += [(f"{label}: {f.parent.name}" if label else f.parent.name, int(f.parent.parent.name[1:]), f) for f in found]
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"TEST2: {len(test2)} questions ({sum(q['lang'] == 'en' for q in test2)} EN); TEST3: {len(test3)} "
          f"({sum(q['store_word'] for q in test3)} name a store word); first held-out set: {len(held)}")
    before = answer(a.before, test2 + test3, a.max_new_tokens)
    report = {"before": rates(before[:len(test2)], test2), "before_test3": rates(before[len(test2):], test3),
              "models": []}
    print(f"before preference training: TEST2 refusals {100 * report['before']['all']:.1f}%, TEST3 "
          f"{100 * report['before_test3']['all']:.1f}%; e.g. {test3[0]['q']!r} -> {before[len(test2)]!r}")
    for stage, seed, path in finals:
        got = answer(str(path), test2 + test3 + held, a.max_new_tokens)
        t2, t3, h = got[:len(test2)], got[len(test2):len(test2) + len(test3)], got[len(test2) + len(test3):]
        row = {"stage": stage, "seed": seed, "path": str(path), "test2": rates(t2, test2), "test3": rates(t3, test3),
               "held": rates(h, held),
               "test2_misses": [{"q": q["q"], "a": x} for q, x in zip(test2, t2) if not refused(x)],
               "test3_misses": [{"q": q["q"], "a": x} for q, x in zip(test3, t3) if not refused(x)]}
        report["models"].append(row)
        print(f"{stage} seed {seed}: TEST2 {100 * row['test2']['all']:.1f}% (EN {100 * row['test2']['en']:.1f}, ZH "
              f"{100 * row['test2']['zh']:.1f}); TEST3 {100 * row['test3']['all']:.1f}% (store words "
              f"{100 * row['test3']['store_word']:.1f}, none {100 * row['test3']['no_store_word']:.1f}); first held-out "
              f"set {100 * row['held']['all']:.1f}%", flush=True)
    for name in ("test2", "test3"):
        print(f"\n{name.upper()}: stage | seeds | refusal per seed | mean (95% t) | EN / ZH | first held-out set mean"
              + (" | store-word / other questions" if name == "test3" else ""))
        for stage in dict.fromkeys(r["stage"] for r in report["models"]):
            rs = sorted((r for r in report["models"] if r["stage"] == stage), key=lambda r: r["seed"])
            m, h = t_interval([r[name]["all"] for r in rs])

            def mean(key: str) -> float:
                return 100 * sum(r[name][key] for r in rs) / len(rs)

            hm = sum(r["held"]["all"] for r in rs) / len(rs)
            per_seed = ", ".join(f"{100 * r[name]['all']:.1f}" for r in rs)
            print(f"{stage} | {','.join(str(r['seed']) for r in rs)} | {per_seed} | {100 * m:.1f}% ±{100 * h:.1f} | "
                  f"{mean('en'):.1f} / {mean('zh'):.1f} | {100 * hm:.1f}%"
                  + (f" | {mean('store_word'):.1f} / {mean('no_store_word'):.1f}" if name == "test3" else ""))
            misses: dict[str, int] = {}
            for r in rs:
                for x in r[f"{name}_misses"]:
                    misses[x["q"]] = misses.get(x["q"], 0) + 1
            print("   not refused (times): " + "; ".join(f"{q} ({n})" for q, n in sorted(misses.items(), key=lambda kv: -kv[1])))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
