"""Distillation on the quickstart domain: the same student with and without the teacher, over several seeds.

Arms (each one `tailor distill` run of the same number of optimizer steps, then `tailor eval` on the held-out
questions; "no teacher" = distill.alpha 0 and no prompts, i.e. plain SFT of the same student):

  few_ce        the labeled subset only (--labeled-per-fact chats per fact and language), no teacher
  few_seqkd     + the other training questions WITHOUT their answers as distill.prompts: the teacher answers them
                (sequence-level KD), alpha 0
  few_seqkd_kd  as few_seqkd, plus the logit KD term (alpha --alpha, T --temperature) on every chat
  full_ce       all labeled training chats, no teacher
  full_kd       all labeled chats, logit KD (alpha --alpha, T --temperature)
  pt_full_ce    first pretrained on the domain documents (--pretrain-steps, objective=pretrain), then as full_ce
  pt_full_kd    the same two stages with the logit KD term in both (the teacher was pretrained on those documents too)

The held-out questions (eval.jsonl) are never among the prompts: the bench checks it, and `tailor distill` drops and
counts any that were. Students are dense Llamas built from scratch with the teacher's tokenizer (`tailor model
init`), a new random init per seed; the labeled subset is also drawn per seed.

    python bench/bench_distill.py --teacher runs/quickstart/merged --data-dir runs/quickstart/data \
        --seeds 0,1,2 --device cpu --jobs 2 --out bench_distill.json

Prints one table (arm, seeds, fact accuracy mean ± s.d., answer perplexity, params ratio, teacher-keep %) and the
paired differences (teacher arm minus no-teacher arm, same seed), and writes them as JSON to --out. Finished jobs
are kept in --work and reused when the command runs again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ARMS = ("few_ce", "few_seqkd", "few_seqkd_kd", "full_ce", "full_kd", "pt_full_ce", "pt_full_kd")
PAIRS = (("few_seqkd", "few_ce"), ("few_seqkd_kd", "few_ce"), ("full_kd", "full_ce"), ("pt_full_kd", "pt_full_ce"))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _question(row: dict) -> str:
    return " ".join(next(m["content"] for m in reversed(row["messages"]) if m["role"] == "user").casefold().split())


def make_data(args, seed: int, work: Path) -> dict:
    """Per seed: labeled subset, unlabeled prompt pool (the rest, answers removed), all chats, eval; as files."""
    data = Path(args.data_dir)
    train, evals = read_jsonl(data / "train.jsonl"), read_jsonl(data / "eval.jsonl")
    if args.max_facts:
        facts = list(dict.fromkeys(r["fact_id"] for r in train))[: args.max_facts]
        train = [r for r in train if r["fact_id"] in facts]
        evals = [r for r in evals if r["fact_id"] in facts]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in train:
        groups[(r["fact_id"], r.get("lang"))].append(r)
    rng = random.Random(seed)
    labeled, pool = [], []
    for key in sorted(groups, key=str):
        rows = groups[key][:]
        rng.shuffle(rows)
        labeled += rows[: args.labeled_per_fact]
        pool += [{"messages": [m for m in r["messages"] if m["role"] != "assistant"], "fact_id": r["fact_id"]}
                 for r in rows[args.labeled_per_fact:]]
    overlap = {_question(r) for r in pool} & {_question(r) for r in evals}
    if overlap:
        raise SystemExit(f"{len(overlap)} unlabeled prompts are held-out eval questions, e.g. {sorted(overlap)[0]!r}")
    out = work / f"data_s{seed}"
    files = {"labeled": out / "labeled.jsonl", "pool": out / "pool.jsonl", "all": out / "train.jsonl",
             "eval": out / "eval.jsonl", "documents": data / "documents.jsonl"}
    for name, rows in (("labeled", labeled), ("pool", pool), ("all", train), ("eval", evals)):
        write_jsonl(files[name], rows)
    return {k: str(v) for k, v in files.items()} | {"n_labeled": len(labeled), "n_pool": len(pool), "n_all": len(train),
                                                  "n_eval": len(evals), "pool_eval_overlap": len(overlap)}


def pretrain_overrides(arm: str, args, files: dict, seed: int, student: str, out: Path) -> list[str]:
    """Stage 1 of the pt_* arms: the student on the domain documents (raw text), with or without the teacher."""
    alpha = args.alpha if arm.endswith("_kd") else 0
    return [f"model.path={student}", f"distill.teacher={args.teacher}", "train.objective=pretrain",
            f"data.train=[{files['documents']}]", f"data.max_length={args.max_length}", "data.val_ratio=0.03",
            "adapter.method=full", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
            "train.warmup_ratio=0.05", "train.scheduler=cosine", f"train.max_steps={args.pretrain_steps}",
            "train.logging_steps=50", "train.save_steps=1000000", f"train.seed={seed}", f"train.device={args.device}",
            f"train.precision={args.precision}", "train.mfu_probe_seconds=0", f"train.output_dir={out / 'pretrain'}",
            f"distill.temperature={args.temperature}", f"distill.alpha={alpha}"]


def arm_overrides(arm: str, args, files: dict, seed: int, student: str, out: Path) -> list[str]:
    steps = args.few_steps if arm.startswith("few") else args.full_steps
    if arm.startswith("pt_"):
        student, arm = str(out / "pretrain" / "final"), arm[3:]  # stage 2 starts from stage 1's weights
    common = [f"model.path={student}", f"distill.teacher={args.teacher}", f"data.max_length={args.max_length}",
              "data.val_ratio=0.03", "adapter.method=full", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
              "train.warmup_ratio=0.05", "train.scheduler=cosine", f"train.max_steps={steps}", "train.logging_steps=50",
              "train.save_steps=1000000", f"train.seed={seed}", f"train.device={args.device}",
              f"train.precision={args.precision}", "train.mfu_probe_seconds=0", f"train.output_dir={out / 'run'}",
              f"eval.data=[{files['eval']}]", f"eval.batch_size={args.eval_batch_size}",
              f"distill.temperature={args.temperature}", f"distill.generate_max_new_tokens={args.max_new_tokens}"]
    if arm == "few_ce":
        return [*common, f"data.train=[{files['labeled']}]", "distill.alpha=0"]
    if arm == "few_seqkd":
        return [*common, f"data.train=[{files['labeled']}]", f"distill.prompts=[{files['pool']}]", "distill.alpha=0"]
    if arm == "few_seqkd_kd":
        return [*common, f"data.train=[{files['labeled']}]", f"distill.prompts=[{files['pool']}]", f"distill.alpha={args.alpha}"]
    if arm == "full_ce":
        return [*common, f"data.train=[{files['all']}]", "distill.alpha=0"]
    if arm == "full_kd":
        return [*common, f"data.train=[{files['all']}]", f"distill.alpha={args.alpha}"]
    raise SystemExit(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")


# ---------------------------------------------------------------------------------------------
# One job per process: a student trained and evaluated, or the teacher evaluated


def run_job(spec: dict) -> dict:
    import logging

    import torch

    torch.set_num_threads(spec["threads"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # tailor's progress lines in log.txt
    from tailor.config import EvalConfig, load_recipe
    from tailor.evaluation.run import run as evaluate
    from tailor.models.loading import count_parameters, load_tokenizer

    out = Path(spec["dir"])
    cfg = EvalConfig(max_new_tokens=spec["eval_max_new_tokens"], batch_size=spec["eval_batch_size"])
    if spec["kind"] == "teacher":
        t0 = time.perf_counter()
        res = evaluate(spec["teacher"], [spec["eval"]], cfg, out_dir=out / "eval")
        from tailor.models.loading import load_model

        params = count_parameters(load_model(spec["teacher"], device="cpu"))[1]
        return {"fact_accuracy": res.metrics["fact_accuracy"], "answer_perplexity": res.metrics.get("answer_perplexity"),
                "params": params, "eval_seconds": round(time.perf_counter() - t0, 1)}
    from tailor.models.presets import init_model
    from tailor.training.recipes.distill import distill

    student = out / "student-init"
    if not (student / "config.json").is_file():
        tok = load_tokenizer(spec["teacher"])
        h, inter, layers = spec["student"]
        init_model("llama-tiny", tok, out_dir=student, seed=spec["seed"], hidden_size=h, intermediate_size=inter,
                   num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    t0 = time.perf_counter()
    if spec.get("pretrain_overrides") and not (out / "pretrain" / "final" / "config.json").is_file():
        distill(load_recipe(None, spec["pretrain_overrides"]))
    result = distill(load_recipe(None, spec["overrides"]))
    train_seconds = time.perf_counter() - t0
    final = out / "run" / "final"
    res = evaluate(str(final), [spec["eval"]], cfg, out_dir=out / "eval")
    summary = json.loads((out / "run" / "train_summary.json").read_text())
    return {"fact_accuracy": res.metrics["fact_accuracy"], "answer_perplexity": res.metrics.get("answer_perplexity"),
            "params": summary["total_parameters"], "train_seconds": round(train_seconds, 1), "steps": summary["steps"],
            "train_rows": summary["data_report"]["kept"], "teacher_kl_after": summary.get("teacher_kl_after"),
            "teacher_answers": summary.get("teacher_answers"), "final": str(final), "result_type": type(result).__name__}


def launch(spec: dict) -> dict:
    """Run a job in its own process (one torch thread pool each); reuse its result.json when it exists."""
    out = Path(spec["dir"])
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec, indent=2))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(out / "log.txt", "w") as log:
        rc = subprocess.call([sys.executable, __file__, "--job", str(out / "spec.json")], stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc != 0 or not done.is_file():
        tail = (out / "log.txt").read_text()[-2000:]
        raise SystemExit(f"job {out.name} failed (exit {rc}); end of {out / 'log.txt'}:\n{tail}")
    print(f"  done {out.name} in {time.perf_counter() - t0:.0f}s", flush=True)
    return json.loads(done.read_text())


# ---------------------------------------------------------------------------------------------
# The table


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mcnemar(a_dir: Path, b_dir: Path) -> dict:
    """Exact two-sided McNemar test on the same questions: a right & b wrong (a_only) vs the reverse (b_only)."""
    def correct(d: Path) -> dict:
        rows = read_jsonl(d / "eval" / "examples.jsonl")
        return {(r["prompt"], i): r.get("fact_accuracy", 0.0) >= 1.0 for i, r in enumerate(rows)}

    a, b = correct(a_dir), correct(b_dir)
    a_only = sum(a[k] and not b[k] for k in a)
    b_only = sum(b[k] and not a[k] for k in a)
    n = a_only + b_only
    p = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2 ** n) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": p}


def table(results: dict, teacher: dict, seeds: list[int], arms: list[str]) -> dict:
    rows = []
    for arm in arms:
        accs = [results[(arm, s)]["fact_accuracy"] for s in seeds]
        ppls = [results[(arm, s)]["answer_perplexity"] for s in seeds]
        m, sd = mean_sd(accs)
        first = results[(arm, seeds[0])]
        rows.append({"arm": arm, "seeds": len(seeds), "fact_accuracy_mean": m, "fact_accuracy_sd": sd,
                     "fact_accuracy_per_seed": accs, "answer_ppl_mean": statistics.mean(ppls),
                     "params": first["params"], "params_ratio": first["params"] / teacher["params"],
                     "teacher_keep": m / teacher["fact_accuracy"], "train_rows": first["train_rows"],
                     "steps": first["steps"], "train_seconds_mean": statistics.mean(results[(arm, s)]["train_seconds"] for s in seeds),
                     "teacher_answers": first.get("teacher_answers")})
    pairs = []
    for a, b in PAIRS:
        if a in arms and b in arms:
            diffs = [results[(a, s)]["fact_accuracy"] - results[(b, s)]["fact_accuracy"] for s in seeds]
            m, sd = mean_sd(diffs)
            tests = [mcnemar(Path(results[(a, s)]["final"]).parents[1], Path(results[(b, s)]["final"]).parents[1])
                     for s in seeds]
            pairs.append({"with_teacher": a, "without": b, "diff_mean": m, "diff_sd": sd, "per_seed": diffs,
                          "wins": sum(d > 0 for d in diffs), "seeds": len(seeds), "mcnemar_per_seed": tests})
    return {"rows": rows, "pairs": pairs}


def print_table(report: dict) -> None:
    t = report["teacher"]
    print(f"\nteacher: {t['params']:,} parameters, held-out fact accuracy {100 * t['fact_accuracy']:.1f}%, "
          f"answer ppl {t['answer_perplexity']:.3f}")
    print(f"{'arm':<14}{'seeds':>6}{'rows':>7}{'steps':>7}{'fact acc %':>16}{'ans ppl':>9}{'params':>8}{'keep %':>8}{'train s':>9}")
    for r in report["rows"]:
        acc = f"{100 * r['fact_accuracy_mean']:.1f} ± {100 * r['fact_accuracy_sd']:.1f}"
        print(f"{r['arm']:<14}{r['seeds']:>6}{r['train_rows']:>7}{r['steps']:>7}{acc:>16}{r['answer_ppl_mean']:>9.3f}"
              f"{r['params_ratio']:>7.3f}x{100 * r['teacher_keep']:>7.1f}{r['train_seconds_mean']:>9.0f}")
    for p in report["pairs"]:
        print(f"{p['with_teacher']} - {p['without']}: {100 * p['diff_mean']:+.1f} ± {100 * p['diff_sd']:.1f} points "
              f"(same seed; teacher arm ahead in {p['wins']}/{p['seeds']} seeds; McNemar p per seed "
              f"{', '.join(format(t['p'], '.2g') for t in p['mcnemar_per_seed'])})")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--teacher", default="runs/quickstart/merged")
    ap.add_argument("--data-dir", default="runs/quickstart/data", help="folder with train.jsonl and eval.jsonl (quickstart)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="jobs run in parallel, one process each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument("--work", default="runs/bench_distill")
    ap.add_argument("--out", default="bench_distill.json")
    ap.add_argument("--student", default="128,384,4", help="hidden,intermediate,layers of the Llama student")
    ap.add_argument("--labeled-per-fact", type=int, default=4)
    ap.add_argument("--max-facts", type=int, default=None, help="first N facts only (smoke tests)")
    ap.add_argument("--few-steps", type=int, default=1200, help="optimizer steps of every few_* arm")
    ap.add_argument("--full-steps", type=int, default=2300, help="optimizer steps of every full_* arm")
    ap.add_argument("--pretrain-steps", type=int, default=600, help="optimizer steps on the documents (pt_* arms)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=64, help="longest teacher answer to a prompt")
    ap.add_argument("--eval-max-new-tokens", type=int, default=48)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args(argv)
    if args.job:
        spec = json.loads(Path(args.job).read_text())
        result = run_job(spec)
        (Path(spec["dir"]) / "result.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
        return result

    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [a for a in args.arms.split(",") if a]
    work = Path(args.work)
    student = [int(x) for x in args.student.split(",")]
    t0 = time.perf_counter()
    data = {s: make_data(args, s, work) for s in seeds}
    base = {"teacher": str(Path(args.teacher).resolve()), "threads": args.threads, "student": student,
            "eval_max_new_tokens": args.eval_max_new_tokens, "eval_batch_size": args.eval_batch_size}
    teacher_spec = {**base, "kind": "teacher", "dir": str(work / "teacher"), "eval": data[seeds[0]]["eval"]}
    specs = []
    for seed in seeds:
        for arm in arms:
            out = work / f"{arm}_s{seed}"
            specs.append({**base, "kind": "student", "arm": arm, "seed": seed, "dir": str(out), "eval": data[seed]["eval"],
                          "overrides": arm_overrides(arm, args, data[seed], seed, str(out / "student-init"), out),
                          "pretrain_overrides": (pretrain_overrides(arm, args, data[seed], seed, str(out / "student-init"), out)
                                                 if arm.startswith("pt_") else None)})
    print(f"{len(specs)} student jobs + the teacher's evaluation, {args.jobs} at a time, in {work}", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        teacher_future = pool.submit(launch, teacher_spec)
        futures = {pool.submit(launch, s): (s["arm"], s["seed"]) for s in specs}
        results = {}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            # Each finished job is in --out at once: a run stopped at a time limit still leaves what it measured.
            Path(args.out).write_text(json.dumps({"partial": [{"arm": a, "seed": s, **r} for (a, s), r in results.items()]},
                                                 indent=2, ensure_ascii=False))
        teacher = teacher_future.result()
    report = {"teacher": teacher, **table(results, teacher, seeds, arms), "data": data[seeds[0]],
              "settings": {k: v for k, v in vars(args).items() if k != "job"}, "seconds": round(time.perf_counter() - t0, 1)}
    print_table(report)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwrote {args.out} ({report['seconds']:.0f}s)")
    return report


if __name__ == "__main__":
    main()
