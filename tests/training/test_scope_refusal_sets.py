"""The scope-refusal bench (bench/bench_preference.py) measures refusals on off-domain wordings never trained on:
its broad training set must stay disjoint from the held-out questions, and check_disjoint must catch a leak."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_preference as bp  # noqa: E402
from offdomain_questions import broad_questions  # noqa: E402


def test_broad_training_questions_are_disjoint_from_held_out():
    train = broad_questions()
    held = {q["q"] for q in bp.questions(bp.HELD_EN, "en") + bp.questions(bp.HELD_ZH, "zh")}
    assert len(train) > 600 and {q["lang"] for q in train} == {"en", "zh"}
    assert not held & {q["q"] for q in train}
    bp.check_disjoint(train)


def test_broad_set_without_store_words_leaves_out_exactly_the_store_word_frames():
    import offdomain_questions as od

    full, plain = broad_questions(), broad_questions(store_words=False)
    store = {w.format(s) for w, ss in od.STORE_WORDS_EN + od.STORE_WORDS_ZH for s in ss}
    assert "What animals live in Alaska?" in store and "阿拉斯加有什么动物？" in store
    assert [q["q"] for q in plain] == [q["q"] for q in full if q["q"] not in store]
    assert len(full) - len(plain) == len(store) == 66
    bp.check_disjoint(plain)


@pytest.mark.parametrize("leak", ["Which city is the capital of Peru?", "Tell me about India.",
                                  "What is the population of Peru?", "推荐一部关于猫的好电影。"])
def test_check_disjoint_rejects_a_held_out_wording_subject_or_frame_word(leak):
    with pytest.raises(AssertionError):
        bp.check_disjoint([{"q": leak, "lang": "en"}])


def test_anchor_pairs_reject_the_refusal_or_a_neighbouring_fact():
    def row(fact_id, q, a):
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                "fact_id": fact_id, "lang": "en"}

    rows = [row("price/kettle", "Kettle price?", "The kettle costs $20."),
            row("weight/kettle", "Kettle weight?", "The kettle weighs 1 kg."),
            row("price/lamp", "Lamp price?", "The lamp costs $9."),
            row("weight/boat", "Boat weight?", "The boat weighs 20 kg.")]
    refusal = bp.anchor_pairs(rows[:1], rows, "refusal", random.Random(0))
    assert refusal == [{"prompt": "Kettle price?", "chosen": "The kettle costs $20.", "rejected": bp.REFUSAL["en"]}]
    other = bp.anchor_pairs(rows[:1] * 20, rows, "other-fact", random.Random(0))
    # another topic of the same product, or the same topic of another product; never the boat's weight
    assert {p["rejected"] for p in other} == {"The kettle weighs 1 kg.", "The lamp costs $9."}
    start = bp.anchor_pairs(rows[:1], rows, "refusal-start", random.Random(0))
    assert start[0]["rejected"] == bp.REFUSAL_START["en"] and bp.REFUSAL["en"].startswith(start[0]["rejected"])
    mixed = bp.anchor_pairs(rows[:1] * 4, rows, "mixed", random.Random(0))
    assert [p["rejected"] == bp.REFUSAL["en"] for p in mixed] == [True, False, True, False]


def test_second_test_set_shares_no_question_or_frame_with_training_or_the_first_held_out_set():
    """TEST2 (bench/rescore_refusal.py) was written after the recipe was chosen on the first held-out set: none of
    its questions may be a training or first-held-out question, nor fit one of their frames."""
    import re

    import offdomain_questions as od

    test2 = od.test2_questions()
    assert len(test2) == 76 and sum(q["lang"] == "en" for q in test2) == 40
    train = broad_questions() + bp.questions(bp.TRAIN_EN, "en") + bp.questions(bp.TRAIN_ZH, "zh")
    held = bp.questions(bp.HELD_EN, "en") + bp.questions(bp.HELD_ZH, "zh")
    others = {q["q"] for q in train + held}
    assert not others & {q["q"] for q in test2}
    for wording, _ in od.TEST2_EN + od.TEST2_ZH:
        frame = re.escape(wording).replace(re.escape("{}"), ".*")
        assert not [q for q in others if re.fullmatch(frame, q)], wording
    bp.check_disjoint(test2, strict=False)  # no first-held-out wording either


def test_rescore_names_a_run_folder_without_trained_models(tmp_path, monkeypatch):
    import rescore_refusal

    monkeypatch.setattr(sys, "argv", ["rescore_refusal.py", "--before", str(tmp_path), "--runs", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"no s<seed>/<stage>/final model under .*bench_preference --out"):
        rescore_refusal.main()


def test_third_test_set_and_more_store_words_stay_disjoint_from_every_other_set():
    """TEST3 was written before any model trained on STORE_WORDS2 (chosen from TEST2's misses): none of its
    questions may be a training, first-held-out or TEST2 question, nor fit one of their frames; STORE_WORDS2 must
    pass check_disjoint and fit no TEST2 or TEST3 frame."""
    import re

    import offdomain_questions as od

    test3 = od.test3_questions()
    assert len(test3) == 76 and sum(q["lang"] == "en" for q in test3) == 40 and sum(q["store_word"] for q in test3) == 14
    more = broad_questions(more_store_words=True)
    assert len(more) - len(broad_questions()) == 70
    bp.check_disjoint(more)
    train = more + bp.questions(bp.TRAIN_EN, "en") + bp.questions(bp.TRAIN_ZH, "zh")
    others = {q["q"] for q in train + bp.questions(bp.HELD_EN, "en") + bp.questions(bp.HELD_ZH, "zh")
              + od.test2_questions()}
    assert not others & {q["q"] for q in test3}
    for wording, _ in od.TEST3_EN + od.TEST3_ZH + od.TEST2_EN + od.TEST2_ZH:
        frame = re.escape(wording).replace(re.escape("{}"), ".*")
        assert not [q for q in {q["q"] for q in train} if re.fullmatch(frame, q)], wording
    for wording, _ in od.TEST3_EN + od.TEST3_ZH:
        frame = re.escape(wording).replace(re.escape("{}"), ".*")
        assert not [q for q in others if re.fullmatch(frame, q)], wording
    bp.check_disjoint(test3, strict=False)


@pytest.mark.parametrize("train_set,count", [("broad", 687), ("broad-no-store-words", 621),
                                             ("broad-more-store-words", 757), ("narrow", 121)])
def test_train_set_flag_chooses_the_off_domain_questions(train_set, count):
    rows = bp.off_domain_training(train_set)
    assert len(rows) == count
    assert ("What time zone is Hawaii in?" in {q["q"] for q in rows}) == (train_set == "broad-more-store-words")
