"""bench/bench_grpo_reasoning.py's task: several-item return questions whose worked steps are R1-style <think> blocks
scored after the block, questions split by product, and a clear stop on a bad product split."""

from __future__ import annotations

import functools
import random
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_grpo_reasoning as bgr  # noqa: E402

WINDOWS = {"laptop": 30, "tent": 60, "kayak": 10, "smartwatch": 21}
DAYS = [1, 2, 5, 9, 10, 20, 21, 30, 45, 60, 90]


def facts_dir(tmp_path: Path) -> Path:
    """A quickstart data folder holding only the return-window facts of WINDOWS."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "facts.jsonl").write_text("".join(
        f'{{"topic": "return_window", "entity": "{e}", "lang": "en", "answer": "{w} days"}}\n' for e, w in WINDOWS.items()))
    return data


def verdicts(worked: str) -> tuple[str, ...]:
    steps = worked.split("</think>")[0].removeprefix("<think>").split(". ")
    return tuple(s.rstrip(".").rsplit(": ", 1)[1] for s in steps)


@pytest.mark.parametrize("k", [2, 3])
def test_multi_item_questions_are_right_balanced_and_name_only_their_products(k):
    rows = bgr.multi_item(["laptop", "tent", "kayak"], WINDOWS, DAYS, 400, random.Random(0), k)
    assert len(rows) == 400 and 0.4 < sum(r["answer"] == "Yes." for r in rows) / 400 < 0.6
    for r in rows:
        assert "smartwatch" not in r["prompt"] and bgr.BOTH[k] in r["prompt"]
        assert len(verdicts(r["worked"])) == k
        assert (r["answer"] == "Yes.") == (set(verdicts(r["worked"])) == {"yes"})
        assert bgr.final_yes_no(r["worked"]) == r["answer"][:-1].lower()
        for e, n, v in re.findall(r"My ([a-z ]+), (\d+) days: (yes|no)", r["worked"]):
            assert (int(n) <= WINDOWS[e]) == (v == "yes") and re.search(f"{e} (arrived )?{n} days", r["prompt"])
    # a "no" is decided by different items in different questions, so no single position gives the answer
    failing = {verdicts(r["worked"]).index("no") for r in rows if r["answer"] == "No."}
    assert failing == set(range(k))


def test_final_answer_is_read_after_the_think_block():
    assert bgr.final_yes_no("<think>My laptop, 40 days: no.</think> Yes.") == "yes"
    assert bgr.final_yes_no("No.") == "no"
    assert bgr.final_yes_no("<think>My laptop, 40 days: no.") is None  # cut off while thinking: no answer


def test_task_data_labels_only_the_labelled_products():
    rows = bgr.task_data(WINDOWS, DAYS, ["laptop", "kayak"], 0.5, [], random.Random(0), 2)
    questions = [r["messages"][0]["content"] for r in rows]
    assert not [q for q in questions if "tent" in q or "smartwatch" in q]
    worked_pairs = [r for r in rows if "both" in r["messages"][0]["content"] and "<think>" in r["messages"][1]["content"]]
    pairs = [r for r in rows if "both" in r["messages"][0]["content"]]
    assert len(pairs) == 800 and 0.4 < len(worked_pairs) / len(pairs) < 0.6


@pytest.mark.parametrize("held,grpo_only", [("smartwatch,unicycle", "tent"), ("smartwatch,tent", "tent"),
                                            ("smartwatch", "tent")])
def test_a_bad_product_split_stops_with_the_products_named(tmp_path, monkeypatch, held, grpo_only):
    data = facts_dir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench_grpo_reasoning.py", "--model", str(tmp_path), "--data", str(data),
                                      "--held", held, "--grpo-only", grpo_only, "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="must be disjoint return-window products .*kayak"):
        bgr.main()


def test_named_steps_practise_writing_the_questions_own_item_never_a_store_product():
    rows = bgr.task_data(WINDOWS, DAYS, ["laptop", "kayak"], 0.0, [], random.Random(0), 2, named_steps=True)
    named = [r for r in rows if any(f"my {e} " in r["messages"][0]["content"].lower() for e in bgr.GENERIC_ITEMS)]
    assert len(named) == sum(1 for w in DAYS if w >= 5 for _ in DAYS)
    for r in named:
        q, a = r["messages"][0]["content"], r["messages"][1]["content"]
        e, w, n = re.search(r"[Mm]y (.+?) (?:is|can be returned within) (\d+) days .*?(\d+) days ago", q).groups()
        assert a == f"<think>My {e}, {n} days: {'yes' if int(n) <= int(w) else 'no'}.</think> {'Yes' if int(n) <= int(w) else 'No'}."
    assert not set(bgr.GENERIC_ITEMS) & {e.replace("_", " ") for e in WINDOWS}


def test_every_product_mode_never_labels_a_question_about_held_out_products_only():
    held = {"tent", "smartwatch"}
    grpo = bgr.multi_item(sorted(WINDOWS), WINDOWS, DAYS, 50, random.Random(6), 2, held)
    rows = bgr.task_data(WINDOWS, DAYS, ["laptop", "kayak"], 0.5, [], random.Random(0), 2, one_item=sorted(WINDOWS),
                         multi=sorted(WINDOWS), avoid=held, exclude=frozenset(r["prompt"] for r in grpo))
    questions = [r["messages"][0]["content"] for r in rows]
    pairs = [q for q in questions if "both" in q]
    assert not set(questions) & {r["prompt"] for r in grpo}
    assert not [q for q in pairs if "tent" in q and "smartwatch" in q]  # only held-out products: the test questions
    assert [q for q in pairs if "tent" in q] and [q for q in pairs if "smartwatch" in q]  # mixed with others: labelled
    one = [q for q in questions if "both" not in q and "order" not in q]
    assert {e for e in WINDOWS if any(e in q for q in one)} == set(WINDOWS)
    assert not [r for r in grpo if {e for e in WINDOWS if e in r["prompt"]} <= held]


def test_delivery_questions_need_the_day_count_computed_and_their_steps_subtract():
    rows = bgr.delivery_item(["laptop", "tent"], WINDOWS, DAYS, 300, random.Random(0), avoid={"tent"})
    assert 0.4 < sum(r["answer"] == "Yes." for r in rows) / 300 < 0.6 and not [r for r in rows if "tent" in r["prompt"]]
    for r in rows:
        ordered = re.search(r"ordered a laptop (\d+) days ago and it was delivered (\d+) days later", r["prompt"])
        arrived = re.search(r"arrived (\d+) days after I ordered it, (\d+) days ago", r["prompt"])
        a, b = map(int, ordered.groups() if ordered else arrived.groups()[::-1])
        x, y, d = map(int, re.search(r"<think>(\d+) - (\d+) = (\d+) days since delivery", r["worked"]).groups())
        assert (x, y, d) == (a, b, a - b) and d in DAYS and x in DAYS and y in DAYS
        assert r["answer"] == ("Yes." if d <= WINDOWS["laptop"] else "No.") == r["worked"].rsplit(" ", 1)[1]
    data = bgr.task_data(WINDOWS, DAYS, ["laptop"], 0.0, [], random.Random(0), questions=bgr.delivery_item, arithmetic=1)
    facts = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in data if " - " in r["messages"][0]["content"]}
    assert len(facts) == len(bgr.differences(DAYS)) and facts["What is 30 - 9?"] == "30 - 9 = 21."


def test_delivery_pairs_hold_out_day_pairs_and_the_sft_data_has_their_arithmetic_only():
    held, grpo, train = bgr.pair_split(DAYS)
    assert len(held) + len(grpo) + len(train) == len(bgr.differences(DAYS))
    assert not {t[:2] for t in held} & {t[:2] for t in train + grpo} and not {t[:2] for t in grpo} & {t[:2] for t in train}
    held_rows = bgr.delivery_item(sorted(WINDOWS), WINDOWS, DAYS, 60, random.Random(7), pairs=held)
    rows = bgr.task_data(WINDOWS, DAYS, [], 1.0, [], random.Random(0), one_item=sorted(WINDOWS), multi=sorted(WINDOWS),
                         exclude=frozenset(r["prompt"] for r in held_rows), arithmetic=2,
                         questions=functools.partial(bgr.delivery_item, pairs=train))
    steps = {tuple(map(int, m)) for r in rows for m in re.findall(r"<think>(\d+) - (\d+) =", r["messages"][1]["content"])}
    assert steps and steps <= {t[:2] for t in train}  # no held-out or GRPO day pair is ever a labelled question
    facts = [r for r in rows if re.fullmatch(r"\d+ - \d+ = \d+( days since delivery)?\.", r["messages"][1]["content"])]
    asked = [r["messages"][0]["content"] for r in facts]
    assert len(facts) == 2 * len(bgr.differences(DAYS))  # but every subtraction fact is, twice: plain and as a delivery
    assert sum(q.startswith("What is ") for q in asked) == sum("delivered" in q or "arrived" in q for q in asked)


@pytest.mark.parametrize("flag,value", [("--arithmetic", "-1"), ("--grpo-questions", "0"), ("--held-questions", "0")])
def test_a_bad_count_stops_with_the_flags_named(tmp_path, monkeypatch, flag, value):
    data = facts_dir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench_grpo_reasoning.py", "--model", str(tmp_path), "--data", str(data),
                                      "--held", "smartwatch,tent", "--grpo-only", "kayak", flag, value,
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="--arithmetic must be 0 or more and --grpo-questions, --held-questions"):
        bgr.main()


def test_the_flags_choose_the_question_sets():
    import argparse

    def sets(**flags):
        a = argparse.Namespace(**{"task": "several", "multi": "labelled", "one_item": "labelled", "held_seed": 5,
                                  "grpo_questions": 20, "held_questions": 10, "arithmetic": 3, "items": 2, **flags})
        return bgr.question_sets(a, WINDOWS, DAYS, ["laptop"], ["tent", "smartwatch"], ["kayak"])

    default = sets()
    assert len(default["grpo_rows"]) == 20 and all("kayak" in r["prompt"] for r in default["grpo_rows"])
    assert all("tent" in r["prompt"] and "smartwatch" in r["prompt"] for r in default["held_rows"])
    assert (default["multi"], default["one_item"], default["arithmetic"]) == (None, None, 0)
    assert sets(held_seed=7)["held_rows"] != default["held_rows"]
    every = sets(multi="all", one_item="all")
    assert every["multi"] == every["one_item"] == sorted(WINDOWS) and every["avoid"] == {"tent", "smartwatch"}
    assert not [r for r in every["grpo_rows"] if "kayak" not in r["prompt"] and "laptop" not in r["prompt"]]
    delivery = sets(task="delivery")
    assert delivery["questions"] is bgr.delivery_item and delivery["arithmetic"] == 3
    assert all("delivered" in r["prompt"] or "arrived" in r["prompt"] for r in delivery["held_rows"])
    pairs = sets(task="delivery-pairs")
    held_pairs, grpo_pairs, _ = bgr.pair_split(DAYS)

    def pair(r):
        return tuple(map(int, re.search(r"<think>(\d+) - (\d+)", r["worked"]).groups()))

    assert {pair(r) for r in pairs["held_rows"]} <= {t[:2] for t in held_pairs}
    assert {pair(r) for r in pairs["grpo_rows"]} <= {t[:2] for t in grpo_pairs}
    assert pairs["avoid"] is None and pairs["multi"] == sorted(WINDOWS)
