"""Classification metrics the training stage reports on its validation data; the evaluation stage reuses them.

scikit-learn's accuracy, precision/recall/F1 (macro and per class), AUC-ROC and confusion matrix, plus expected
calibration error and the most confused class pairs; and the one way a classifier's input text becomes token
ids (training and evaluation must cut long texts alike).
"""

from __future__ import annotations

import math
from typing import Sequence


def encode_texts(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of each text as a classifier reads it (the tokenizer's special tokens, the first max_length tokens
    kept: the same as in training), and how many texts were cut."""
    full = tokenizer(texts, add_special_tokens=True)["input_ids"]
    long = [i for i, ids in enumerate(full) if len(ids) > max_length]
    if long:
        cut = tokenizer([texts[i] for i in long], add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
        for i, ids in zip(long, cut):
            full[i] = ids
    return full, len(long)


def classification_metrics(y_true: list[str], y_pred: list[str], probs: list[list[float]], labels: list[str]) -> dict:
    """scikit-learn's accuracy, macro and per-class precision/recall/F1, AUC-ROC and confusion matrix, plus ECE."""
    import numpy as np
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    pc, rc, fc, sc = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out = {"n": len(y_true), "accuracy": float(accuracy_score(y_true, y_pred)), "precision_macro": float(p),
           "recall_macro": float(r), "f1_macro": float(f)}
    out["per_class"] = {lab: {"precision": float(pc[i]), "recall": float(rc[i]), "f1": float(fc[i]), "support": int(sc[i])}
                        for i, lab in enumerate(labels)}
    scores = np.asarray(probs)
    idx = np.asarray([labels.index(y) for y in y_true])
    absent = [lab for lab in labels if lab not in set(y_true)]
    if absent:
        # One-vs-rest AUC needs positives and negatives of every class; say why it is missing.
        out["auc_roc"] = None
        out["auc_roc_undefined"] = f"no rows labelled {absent}: AUC-ROC needs every class among the true labels"
    elif len(labels) == 2:
        out["auc_roc"] = float(roc_auc_score(idx == 1, scores[:, 1]))
    else:
        out["auc_roc"] = float(roc_auc_score(idx, scores, multi_class="ovr", average="macro", labels=list(range(len(labels)))))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    out["confusion_matrix"] = {"labels": labels, "matrix": matrix.tolist()}
    confidences = [max(row) for row in probs]
    out["ece"] = expected_calibration_error(confidences, [float(t == p) for t, p in zip(y_true, y_pred)], 10)
    out["most_confused"] = most_confused(matrix.tolist(), labels)
    return out


def most_confused(matrix: list[list[int]], labels: list[str], top: int = 5) -> list[dict]:
    """Off-diagonal cells of the confusion matrix, largest first: which class was taken for which."""
    cells = [(matrix[i][j], i, j) for i in range(len(labels)) for j in range(len(labels)) if i != j and matrix[i][j]]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [{"true": labels[i], "predicted": labels[j], "count": n} for n, i, j in cells[:top]]


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[float], n_bins: int = 10) -> float:
    """ECE: sum over equal-width confidence bins of (bin share) x |accuracy - mean confidence|.

    Bin b holds confidences in ((b-1)/n, b/n]; confidence 0 falls in the first bin.
    """
    if len(confidences) != len(correct):
        raise ValueError("confidences and correct differ in length")
    n = len(confidences)
    if n == 0:
        return float("nan")
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    for i, c in enumerate(confidences):
        bins[min(n_bins - 1, max(0, math.ceil(c * n_bins) - 1))].append(i)
    ece = 0.0
    for members in bins:
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            conf = sum(confidences[i] for i in members) / len(members)
            ece += len(members) / n * abs(acc - conf)
    return ece
