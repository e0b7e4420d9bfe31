"""Answer-level metrics that work for English and Chinese alike.

Chinese has no spaces, so token-level comparisons split CJK text into characters and other text
into lower-cased words.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter

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
    return float(re.search(rf"(?<![\w]){re.escape(ans)}(?![\w])", pred) is not None)


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
