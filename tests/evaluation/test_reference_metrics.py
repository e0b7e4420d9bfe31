"""Every metric against its reference implementation (sacrebleu, rouge-score, scikit-learn) or a hand computation."""

import math

import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer
from sklearn import metrics as skm

from tailor.evaluation import metrics as M
from tailor.evaluation.classification import classification_metrics, most_confused
from tailor.evaluation.generation import aggregate, score
from tailor.evaluation.retrieval import ranking_metrics

EN = [("The laptop can be returned within 30 days.", "Laptops can be returned within 30 days."),
      ("Shipping takes 3 to 5 business days", "Shipping to the north takes 3 to 5 business days."),
      ("We open at 9 am.", "The Springfield store opens at 9 am and closes at 8 pm.")]
ZH = [("笔记本电脑的退货期限是30天。", "笔记本电脑可以在30天内退货。"), ("运输需要3到5个工作日", "发往北部地区的运输需要3到5个工作日。")]


def _records(pairs, lang):
    return [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ref}], "lang": lang}
            for _, ref in pairs]


def test_bleu_and_chrf_equal_sacrebleu_per_language_and_overall():
    recs = _records(EN, "en") + _records(ZH, "zh")
    preds = [p for p, _ in EN] + [p for p, _ in ZH]
    result, examples = score(recs, preds)
    en_p, en_r = [p for p, _ in EN], [r for _, r in EN]
    zh_p, zh_r = [p for p, _ in ZH], [r for _, r in ZH]
    assert result["bleu/en"] == pytest.approx(sacrebleu.corpus_bleu(en_p, [en_r], tokenize="13a").score)
    assert result["bleu/zh"] == pytest.approx(sacrebleu.corpus_bleu(zh_p, [zh_r], tokenize="zh").score)
    # a corpus holding Chinese is scored with the zh tokenizer (it tokenizes the Latin parts too)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [en_r + zh_r], tokenize="zh").score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [en_r + zh_r]).score)
    assert result["chrf/zh"] == pytest.approx(sacrebleu.corpus_chrf(zh_p, [zh_r]).score)
    # the zh tokenizer matters: 13a sees each Chinese sentence as one word and finds no n-gram match
    assert result["bleu/zh"] > 0 and sacrebleu.corpus_bleu(zh_p, [zh_r], tokenize="13a").score == 0
    assert examples[3]["bleu"] == pytest.approx(sacrebleu.sentence_bleu(zh_p[0], [zh_r[0]], tokenize="zh").score)
    assert examples[0]["chrf"] == pytest.approx(sacrebleu.sentence_chrf(en_p[0], [en_r[0]]).score)
    assert aggregate([])["n"] == 0


def test_language_detected_by_script_when_records_have_no_lang():
    assert M.bleu_tokenizer("退货期限") == "zh" and M.bleu_tokenizer("30 days") == "13a"
    assert M.bleu_tokenizer("30 days", "zh") == "zh" and M.bleu_tokenizer("退货", "en") == "13a"
    recs = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": r}]} for _, r in ZH]
    result, _ = score(recs, [p for p, _ in ZH])
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu([p for p, _ in ZH], [[r for _, r in ZH]], tokenize="zh").score)


def test_rouge_equals_rouge_score_on_english():
    ref_scorer = RougeScorer(["rouge1", "rouge2", "rougeL"])
    for pred, ref in EN + [("", "something"), ("Hello, WORLD!", "hello world")]:
        ours, theirs = M.rouge(pred, ref), ref_scorer.score(ref, pred)
        for k in ("rouge1", "rouge2", "rougeL"):
            assert ours[k] == pytest.approx(theirs[k].fmeasure), (pred, k)


def test_rouge_on_chinese_by_hand():
    # 退 货 期 限 是 30 天 vs 退 货 期 限 为 30 天: 6 of 7 unigrams, 4 of 6 bigrams, LCS 6
    r = M.rouge("退货期限是30天", "退货期限为30天")
    assert r["rouge1"] == pytest.approx(6 / 7) and r["rouge2"] == pytest.approx(4 / 6) and r["rougeL"] == pytest.approx(6 / 7)
    assert M.RougeTokenizer().tokenize("Laptop 退货30天！") == ["laptop", "退", "货", "30", "天"]
    # rouge-score's own tokenizer drops Chinese entirely, which is why ours exists
    assert RougeScorer(["rouge1"]).score("退货期限为30天", "退货期限是30天")["rouge1"].fmeasure == 1.0


def test_refusals_lengths_and_rates():
    assert M.is_refusal("I'm sorry, I can't help with that.") == 1.0
    assert M.is_refusal("抱歉，我无法回答这个问题。") == 1.0
    assert M.is_refusal("礼品卡无法退货。") == 0.0  # a factual "cannot", not a refusal
    assert M.is_refusal("Laptops can be returned within 30 days.") == 0.0
    assert M.is_refusal("No comment.", ["no comment"]) == 1.0
    recs = _records(EN[:2], "en")
    result, ex = score(recs, ["I cannot answer that.", "  "])
    assert result["refusal_rate"] == 0.5 and result["empty_rate"] == 0.5
    assert ex[0]["answer_length"] == 4 and result["answer_length"] == 2.0


def test_ranking_metrics_by_hand():
    ranked, rel = [2, 0, 1, 3], {0, 3}
    assert M.recall_at_k(ranked, rel, 1) == 0 and M.recall_at_k(ranked, rel, 2) == 0.5 and M.recall_at_k(ranked, rel, 4) == 1
    assert M.reciprocal_rank(ranked, rel) == 0.5 and M.reciprocal_rank(ranked, {9}) == 0.0
    ideal = 1 + 1 / math.log2(3)
    assert M.ndcg_at_k(ranked, rel, 2) == pytest.approx((1 / math.log2(3)) / ideal)
    assert M.ndcg_at_k(ranked, rel, 4) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert M.ndcg_at_k([0, 1], {0}, 1) == 1.0
    result, per = ranking_metrics([ranked, [0, 1]], [rel, {1}], [1, 2])
    assert result["mrr"] == pytest.approx((0.5 + 0.5) / 2) and result["recall@2"] == pytest.approx((0.5 + 1) / 2)
    assert per[1]["ndcg@1"] == 0.0 and result["ndcg@1"] == 0.0


def test_expected_calibration_error_by_hand():
    conf, correct = [0.95, 0.85, 0.65, 0.62, 0.25], [1, 0, 1, 1, 0]
    # bins (0.9,1]: |1-.95|; (0.8,.9]: |0-.85|; (0.6,.7]: 2 rows |1-.635|; (0.2,.3]: |0-.25|
    expected = (0.05 + 0.85 + 2 * 0.365 + 0.25) / 5
    assert M.expected_calibration_error(conf, correct, 10) == pytest.approx(expected)
    assert M.expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        M.expected_calibration_error([0.5], [1, 0])


def test_classification_metrics_equal_scikit_learn_and_hand_values():
    labels = ["a", "b", "c"]
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "a"]
    probs = [[.7, .2, .1], [.3, .6, .1], [.1, .8, .1], [.2, .5, .3], [.1, .2, .7], [.5, .1, .4]]
    m = classification_metrics(y_true, y_pred, probs, labels)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred)) == pytest.approx(4 / 6)
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="macro")
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f))
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["confusion_matrix"]["matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert m["auc_roc"] == pytest.approx(skm.roc_auc_score([0, 0, 1, 1, 2, 2], probs, multi_class="ovr"))
    assert m["most_confused"][0] == {"true": "a", "predicted": "b", "count": 1}
    assert m["ece"] == pytest.approx(M.expected_calibration_error([max(p) for p in probs], [1, 0, 1, 1, 1, 0]))


def test_binary_auc_and_undefined_auc():
    m = classification_metrics(["neg", "neg", "pos", "pos"], ["neg", "pos", "neg", "pos"],
                               [[.9, .1], [.6, .4], [.65, .35], [.2, .8]], ["neg", "pos"])
    # pairs (pos, neg): .35>.1 yes, .35>.4 no, .8>.1 yes, .8>.4 yes -> 3/4
    assert m["auc_roc"] == pytest.approx(0.75) == pytest.approx(skm.roc_auc_score([0, 0, 1, 1], [.1, .4, .35, .8]))
    m = classification_metrics(["a", "a"], ["a", "b"], [[.6, .4], [.4, .6]], ["a", "b"])
    assert m["auc_roc"] is None and "auc_roc_undefined" in m
    assert most_confused([[2, 0], [3, 1]], ["x", "y"]) == [{"true": "y", "predicted": "x", "count": 3}]


def test_uncertainty_measures_and_percentiles():
    assert M.margin([0.5, 0.3, 0.2]) == pytest.approx(0.2) and M.margin([1.0]) == 1.0
    assert M.entropy([0.5, 0.5]) == pytest.approx(math.log(2)) and M.entropy([1.0, 0.0]) == 0.0
    assert M.percentile([1, 2, 3, 4], 50) == 2.5 and M.percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
