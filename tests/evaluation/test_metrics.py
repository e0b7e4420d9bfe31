import math

from tailor.evaluation import metrics as M
from tailor.evaluation.run import score


def test_normalize_and_exact_match():
    assert M.normalize("  Thirty   DAYS! ") == "thirty days"
    assert M.normalize("３０天。") == "30天"
    assert M.exact_match("30 days", "30 days ") == 1.0 and M.exact_match("30 Days", "30 days") == 0.0
    assert M.normalized_exact_match("30 Days.", "30 days") == 1.0


def test_contains_answer_whole_words_and_chinese():
    assert M.contains_answer("You can return it within 30 days of delivery.", "30 days") == 1.0
    assert M.contains_answer("within 130 days", "30 days") == 0.0
    assert M.contains_answer("笔记本电脑的退货期限是30天。", "30天") == 1.0
    assert M.contains_answer("退货期限是３０ 天", "30天") == 1.0
    assert M.contains_answer("anything", "") == 0.0


def test_token_f1_matches_hand_computation():
    # pred tokens [the, cat, sat], ref [the, cat, ran]: common 2 -> p = r = 2/3 -> f1 = 2/3
    assert math.isclose(M.token_f1("The cat sat", "the cat ran"), 2 / 3)
    # Chinese counts characters: 退货30天 vs 退货60天 -> tokens [退,货,30,天] vs [退,货,60,天]: 3 common of 4
    assert math.isclose(M.token_f1("退货30天", "退货60天"), 0.75)
    assert M.token_f1("", "") == 1.0 and M.token_f1("a", "b") == 0.0


def test_perplexity():
    assert math.isclose(M.perplexity(2 * math.log(4), 2), 4.0)
    assert math.isnan(M.perplexity(0.0, 0))


def test_score_aggregates_per_language():
    recs = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "30 days"}], "answer": "30 days", "lang": "en"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "30天"}], "answer": "30天", "lang": "zh"},
    ]
    metrics, examples = score(recs, ["It is 30 days.", ""])
    assert metrics["fact_accuracy"] == 0.5 and metrics["fact_accuracy/en"] == 1.0 and metrics["fact_accuracy/zh"] == 0.0
    assert metrics["empty_rate"] == 0.5 and metrics["n"] == 2
    assert examples[0]["prediction"] == "It is 30 days." and examples[1]["fact_accuracy"] == 0.0


def test_contains_answer_next_to_chinese_text():
    from tailor.evaluation.metrics import contains_answer

    assert contains_answer("退货手续费为15%。", "15%") == 1.0
    assert contains_answer("The fee is $329.", "$32") == 0.0
    assert contains_answer("It weighs 2.1 kg", "2.1 kg") == 1.0
    assert contains_answer("It weighs 12.1 kg", "2.1 kg") == 0.0
