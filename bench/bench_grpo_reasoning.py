"""GRPO after SFT on a several-step computed answer: does reinforcement make a model use a reasoning style it saw
in a minority of worked examples, on questions about products SFT never labelled?

    .venv/bin/python bench/bench_grpo_reasoning.py --model SFT_MODEL_DIR --data QS_DATA_DIR [--seeds 0,1,2] \
        [--items 3] [--sft-steps 1000] [--worked-share 0.25] [--control-steps 200] [--grpo-steps 200] \
        [--grpo-lr 1e-4] [--max-tokens 64] [--held smartwatch,hiking_boots,tent] [--grpo-only bicycle,rain_jacket] \
        [--one-item labelled|all] [--multi labelled|all] [--grpo-questions 300] \
        [--task several|delivery|delivery-pairs] [--arithmetic 1] \
        [--held-seed 5] [--out runs/bench_grpo_reasoning]

The task: "I bought a laptop 23 days ago, a tent 70 days ago and a kayak 5 days ago. Can I still return all
three?" The answer (yes / no) is computed from --items store facts the quickstart model was trained on (each
product's return window) and the day counts: every item must be within its window. Day counts are the numbers the
tokenizer writes as one token. The store's return-window products are split once into labelled, GRPO-only and
held-out products (--held, --grpo-only; the rest are labelled). Task SFT data (full fine-tuning of the quickstart
model, --sft-steps of 16):
  - one-item questions about the labelled products ("I bought my laptop 23 days ago. Can I still return it?"),
    answered "Yes." / "No.", --worked-share of them with the worked step first
    ("<think>My laptop, 23 days: yes.</think> Yes.");
  - "stated window" questions ("The return window for my order is 30 days and it arrived 23 days ago...") over
    every window and day count, answered with the window restated, so comparing a day count with a window is a
    general skill;
  - several-item questions about labelled products, answered "Yes." / "No.", --worked-share of them with the worked
    steps for every item ("<think>My laptop, 23 days: yes. My tent, 70 days: no. ...</think> No.");
  - the quickstart's own return-window conversations (replay, so the facts stay).
Per seed:
  1. task SFT as above;
  2. control: SFT continued for --control-steps on GRPO's questions with their reference answers ("Yes." / "No."),
     the labels a user would have for them;
  3. GRPO from the task SFT model on several-item questions that name a GRPO-only product (no SFT label), reward =
     the built-in `normalized` (the answer after any </think> block equals the reference), 8 answers of at most
     --max-tokens per question, 8 questions a step, --grpo-steps, no KL term;
  4. the three models answer the held-out questions (every item a held-out product; about half yes) greedily;
     right = the first yes/no after any </think> block is right.
--one-item all / --multi all put the held-out products in the one-item / several-item SFT questions (never a
question about held-out products only: those are the held-out questions), so worked steps have named them;
--task delivery replaces the several-item questions with one-item ones whose day count must be subtracted first
("ordered 45 days ago, delivered 30 days later"); --task delivery-pairs asks them about every product and holds
out (ordered, delivered) day pairs instead of products, with every subtraction fact in the SFT data --arithmetic
times. With --sft-only only step 1 runs and is scored (a reference: the same data with another --worked-share).
Prints per seed each model's held-out accuracy and share of answers with worked steps, the paired difference GRPO -
task SFT and GRPO - control with a 95% bootstrap interval over questions, the reward and answer-length curves (mean
of each 10 steps); then the mean over seeds with a 95% t-interval, the machine and the load; writes results.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_grpo import first_yes_no, paired_ci, return_windows  # noqa: E402
from bench_preference import t_interval  # noqa: E402
from machine_line import machine  # noqa: E402

ONE = ["I bought my {e} {n} days ago. Can I still return it?", "My {e} arrived {n} days ago. Is it still returnable?",
       "It has been {n} days since my {e} was delivered. Can I send it back?"]
STATED = ["The return window for my order is {w} days and it arrived {n} days ago. Can I still return it?",
          "My order can be returned within {w} days and I got it {n} days ago. Is it still returnable?"]
BOTH = {2: "both", 3: "all three", 4: "all four"}
NAMED = ["The return window for my {e} is {w} days and it arrived {n} days ago. Can I still return it?",
         "My {e} can be returned within {w} days and I got it {n} days ago. Is it still returnable?"]
GENERIC_ITEMS = ["lamp", "chair", "blender", "sofa", "camera", "printer", "guitar", "toaster", "scarf", "helmet",
                 "drone", "monitor", "keyboard", "speaker", "tablet", "stroller", "vase", "rug", "mattress", "desk",
                 "mirror", "kettle", "fan", "heater", "umbrella", "wallet", "suitcase", "drill", "grill", "ladder",
                 "coffee maker", "phone case", "yoga mat", "dress", "sweater", "board game", "microwave", "bookshelf",
                 "fishing rod", "skateboard"]


def verdict(n: int, w: int) -> str:
    return "yes" if n <= w else "no"


def said(n: int, w: int) -> str:
    """The final answer for one item: "Yes." or "No."."""
    return f"{verdict(n, w).capitalize()}."


def step(e: str, n: int, w: int) -> str:
    return f"My {e.replace('_', ' ')}, {n} days: {verdict(n, w)}."


def conv(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def list_items(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def multi_item(products: list[str], windows: dict[str, int], days: list[int], count: int, rng: random.Random,
               k: int = 3, avoid: set[str] | None = None) -> list[dict]:
    """Questions about k items bought on different days: half "all returnable"; in the rest one item (chosen at
    random) is past its window, or in a fifth of them two are, so no single item decides the answer. No question
    has all its items in `avoid`."""
    rows = []
    while len(rows) < count:
        items = rng.sample(products, k)
        if avoid and set(items) <= avoid:
            continue
        ok = [True] * k
        if rng.random() >= 0.5:
            for i in rng.sample(range(k), 2 if k > 2 and rng.random() < 0.2 else 1):
                ok[i] = False
        choices = [[n for n in days if (n <= windows[e]) == good] for e, good in zip(items, ok)]
        if not all(choices):
            continue
        ns = [rng.choice(c) for c in choices]
        answer = "Yes." if all(ok) else "No."
        names = [e.replace("_", " ") for e in items]
        if rng.random() < 0.5:
            q = f"I bought {list_items([f'a {e} {n} days ago' for e, n in zip(names, ns)])}. Can I still return {BOTH[k]}?"
        else:
            q = (f"My {names[0]} arrived {ns[0]} days ago, "
                 f"{list_items([f'my {e} {n} days ago' for e, n in zip(names[1:], ns[1:])])}. Are {BOTH[k]} still returnable?")
        steps = " ".join(step(e, n, windows[e]) for e, n in zip(items, ns))
        rows.append({"prompt": q, "answer": answer, "worked": f"<think>{steps}</think> {answer}"})
    return rows


DELIVERY = ["I ordered a {e} {a} days ago and it was delivered {b} days later. Can I still return it?",
            "My {e} arrived {b} days after I ordered it, {a} days ago. Is it still returnable?"]


ELAPSED = ["I ordered something {a} days ago and it was delivered {b} days later. How many days ago was it delivered?",
           "My order arrived {b} days after I placed it, {a} days ago. How long ago did it arrive?"]


def differences(days: list[int]) -> list[tuple[int, int, int]]:
    """(a, b, a - b) with all three one-token day counts."""
    one = set(days)
    return [(a, b, a - b) for a in days for b in days if a - b in one]


def delivery_item(products: list[str], windows: dict[str, int], days: list[int], count: int, rng: random.Random,
                  k: int = 1, avoid: set[str] | None = None, pairs: list[tuple[int, int, int]] | None = None) -> list[dict]:
    """Questions whose day count must be computed first: ordered a days ago, delivered b days later, so a - b days
    since delivery against the product's return window; half yes. The worked steps subtract, then judge the item.
    pairs: the (a, b, a - b) to draw from (default: every one-token difference)."""
    pairs = pairs or differences(days)
    products = [e for e in products if not (avoid and e in avoid)]
    rows = []
    while len(rows) < count:
        e = rng.choice(products)
        good = rng.random() < 0.5
        fitting = [t for t in pairs if (t[2] <= windows[e]) == good]
        if not fitting:
            continue
        a, b, d = rng.choice(fitting)
        answer = said(d, windows[e])
        rows.append({"prompt": rng.choice(DELIVERY).format(e=e.replace("_", " "), a=a, b=b), "answer": answer,
                     "worked": f"<think>{a} - {b} = {d} days since delivery. {step(e, d, windows[e])}</think> {answer}"})
    return rows


def pair_split(days: list[int]) -> tuple[list, list, list]:
    """The (ordered, delivered, difference) day triples split once (seed 3) into 30% held out, 20% GRPO-only and 50%
    labelled: delivery-pairs questions about every product, held out by the day pair, not the product."""
    triples = differences(days)
    random.Random(3).shuffle(triples)
    cut1, cut2 = int(0.3 * len(triples)), int(0.5 * len(triples))
    return triples[:cut1], triples[cut1:cut2], triples[cut2:]


def task_data(windows: dict[str, int], days: list[int], labelled: list[str], worked_share: float, replay: list[dict],
              rng: random.Random, k: int = 3, named_steps: bool = False, one_item: list[str] | None = None,
              multi: list[str] | None = None, avoid: set[str] | None = None, exclude: frozenset = frozenset(),
              questions=None, arithmetic: int = 0) -> list[dict]:
    """questions: the several-step question generator (multi_item or delivery_item); arithmetic: copies of every
    subtraction fact "What is 45 - 30?" -> "45 - 30 = 15." in the data (delivery questions' first step subtracts)."""
    questions = questions or multi_item
    rows = [conv(wd.format(e=e.replace("_", " "), n=n), f"<think>{step(e, n, windows[e])}</think> {said(n, windows[e])}"
                 if rng.random() < worked_share else said(n, windows[e]))
            for e in (one_item or labelled) for n in days for wd in ONE]
    if named_steps:
        # the stated-window questions name an item of many kinds (never a store product) and answer with the same
        # worked step as the store questions, so writing the question's own item name in a step is practised too
        rows += [conv(rng.choice(NAMED).format(e=item, w=w, n=n), f"<think>{step(item, n, w)}</think> {said(n, w)}") for w in days if w >= 5 for n in days
                 for item in [rng.choice(GENERIC_ITEMS)]]
    else:
        rows += [conv(rng.choice(STATED).format(w=w, n=n), f"<think>My order can be returned within {w} days of delivery."
                      f"</think> {said(n, w)}") for w in days if w >= 5 for n in days]
    # in the worked step's own words, so the fact is recalled inside a step ("What is 45 minus 30?" -> "15." was
    # learned, 100 of 100, and not used in steps: 6 of 150 held-out subtractions right)
    # and every other copy asked as a delivery (no product, no return question): the fact was then still recalled
    # poorly inside a return question's step (53 of 150)
    facts = differences(days) if arithmetic else []
    rows += [conv(f"What is {x} - {y}?", f"{x} - {y} = {d}.") if i % 2 == 0 else
             conv(rng.choice(ELAPSED).format(a=x, b=y), f"{x} - {y} = {d} days since delivery.")
             for i in range(arithmetic) for x, y, d in facts]
    rows += [conv(r["prompt"], r["worked"] if rng.random() < worked_share else r["answer"])
             for r in questions(multi or labelled, windows, days, 800, rng, k, avoid) if r["prompt"] not in exclude]
    rows += replay
    rng.shuffle(rows)
    return rows


def final_yes_no(text: str) -> str | None:
    """The first yes/no of the answer after any <think> block."""
    from tailor.data.reasoning import answer_of

    return first_yes_no(answer_of(text))


def question_sets(a: argparse.Namespace, windows: dict[str, int], days: list[int], labelled: list[str],
                  held: list[str], grpo_only: list[str]) -> dict:
    """What --task, --multi, --one-item, --held-seed, --grpo-questions and --arithmetic choose: the held-out and GRPO
    questions, and task_data's question generator and product lists."""
    every = sorted(windows)
    if a.task == "delivery-pairs":
        held_pairs, grpo_pairs, train_pairs = pair_split(days)
        return {"held_rows": delivery_item(every, windows, days, a.held_questions, random.Random(a.held_seed),
                                           pairs=held_pairs),
                "grpo_rows": delivery_item(every, windows, days, a.grpo_questions, random.Random(6), pairs=grpo_pairs),
                "questions": functools.partial(delivery_item, pairs=train_pairs), "avoid": None, "multi": every,
                "one_item": every if a.one_item == "all" else None, "arithmetic": a.arithmetic}
    gen = delivery_item if a.task == "delivery" else multi_item
    if a.multi == "all":
        grpo_rows = gen(every, windows, days, a.grpo_questions, random.Random(6), a.items, set(held))
    else:
        grpo_rows = [r for r in gen(grpo_only + labelled, windows, days, 2 * a.grpo_questions, random.Random(6),
                                    a.items) if any(e.replace("_", " ") in r["prompt"] for e in grpo_only)]
    return {"held_rows": gen(held, windows, days, a.held_questions, random.Random(a.held_seed), a.items),
            "grpo_rows": grpo_rows[:a.grpo_questions], "questions": gen, "avoid": set(held),
            "multi": every if a.multi == "all" else None, "one_item": every if a.one_item == "all" else None,
            "arithmetic": a.arithmetic if a.task == "delivery" else 0}


def score(path, rows: list[dict], max_tokens: int) -> tuple[list[int], float]:
    from tailor.adapters.loading import load_any
    from tailor.models.generation import generate

    model, tokenizer = load_any(str(path))
    answers = generate(model, tokenizer, [[{"role": "user", "content": r["prompt"]}] for r in rows], max_tokens)
    right = [int(final_yes_no(a) == r["answer"][:-1].lower()) for a, r in zip(answers, rows)]
    return right, sum(a.lstrip().startswith("<think>") for a in answers) / len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--held", default="smartwatch,hiking_boots,tent")
    ap.add_argument("--grpo-only", default="bicycle,rain_jacket")
    ap.add_argument("--sft-steps", type=int, default=1000)
    ap.add_argument("--items", type=int, default=3, choices=(2, 3, 4), help="items per question")
    ap.add_argument("--worked-share", type=float, default=0.25,
                    help="share of the SFT answers (one-item and several-item questions) with worked steps")
    ap.add_argument("--lr", type=float, default=5e-4, help="task SFT and control learning rate (full fine-tuning)")
    ap.add_argument("--control-steps", type=int, default=200)
    ap.add_argument("--grpo-steps", type=int, default=200)
    ap.add_argument("--grpo-lr", type=float, default=1e-4)
    ap.add_argument("--held-questions", type=int, default=150)
    ap.add_argument("--held-seed", type=int, default=5,
                    help="random seed of the held-out question sample (another value gives a validation sample of "
                         "questions about the same held-out products)")
    ap.add_argument("--max-tokens", type=int, default=64, help="most tokens per answer, in GRPO and in scoring")
    ap.add_argument("--named-steps", action="store_true",
                    help="stated-window questions name one of 40 non-store items and answer with a worked step for it")
    ap.add_argument("--one-item", choices=("labelled", "all"), default="labelled",
                    help="which products the one-item SFT questions name: the labelled ones, or every product (the "
                         "held-out and GRPO-only products' one-item answers are then labelled; no several-item "
                         "question about them is)")
    ap.add_argument("--task", choices=("several", "delivery", "delivery-pairs"), default="several",
                    help="several: --items items, can I return all of them; delivery: one item ordered a days ago and "
                         "delivered b days later (the day count a - b must be computed; subtraction facts in the SFT "
                         "data), products split as for several; delivery-pairs: the same questions about every "
                         "product, the (a, b) day pairs split instead (30%% held out, 20%% GRPO-only)")
    ap.add_argument("--arithmetic", type=int, default=1,
                    help="copies of every subtraction fact in the task SFT data (delivery tasks)")
    ap.add_argument("--multi", choices=("labelled", "all"), default="labelled",
                    help="which products the several-item SFT and GRPO questions name: the labelled ones (GRPO's also "
                         "a GRPO-only one), or every product, held-out ones mixed with others (no question has only "
                         "held-out products: those are the held-out questions; GRPO's questions are new ones)")
    ap.add_argument("--grpo-questions", type=int, default=300,
                    help="distinct GRPO questions (8 a step: 1600 for 200 steps means none is seen twice)")
    ap.add_argument("--sft-only", action="store_true",
                    help="train and score the task SFT model only (a reference row, e.g. with --worked-share 0)")
    ap.add_argument("--out", default="runs/bench_grpo_reasoning")
    a = ap.parse_args()

    import torch

    from tailor.config import Recipe
    from tailor.models.loading import load_tokenizer
    from tailor.training import train

    windows = return_windows(a.data)
    held, grpo_only = a.held.split(","), a.grpo_only.split(",")
    unknown = [e for e in held + grpo_only if e not in windows]
    if unknown or set(held) & set(grpo_only) or len(held) < 2 or len(grpo_only) < 1:
        sys.exit(f"bench_grpo_reasoning: --held and --grpo-only must be disjoint return-window products (at least 2 "
                 f"and 1) of {sorted(windows)}; unknown: {unknown}")
    if a.arithmetic < 0 or a.grpo_questions < 1 or a.held_questions < 1:
        sys.exit(f"bench_grpo_reasoning: --arithmetic must be 0 or more and --grpo-questions, --held-questions 1 or "
                 f"more; got {a.arithmetic}, {a.grpo_questions}, {a.held_questions}")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    labelled = [e for e in sorted(windows) if e not in held + grpo_only]
    tok = load_tokenizer(a.model)
    days = [n for n in range(1, 200) if len(tok.tokenize(str(n))) == 1]
    conversations = [json.loads(x) for x in (Path(a.data) / "train.jsonl").read_text().splitlines() if x.strip()]
    replay = [{"messages": r["messages"]} for r in conversations if r.get("fact_id", "").startswith("return_window/")]
    qs = question_sets(a, windows, days, labelled, held, grpo_only)
    held_rows, grpo_rows = qs["held_rows"], qs["grpo_rows"]
    exclude = frozenset(r["prompt"] for r in grpo_rows + held_rows)
    grpo_file = out / "grpo.jsonl"
    grpo_file.write_text("".join(json.dumps({"prompt": r["prompt"], "answer": r["answer"]}) + "\n" for r in grpo_rows))
    control_file = out / "control.jsonl"
    control_file.write_text("".join(json.dumps(conv(r["prompt"], r["answer"])) + "\n" for r in grpo_rows))
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"windows {windows}; labelled {labelled}, GRPO-only {grpo_only}, held out {held}; one-token day counts: "
          f"{len(days)}; {len(held_rows)} held-out questions ({sum(r['answer'] == 'Yes.' for r in held_rows)} yes), "
          f"{len(grpo_rows)} GRPO questions")

    def sft(start, data: Path, steps: int, name: str, seed: int):
        return train(Recipe.model_validate({
            "model": {"path": str(start)}, "adapter": {"method": "full"},
            "data": {"train": [str(data)], "max_length": 128, "val_ratio": 0.0},
            "train": {"objective": "sft", "output_dir": str(out / name), "max_steps": steps, "batch_size": 16,
                      "lr": a.lr, "logging_steps": 50, "save_steps": 100_000, "seed": seed, "precision": "fp32"}}))

    results = []
    for seed in map(int, a.seeds.split(",")):
        data = out / f"task-s{seed}.jsonl"
        rows = task_data(windows, days, labelled, a.worked_share, replay, random.Random(seed), a.items, a.named_steps,
                         qs["one_item"], qs["multi"], qs["avoid"], exclude, qs["questions"], qs["arithmetic"])
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        t0 = time.perf_counter()
        sft_dir = sft(a.model, data, a.sft_steps, f"sft-s{seed}", seed).final_dir
        sft_seconds = time.perf_counter() - t0
        if a.sft_only:
            right, worked = score(sft_dir, held_rows, a.max_tokens)
            results.append({"seed": seed, "sft_accuracy": sum(right) / len(right), "worked_share": {"sft": worked},
                            "sft_seconds": round(sft_seconds, 1)})
            print(f"seed {seed}: task SFT only (--worked-share {a.worked_share}): held-out accuracy "
                  f"{sum(right) / len(right):.3f}, worked steps in {worked:.0%} of answers", flush=True)
            (out / "results.json").write_text(json.dumps({"runs": results, "args": vars(a)}, indent=1))
            continue
        control_dir = sft(sft_dir, control_file, a.control_steps, f"control-s{seed}", seed).final_dir
        grpo = train(Recipe.model_validate({
            "model": {"path": str(sft_dir)}, "adapter": {"method": "full"},
            "data": {"train": [str(grpo_file)], "max_length": 128, "val_ratio": 0.0},
            "train": {"objective": "grpo", "output_dir": str(out / f"grpo-s{seed}"), "max_steps": a.grpo_steps,
                      "batch_size": 64, "lr": a.grpo_lr, "logging_steps": 1, "save_steps": 100_000, "seed": seed,
                      "precision": "fp32"},
            "grpo": {"num_generations": 8, "max_completion_length": a.max_tokens, "beta": 0.0, "temperature": 1.0,
                     "rewards": [{"name": "normalized"}]}}))
        (before, before_worked), (control, control_worked), (after, after_worked) = (
            score(sft_dir, held_rows, a.max_tokens), score(control_dir, held_rows, a.max_tokens),
            score(grpo.final_dir, held_rows, a.max_tokens))
        diff, lo, hi = paired_ci(before, after, seed)
        cdiff, clo, chi = paired_ci(control, after, seed)
        metrics = [json.loads(x) for x in (out / f"grpo-s{seed}" / "metrics.jsonl").read_text().splitlines() if x.strip()]

        def curve(key: str) -> list[float]:
            xs = [m[key] for m in metrics if key in m]
            return [round(sum(xs[i:i + 10]) / len(xs[i:i + 10]), 2) for i in range(0, len(xs), 10)]

        row = {"seed": seed, "sft_accuracy": sum(before) / len(before), "control_accuracy": sum(control) / len(control),
               "grpo_accuracy": sum(after) / len(after), "worked_share": {"sft": before_worked, "control": control_worked,
                                                                           "grpo": after_worked},
               "difference": diff, "difference_ci": [lo, hi], "difference_vs_control": cdiff,
               "difference_vs_control_ci": [clo, chi], "reward_per_10": curve("reward"),
               "length_per_10": curve("completions/mean_length"), "sft_seconds": round(sft_seconds, 1),
               "grpo_seconds_per_step": round(grpo.metrics["seconds"] / max(grpo.metrics["steps"], 1), 3)}
        results.append(row)
        print(f"seed {seed}: task SFT {row['sft_accuracy']:.3f} (worked steps in {before_worked:.0%} of answers), "
              f"control {row['control_accuracy']:.3f} ({control_worked:.0%}), GRPO {row['grpo_accuracy']:.3f} "
              f"({after_worked:.0%}); GRPO - task SFT {100 * diff:+.1f} points (95% CI {100 * lo:+.1f}..{100 * hi:+.1f}), "
              f"GRPO - control {100 * cdiff:+.1f} ({100 * clo:+.1f}..{100 * chi:+.1f}); "
              f"{row['grpo_seconds_per_step']} s/GRPO step; reward per 10 steps {row['reward_per_10']}; "
              f"answer length per 10 steps {row['length_per_10']}", flush=True)
        (out / "results.json").write_text(json.dumps({"runs": results, "args": vars(a)}, indent=1))
    if a.sft_only:
        m, h = t_interval([r["sft_accuracy"] for r in results])
        print(f"seeds {a.seeds}: task SFT held-out accuracy {100 * m:.1f}% (95% t-interval ±{100 * h:.1f})")
    for key in () if a.sft_only else ("difference", "difference_vs_control"):
        m, h = t_interval([r[key] for r in results])
        print(f"seeds {a.seeds}: {key} {100 * m:+.1f} points (95% t-interval ±{100 * h:.1f})")
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
