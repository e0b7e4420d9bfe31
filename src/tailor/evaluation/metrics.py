"""Metrics that work for English and Chinese alike: answers, corpus scores, rankings, calibration.

Chinese has no spaces, so token-level comparisons split CJK text into characters and other text
into lower-cased words. BLEU and chrF come from sacrebleu (its `zh` tokenizer for Chinese, `13a`
otherwise) and ROUGE from rouge-score with a tokenizer that keeps Chinese characters, so the
numbers are the ones those libraries print. Scales: BLEU and chrF 0-100 (as sacrebleu reports
them, and as papers quote them); every other score 0-1.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Sequence

# ECE lives with the classification metrics the training stage reports on validation; re-exported for evaluation.
from tailor.training.metrics import expected_calibration_error  # noqa: F401

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
_PUNCT = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】…—·")


def normalize(text: str) -> str:
    """NFKC, lower case, no punctuation, single spaces (full-width forms fold to ASCII)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Words for Latin text, single characters for CJK."""
    out: list[str] = []
    for word in normalize(text).split():
        buf = ""
        for ch in word:
            if _CJK.match(ch):
                if buf:
                    out.append(buf)
                    buf = ""
                out.append(ch)
            else:
                buf += ch
        if buf:
            out.append(buf)
    return out


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def normalized_exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def contains_answer(prediction: str, answer: str) -> float:
    """1.0 when the normalized answer (e.g. the fact '30 days') occurs in the normalized prediction."""
    ans = normalize(answer)
    pred = normalize(prediction)
    if not ans:
        return 0.0
    if _CJK.search(ans):
        return float(ans.replace(" ", "") in pred.replace(" ", ""))
    # Boundaries are Latin letters and digits only: "15%" must match in "手续费为15%" ("为" is \w too),
    # but "$32" must not match inside "$329".
    return float(re.search(rf"(?<![0-9a-z]){re.escape(ans)}(?![0-9a-z])", pred) is not None)


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred and not ref:
        return 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp of the token-weighted mean negative log-likelihood."""
    if total_tokens == 0:
        return float("nan")
    return math.exp(min(total_nll / total_tokens, 50.0))


# ---------------------------------------------------------------------------------------------
# Corpus scores: BLEU, chrF (sacrebleu) and ROUGE (rouge-score)

_IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_cjk(text: str) -> bool:
    """True when the text holds Chinese characters (ideographs, not just full-width punctuation)."""
    return _IDEOGRAPH.search(text) is not None


def bleu_tokenizer(reference: str, lang: str | None = None) -> str:
    """sacrebleu tokenizer for a reference: `zh` for Chinese (by `lang`, else by script), `13a` otherwise."""
    if lang:
        return "zh" if lang.lower().startswith("zh") else "13a"
    return "zh" if has_cjk(reference) else "13a"


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU (0-100) with one reference per prediction."""
    from sacrebleu.metrics import BLEU

    return float(BLEU(tokenize=tokenize).corpus_score(list(predictions), [list(references)]).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0-100; character n-grams, so no word tokenizer is involved)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(list(predictions), [list(references)]).score)


def sentence_bleu(prediction: str, reference: str, tokenize: str = "13a") -> float:
    """Smoothed sentence BLEU (0-100): a per-example score; corpus BLEU is not its mean."""
    return float(_sentence_bleu(tokenize).sentence_score(prediction, [reference]).score)


@lru_cache(maxsize=4)
def _sentence_bleu(tokenize: str):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, effective_order=True)


def sentence_chrf(prediction: str, reference: str) -> float:
    """Sentence chrF (0-100)."""
    return float(_chrf().sentence_score(prediction, [reference]).score)


@lru_cache(maxsize=1)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


class RougeTokenizer:
    """rouge-score's tokenizer, except that each Chinese character is a token.

    rouge-score's default keeps only [a-z0-9] and so scores Chinese text as empty. Here non-CJK text
    goes through the default rule (lower case, non-alphanumerics are separators, no stemming), so
    English scores equal rouge-score's own; text is NFKC-normalized first (full-width digits count).
    """

    def tokenize(self, text: str) -> list[str]:
        out: list[str] = []
        for piece in re.split(f"({_IDEOGRAPH.pattern})", unicodedata.normalize("NFKC", text)):
            if _IDEOGRAPH.fullmatch(piece):
                out.append(piece)
            elif piece:
                out += [t for t in _NON_ALNUM.sub(" ", piece.lower()).split() if t]
        return out


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), tokenizer=RougeTokenizer())


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (0-1) of one prediction against one reference (Chinese-aware)."""
    scores = _rouge_scorer().score(reference, prediction)
    return {k: float(scores[k].fmeasure) for k in ROUGE_TYPES}


# Replies that decline rather than answer. Chinese patterns name the speaker or the act of answering
# ("我无法", "无法回答"), because a bare 无法 ("cannot") is also how a factual answer says
# "gift cards cannot be returned".
REFUSAL_PATTERNS = (
    r"\bI(?: a|')m (?:sorry|afraid|unable|not able)\b", r"\bI am (?:sorry|afraid|unable|not able)\b",
    r"\bI can(?:no|')t\b", r"\bI (?:do not|don't) (?:know|have (?:that|this|the|any) information)\b",
    r"\bI'?m not sure\b", r"\bas an AI\b", r"\bunable to (?:help|answer|assist|provide)\b", r"\bSorry\b",
    "抱歉", "对不起", "不好意思", "我无法", "我不能", "我不知道", "我不确定", "无法回答", "无法提供", "无法帮",
    "不能回答", "作为(?:一个)?(?:AI|人工智能)",
)


@lru_cache(maxsize=8)
def _refusal_re(extra: tuple[str, ...] = ()) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in (*REFUSAL_PATTERNS, *extra)), re.IGNORECASE)


def is_refusal(text: str, extra_patterns: Sequence[str] = ()) -> float:
    """1.0 when the answer declines (built-in English + Chinese patterns, plus `extra_patterns` regexes)."""
    return float(_refusal_re(tuple(extra_patterns)).search(text) is not None)


# ---------------------------------------------------------------------------------------------
# Rankings (binary relevance)


def recall_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Share of the relevant items found in the top k of `ranked` (item ids, best first)."""
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: Sequence[int], relevant: set[int]) -> float:
    """1 / rank of the first relevant item (0 when none is ranked)."""
    for i, item in enumerate(ranked):
        if item in relevant:
            return 1.0 / (i + 1)
    return 0.0


def ndcg_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Normalized discounted cumulative gain at k with gain 1 for relevant items, 1/log2(rank+1) discount."""
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


# ---------------------------------------------------------------------------------------------
# Probabilities: calibration and uncertainty


def margin(probs: Sequence[float]) -> float:
    """Top-1 minus top-2 probability (small = unsure)."""
    top = sorted(probs, reverse=True)
    return top[0] - (top[1] if len(top) > 1 else 0.0)


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy in nats (large = unsure)."""
    return -sum(p * math.log(p) for p in probs if p > 0)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation (numpy's default)."""
    import numpy as np

    return float(np.percentile(list(values), q)) if len(values) else float("nan")
