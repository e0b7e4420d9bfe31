"""Preference training fixes a behaviour SFT left: the quickstart store assistant answers off-domain questions
("What is the capital of France?") with a made-up store fact. DPO (and ORPO, KTO, SimPO) on pairs "polite scope
refusal" (chosen) vs the SFT model's own answer (rejected), plus in-domain anchor pairs (the reference answer over
the refusal), should raise the refusal rate on held-out off-domain questions while in-domain fact accuracy stays.

    OMP_NUM_THREADS=1 BENCH_THREADS=1 .venv/bin/python bench/bench_preference.py --model SFT_MODEL_DIR \
        --data QS_DATA_DIR [--methods sft,sft>dpo+rpo,sft>orpo,dpo+rpo,...] [--seeds 0,1,2] [--steps 300] \
        [--lr 1e-4] [--sft-steps 300] [--sft-lr 2e-4] [--sft-eda 0.5] [--rpo-alpha 8] [--anchors 3696] \
        [--sft-anchors 3000] [--adapter full|lora|dora] [--train-set broad|broad-no-store-words|broad-more-store-words|narrow] \
        [--start DIR] [--out runs/bench_preference]

The defaults are the best recipe found (docs/benchmarks.md#preference-optimization-and-grpo): "sft>dpo+rpo", the
DPO paper's order when the SFT model has not seen the preferred answers: first SFT on the chosen answers (every
off-domain refusal and 3000 in-domain answers from the SFT conversations, half of the questions with one EDA copy
(data.augment.eda: synonyms, insertions, swaps, deletions), 300 steps of 8 at lr 2e-4), then DPO with the SFT term
at weight 8 (preference.rpo_alpha) on the pairs (the refusal over the original SFT model's own answer; all 3696 SFT
conversations as in-domain anchors, the reference answer over the refusal's opening "Sorry," / "抱歉，"), 300 steps
of 8 at lr 1e-4, the reference model being the first stage's model; full training, the broad off-domain set.
"sft" alone is the control (the first stage, scored). A method "A>B" trains B from A's final model; stages shared
by several methods run once per seed. These are accuracy runs, not timings: the s/step printed is wall time under
whatever load there was.

SFT_MODEL_DIR: the quickstart's merged SFT model (`tailor quickstart` writes it as merged/); QS_DATA_DIR: its data/
(train.jsonl = SFT conversations, eval.jsonl = held-out in-domain questions with their `answer` fact).
Off-domain training questions: --train-set broad (bench/offdomain_questions.py: 687, ~130 English and Chinese
wordings x subjects, small talk, and store words in frames that are not about the store) or narrow (the first 121,
below). The 34 held-out ones use wordings that never occur in training; check_disjoint asserts on every run that no
training question uses a held-out wording (and, for broad, a held-out subject or a held-out frame's distinctive
words). The refusal rule: an answer counts as a refusal when it contains the refusal's key phrase ("only help with
questions about our store" / "只能回答关于本店"); an answer that starts "Sorry," and drifts into a store fact is not
one. Fact accuracy: the reference fact appears in the answer (tailor.evaluation.metrics.contains_answer), on all 308
held-out questions.
Every stage trains with tailor.training.train (--adapter, a LoRA/DoRA stage merged before the next; train.precision
fp32; train.objective = the stage's method; dpo+rpo = dpo with preference.rpo_alpha; sft = plain SFT on the chosen
answers) from --model (or --start) and each method is scored by greedy generation
(tailor.models.generation.generate). Prints per run the held-out answers that were not refusals, per method the
mean over seeds with a 95% t-interval, the machine and the load; writes results.json (with every miss, off-domain
and in-domain) into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

from machine_line import machine  # noqa: E402  (bench/ is the script's folder)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

REFUSAL = {"en": "Sorry, I can only help with questions about our store: orders, shipping, returns and products.",
           "zh": "抱歉，我只能回答关于本店的问题：订单、配送、退货和商品。"}
REFUSAL_KEYS = ("only help with questions about our store", "只能回答关于本店")
# The refusal's opening: --anchor-rejected refusal-start pushes only this down for in-domain prompts, so that DPO
# does not lower the tokens of the rest of the refusal (which made refusals start and drift into a store fact).
REFUSAL_START = {"en": "Sorry,", "zh": "抱歉，"}

# (wording, subjects): training and held-out use different subjects and different wordings. The training side is
# broad (geography, books, sizes, jokes, weather, maths, cooking, sport, history, science, coding, health,
# translation, music, animals) so that "not about the store" generalizes; held-out wordings never occur in training.
TRAIN_EN = [("What is the capital of {}?", ["France", "Japan", "Brazil", "Kenya", "Norway", "Peru", "Germany", "Spain",
                                              "Mexico", "Sweden", "Vietnam", "Greece"]),
            ("Who wrote the novel {}?", ["Hamlet", "Don Quixote", "War and Peace", "Moby Dick", "Ulysses", "Dracula"]),
            ("How tall is {}?", ["Mount Everest", "the Eiffel Tower", "Mount Fuji", "the Statue of Liberty", "Big Ben"]),
            ("Can you tell me a joke about {}?", ["cats", "penguins", "lawyers", "doctors", "teachers", "robots"]),
            ("What will the weather be like in {} tomorrow?", ["Paris", "Tokyo", "Cairo", "London", "Sydney", "Moscow"]),
            ("What is {}?", ["7 times 8", "the square root of 81", "15 plus 27"]),
            ("How do I cook {}?", ["rice", "pasta", "a steak", "pancakes", "soup", "bread"]),
            ("Who is the best {} player of all time?", ["tennis", "chess", "basketball"]),
            ("When did {} happen?", ["the French Revolution", "the moon landing", "World War One", "the fall of Rome"]),
            ("Why is {}?", ["the sky blue", "the sea salty", "grass green", "ice slippery"]),
            ("Write a Python function that {}.", ["sorts a list", "reverses a string"]),
            ("What should I take for {}?", ["a headache", "a cold"]),
            ("Translate '{}' into German.", ["good morning", "thank you"]),
            ("Who sang the song {}?", ["Yesterday", "Thriller"]),
            ("How many legs does {} have?", ["a spider", "an octopus"])]
HELD_EN = [("Which city is the capital of {}?", ["Italy", "Canada", "Egypt", "Chile"]),
           ("Name the author of {}.", ["Pride and Prejudice", "The Odyssey"]),
           ("Recommend me a good movie about {}.", ["space travel", "dinosaurs", "friendship"]),
           ("Explain how {} works.", ["photosynthesis", "a black hole", "the stock market"]),
           ("Who won the football world cup in {}?", ["1998", "2010"]),
           ("Could you help me with my {} homework?", ["algebra", "history"]),
           ("What is the population of {}?", ["India", "Australia"])]
TRAIN_ZH = [("{}的首都是哪里？", ["法国", "日本", "巴西", "肯尼亚", "挪威", "秘鲁", "德国", "西班牙", "墨西哥", "瑞典", "越南",
                                     "希腊"]),
            ("《{}》是谁写的？", ["红楼梦", "西游记", "哈姆雷特", "三国演义", "水浒传"]),
            ("{}有多高？", ["珠穆朗玛峰", "埃菲尔铁塔", "富士山", "自由女神像", "泰山"]),
            ("给我讲一个关于{}的笑话。", ["猫", "企鹅", "律师", "医生", "老师", "机器人"]),
            ("明天{}的天气怎么样？", ["巴黎", "东京", "开罗", "伦敦", "悉尼", "莫斯科"]),
            ("{}等于多少？", ["7乘8", "81的平方根", "15加27"]),
            ("怎么做{}？", ["米饭", "饺子", "红烧肉", "面条", "包子"]),
            ("{}是什么时候发生的？", ["法国大革命", "登月", "第一次世界大战", "罗马帝国灭亡"]),
            ("为什么{}？", ["天空是蓝色的", "海水是咸的"]),
            ("用Python写一个{}的函数。", ["排序列表", "反转字符串"]),
            ("{}应该吃什么药？", ["头疼", "感冒"]),
            ("谁是历史上最好的{}运动员？", ["网球", "篮球"]),
            ("把“{}”翻译成英语。", ["早上好", "谢谢"])]
HELD_ZH = [("请问{}的首都叫什么？", ["意大利", "加拿大", "埃及", "智利"]),
           ("推荐一部关于{}的好电影。", ["太空旅行", "恐龙", "友谊"]),
           ("解释一下{}的原理。", ["光合作用", "黑洞", "股票市场"]),
           ("{}年的足球世界杯冠军是谁？", ["1998", "2010"]),
           ("能帮我做一下{}作业吗？", ["数学", "历史"]),
           ("{}有多少人口？", ["印度", "澳大利亚"])]


def questions(families, lang):
    return [{"q": w.format(s), "lang": lang} for w, subjects in families for s in subjects]


# Words of the held-out frames that no training question may contain (beside the held-out wordings and subjects).
HELD_FRAME_WORDS = ("which city", "name the", "author", "recommend", "movie", "film", "explain", "works", "won ",
                    "world cup", "football", "homework", "population", "首都叫什么", "推荐", "电影", "解释", "原理",
                    "世界杯", "足球", "冠军", "作业", "人口")


def check_disjoint(train: list[dict], strict: bool = True) -> None:
    """Assert that no training question uses a held-out wording and (strict) none names a held-out subject or
    uses a held-out frame's distinctive words: the held-out refusal rate measures wordings never trained on. The
    first, narrow set is checked for wordings only (its "谁是历史上最好的…" shares 历史 with a held-out subject)."""
    import re

    frames = [re.escape(w).replace(re.escape("{}"), ".*") for w, _ in HELD_EN + HELD_ZH]
    subjects = [s for _, ss in HELD_EN + HELD_ZH for s in ss]
    for q in (r["q"] for r in train):
        low = q.lower()
        assert not any(re.fullmatch(f, q) for f in frames), f"training question {q!r} uses a held-out wording"
        if not strict:
            continue
        assert not any(s.lower() in low for s in subjects), f"training question {q!r} names a held-out subject"
        assert not any(w in low for w in HELD_FRAME_WORDS), f"training question {q!r} uses a held-out frame word"


def off_domain_training(train_set: str) -> list[dict]:
    """The off-domain training questions --train-set names, checked disjoint from the held-out set."""
    if train_set.startswith("broad"):
        from offdomain_questions import broad_questions

        rows = broad_questions(store_words=train_set != "broad-no-store-words",
                               more_store_words=train_set == "broad-more-store-words")
    else:
        rows = questions(TRAIN_EN, "en") + questions(TRAIN_ZH, "zh")
    check_disjoint(rows, strict=train_set != "narrow")
    return rows


def anchor_pairs(anchors: list[dict], train_rows: list[dict], rejected: str, rng: random.Random) -> list[dict]:
    """In-domain pairs: each anchor's reference answer chosen over the refusal (it stays a store question) or over
    a neighbouring fact's answer from the SFT conversations in the same language: another topic about the same
    entity or the same topic about another entity (fine-tuning the refusal in made the model answer a weight
    question with the price and one country's delivery time with another's)."""
    by_fact: dict[tuple, set[str]] = {}
    for r in train_rows:
        by_fact.setdefault((r.get("fact_id", ""), r.get("lang", "en")), set()).add(r["messages"][-1]["content"])
    pairs = []
    for i, r in enumerate(anchors):
        topic, _, entity = r.get("fact_id", "").partition("/")
        lang = r.get("lang", "en")
        wrong = sorted(text for (fid, lg), texts in by_fact.items() if lg == lang and fid != r.get("fact_id")
                       and (fid.startswith(topic + "/") or fid.endswith("/" + entity)) for text in texts)
        use_refusal = rejected in ("refusal", "refusal-start") or (rejected == "mixed" and i % 2 == 0) or not wrong
        refusal = REFUSAL_START[lang] if rejected == "refusal-start" else REFUSAL[lang]
        pairs.append({"prompt": r["messages"][-2]["content"], "chosen": r["messages"][-1]["content"],
                      "rejected": refusal if use_refusal else rng.choice(wrong)})
    return pairs


def refused(text: str) -> bool:
    return any(k in text for k in REFUSAL_KEYS)


def t_interval(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for one value)."""
    t975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return m, t975.get(len(xs) - 1, 2.0) * sd / math.sqrt(len(xs))


def score(model, tokenizer, off: list[dict], facts: list[dict], max_new_tokens: int) -> dict:
    from tailor.evaluation.metrics import contains_answer
    from tailor.models.generation import generate

    off_answers = generate(model, tokenizer, [[{"role": "user", "content": q["q"]}] for q in off], max_new_tokens)
    fact_answers = generate(model, tokenizer, [r["messages"][:-1] for r in facts], max_new_tokens)
    by_lang = {lang: [refused(a) for a, q in zip(off_answers, off) if q["lang"] == lang] for lang in ("en", "zh")}
    return {"refusal_rate": sum(map(refused, off_answers)) / len(off),
            **{f"refusal_rate/{lang}": sum(v) / len(v) for lang, v in by_lang.items() if v},
            "fact_accuracy": sum(contains_answer(a, r["answer"]) for a, r in zip(fact_answers, facts)) / len(facts),
            "in_domain_refusals": sum(map(refused, fact_answers)) / len(facts),
            "examples": [{"q": q["q"], "a": a} for q, a in zip(off[:4], off_answers[:4])],
            "misses": [{"q": q["q"], "a": a} for q, a in zip(off, off_answers) if not refused(a)],
            "fact_misses": [{"q": r["messages"][-2]["content"], "a": a, "answer": r["answer"]}
                            for a, r in zip(fact_answers, facts) if not contains_answer(a, r["answer"])]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--methods", default="sft,sft>dpo+rpo",
                    help="comma-separated: train.objective values, dpo+rpo (DPO + --rpo-alpha x the SFT loss on the chosen "
                         "answer), sft (SFT on the chosen answers), or chains A>B (B trained from A's model)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=300, help="steps of each preference stage")
    ap.add_argument("--adapter", default="full", help="adapter.method (full: every weight; lora/dora: --lora-r, --lora-alpha)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=int, default=32)
    ap.add_argument("--rpo-alpha", type=float, default=8.0, help="weight of the SFT loss in dpo+rpo")
    ap.add_argument("--sft-steps", type=int, default=300, help="steps of the sft method / the sft stage of a chain")
    ap.add_argument("--sft-lr", type=float, default=2e-4)
    ap.add_argument("--sft-anchors", type=int, default=3000,
                    help="in-domain answers in the sft data (beside every off-domain refusal)")
    ap.add_argument("--sft-eda", type=float, default=0.5,
                    help="data.augment.eda.rate of the sft stage: that share of its questions gets one EDA copy "
                         "(synonyms, insertions, swaps, deletions in the question, English and Chinese)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ema-decay", type=float, default=0.0, help="train.ema_decay (0: off; the weights saved are the EMA)")
    ap.add_argument("--lr", type=float, default=1e-4, help="learning rate of the preference stages")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--loss-type", default="sigmoid", help="preference.loss_type of dpo / dpo+rpo (sigmoid, ipo, hinge, ...)")
    ap.add_argument("--anchors", type=int, default=3696, help="in-domain anchor pairs (the SFT conversation's reference answer chosen)")
    ap.add_argument("--anchor-rejected", default="refusal-start", choices=("refusal", "refusal-start", "other-fact", "mixed"),
                    help="an anchor's rejected answer: the refusal, its opening only (\"Sorry,\"), another fact about the "
                         "same product/place (another topic, from the SFT conversations), or refusal and fact alternately")
    ap.add_argument("--eval-facts", type=int, default=308, help="held-out in-domain questions scored")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--train-set", default="broad",
                    choices=("broad", "broad-no-store-words", "broad-more-store-words", "narrow"),
                    help="off-domain training questions: broad (bench/offdomain_questions.py, 687), broad-no-store-words (the "
                         "same without the 66 that name a store word in a frame not about the store), "
                         "broad-more-store-words (broad and 70 more of those, STORE_WORDS2: 757) or narrow (121)")
    ap.add_argument("--show-misses", type=int, default=8, help="held-out off-domain answers that were not refusals, printed per run")
    ap.add_argument("--start", default=None,
                    help="train from this model instead of --model (e.g. the sft control's final model: SFT on the chosen "
                         "answers first, as the DPO paper does when the SFT model has not seen the preference data); the "
                         "rejected answers and the before-row still come from --model; {seed} is replaced per seed")
    ap.add_argument("--out", default="runs/bench_preference")
    a = ap.parse_args()

    import torch

    from tailor.config import Recipe
    from tailor.models.generation import generate
    from tailor.models.loading import load_model, load_tokenizer
    from tailor.training import train

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(a.data)
    train_rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines() if x.strip()]
    eval_rows = [json.loads(x) for x in (data / "eval.jsonl").read_text().splitlines() if x.strip()]
    rng = random.Random(0)
    facts = rng.sample(eval_rows, min(a.eval_facts, len(eval_rows)))
    off_train = off_domain_training(a.train_set)
    off_held = questions(HELD_EN, "en") + questions(HELD_ZH, "zh")
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"off-domain questions: {len(off_train)} train, {len(off_held)} held out; in-domain held out: {len(facts)}")

    model, tok = load_model(a.model), load_tokenizer(a.model)
    started = time.perf_counter()
    sft = score(model, tok, off_held, facts, a.max_new_tokens)
    print(f"SFT model: refusal {sft['refusal_rate']:.3f}, fact accuracy {sft['fact_accuracy']:.3f} "
          f"({time.perf_counter() - started:.0f}s); e.g. {sft['examples'][0]}")
    # Rejected answers: what the SFT model itself says to the training off-domain questions.
    said = generate(model, tok, [[{"role": "user", "content": q["q"]}] for q in off_train], a.max_new_tokens)
    refusals = [{"prompt": q["q"], "chosen": REFUSAL[q["lang"]], "rejected": s}
                for q, s in zip(off_train, said) if s.strip() and not refused(s)]
    anchors = [r for r in rng.sample(train_rows, min(max(a.anchors, a.sft_anchors) * 3, len(train_rows)))
               if r["messages"][-1]["role"] == "assistant"]
    in_domain = anchor_pairs(anchors[:a.anchors], train_rows, a.anchor_rejected, rng)
    pairs = refusals + in_domain
    pairs_file = out / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    print(f"pairs: {len(pairs)} ({len(refusals)} off-domain refusals, {len(in_domain)} in-domain anchors, "
          f"rejected: {a.anchor_rejected})")
    del model

    # The sft stage's data: the refusals and --sft-anchors in-domain answers (plain SFT on chosen answers).
    chosen_file = out / "chosen.jsonl"
    chosen_rows = refusals + [{"prompt": r["messages"][-2]["content"], "chosen": r["messages"][-1]["content"]}
                              for r in anchors[:a.sft_anchors]]
    chosen_file.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["chosen"]}]},
        ensure_ascii=False) + "\n" for p in chosen_rows), encoding="utf-8")

    def stage(method: str, start: str, run_dir: Path, seed: int):
        """One training run: sft (on chosen.jsonl, --sft-steps at --sft-lr) or a preference objective (on
        pairs.jsonl, --steps at --lr; dpo+rpo = dpo with preference.rpo_alpha) from the model in `start`."""
        objective, extra = ("dpo", {"rpo_alpha": a.rpo_alpha}) if method == "dpo+rpo" else (method, {})
        sft_stage = objective == "sft"
        recipe = Recipe.model_validate({
            "model": {"path": start}, "data": {"train": [str(chosen_file if sft_stage else pairs_file)],
                                               "max_length": 128, "val_ratio": 0.0,
                                               **({"augment": {"eda": {"rate": a.sft_eda, "copies": 1}, "seed": seed}}
                                                  if sft_stage and a.sft_eda else {})},
            "adapter": ({"method": a.adapter, "r": a.lora_r, "alpha": a.lora_alpha} if a.adapter in ("lora", "dora")
                        else {"method": a.adapter}),
            "train": {"objective": objective, "output_dir": str(run_dir),
                      "max_steps": a.sft_steps if sft_stage else a.steps, "batch_size": a.batch_size,
                      "lr": a.sft_lr if sft_stage else a.lr, "warmup_ratio": 0.1, "logging_steps": 5,
                      "save_steps": 10_000, "seed": seed, "precision": "fp32", "ema_decay": a.ema_decay},
            **({} if sft_stage else {"preference": {
                "beta": a.beta, **extra, **({"loss_type": a.loss_type} if objective == "dpo" else {})}})})
        return train(recipe)

    from tailor.adapters.loading import load_any
    from tailor.adapters.merge import merge

    runs, done = [], {}
    for method in a.methods.split(","):
        for seed in map(int, a.seeds.split(",")):
            start, seconds, steps, step_seconds = (a.start or a.model).replace("{seed}", str(seed)), 0.0, 0, 0.0
            parts = method.split(">")  # "sft>dpo+rpo": SFT on the chosen answers, then DPO from that model
            for i, part in enumerate(parts):
                key = (seed, tuple(parts[:i + 1]))
                if key not in done:  # a chain's first stages are shared with the methods that end there
                    t0 = time.perf_counter()
                    result = stage(part, start, out / f"s{seed}" / "-then-".join(parts[:i + 1]), seed)
                    final = str(result.final_dir)
                    if a.adapter in ("lora", "dora"):
                        final = str(merge(result.final_dir, Path(result.final_dir).parent / "merged"))
                    done[key] = (final, time.perf_counter() - t0, result.metrics["steps"], result.metrics["seconds"])
                start = done[key][0]
                seconds, steps, step_seconds = seconds + done[key][1], steps + done[key][2], step_seconds + done[key][3]
            tuned, tuned_tok = load_any(start)
            s = score(tuned, tuned_tok, off_held, facts, a.max_new_tokens)
            row = {"method": method, "seed": seed, "seconds": round(seconds, 1),
                   "seconds_per_step": round(step_seconds / max(steps, 1), 3), **s}
            runs.append(row)
            print(f"{method} seed {seed}: refusal {s['refusal_rate']:.3f} (in-domain {s['in_domain_refusals']:.3f}), "
                  f"fact accuracy {s['fact_accuracy']:.3f}, {row['seconds_per_step']} s/step; e.g. {s['examples'][0]}")
            for miss in s["misses"][:a.show_misses]:
                print(f"  not refused: {miss['q']} -> {miss['a']}")
            (out / "results.json").write_text(json.dumps({"sft": sft, "runs": runs, "args": vars(a)}, indent=1,
                                                         ensure_ascii=False))

    print("\nmethod | seeds | refusal on held-out off-domain (95% CI) | fact accuracy (95% CI) | change vs SFT | s/step")
    print(f"SFT | - | {sft['refusal_rate']:.3f} | {sft['fact_accuracy']:.3f} | - | -")
    for method in a.methods.split(","):
        rs = [r for r in runs if r["method"] == method]
        ref, ref_h = t_interval([r["refusal_rate"] for r in rs])
        acc, acc_h = t_interval([r["fact_accuracy"] for r in rs])
        sps = sum(r["seconds_per_step"] for r in rs) / len(rs)
        print(f"{method} | {len(rs)} | {ref:.3f} ± {ref_h:.3f} | {acc:.3f} ± {acc_h:.3f} | "
              f"{100 * (acc - sft['fact_accuracy']):+.1f} points | {sps:.3f}")
    print(f"machine after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
