"""The classification task: a causal LM picks a label by how likely it finds each label as its answer.

Each {"text", "label"} row becomes a user turn (`eval.classification_template`) rendered by the chat
template, and every label of the label set is scored as the assistant's answer (label tokens plus
end-of-turn, exactly the tokens SFT would train on). The softmax of the per-label total
log-probabilities gives a probability over the label set. Metrics come from scikit-learn:
accuracy, precision/recall/F1 (macro and per class), AUC-ROC (binary, or one-vs-rest macro for
more classes) and the confusion matrix; plus expected calibration error (10 bins) and the most
confused class pairs.

A sequence classifier (a `...ForSequenceClassification` model, or a peft adapter on one, as `tailor train` with
train.objective=classification makes) is scored by its head instead: the softmax of its logits over its own label
set (config.id2label), with the same metrics.
"""

from __future__ import annotations

import math
from pathlib import Path

from tailor.config import EvalConfig, SourceConfig
from tailor.errors import TailorError
from tailor.evaluation import metrics as M
from tailor.evaluation.scoring import encode_turn, pad_id, sequence_logprobs
# The training stage reports the same metrics on its validation data and encodes rows the same way.
from tailor.training.metrics import classification_metrics, encode_texts, most_confused  # noqa: F401


def load_rows(paths: list[str], max_examples: int | None) -> list[dict]:
    """{"text", "label", "where"} rows; a row without a usable text or label is an error naming file and line."""
    from tailor.data.loading import iter_source
    from tailor.data.records import StepReport

    rows: list[dict] = []
    try:
        for p in paths:
            for rec in iter_source(SourceConfig(path=str(p), format="classification"), "raise", StepReport("load")):
                rows.append({"text": rec["text"], "label": str(rec["label"]), "where": rec["where"]})
    except TailorError as exc:  # the loader's fix talks about data.on_error, which evaluation does not have
        raise TailorError(exc.what, where=exc.where, fix='give every row a non-empty "text" and a string or integer "label"') from None
    if not rows:
        raise TailorError(f"no classification rows in {', '.join(map(str, paths))}", fix='write rows like {"text": "...", "label": "..."}')
    return rows[:max_examples] if max_examples else rows


def label_set(rows: list[dict], cfg: EvalConfig) -> list[str]:
    """eval.labels (checked against the data) or the labels found in the data, sorted."""
    labels = [str(x) for x in cfg.labels] if cfg.labels else sorted({r["label"] for r in rows})
    known = set(labels)
    for r in rows:
        if r["label"] not in known:
            raise TailorError(f"label '{r['label']}' is not in eval.labels {labels}", where=r["where"],
                              fix="add it to eval.labels, or leave eval.labels unset to use the labels in the data")
    if len(labels) < 2:
        raise TailorError(f"classification needs at least 2 labels, found {labels}", where="eval.labels / the data",
                          fix="list the label set in eval.labels, e.g. eval.labels=[positive,negative]")
    return labels


def render_prompt(template: str, text: str, labels: list[str]) -> str:
    """The user turn for one row: {text} and {labels} filled in (str.replace: the text may hold braces)."""
    return template.replace("{labels}", ", ".join(labels)).replace("{text}", text)


def label_probabilities(model, tokenizer, rows: list[dict], labels: list[str], cfg: EvalConfig) -> tuple[list[list[float]], int]:
    """Per row, the probability of each label (softmax of total label log-probs); and how many inputs were cut."""
    encoded = [encode_turn(tokenizer, render_prompt(cfg.classification_template, r["text"], labels), lab, cfg.max_length)
               for r in rows for lab in labels]
    scores = sequence_logprobs(model, encoded, pad_id(tokenizer), cfg.batch_size)
    probs = []
    for i in range(len(rows)):
        logps = [scores[i * len(labels) + j][0] for j in range(len(labels))]
        top = max(logps)
        exp = [math.exp(x - top) for x in logps]
        probs.append([e / sum(exp) for e in exp])
    return probs, sum(e["truncated"] for e in encoded[::len(labels)])


def is_classifier(model) -> bool:
    """True for a sequence-classification model (or a peft adapter on one): its head scores the labels."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


def head_label_set(model, rows: list[dict], cfg: EvalConfig) -> list[str]:
    """A classifier's labels in class-id order; every row's label must be one of them."""
    c = model.config
    labels = [str(c.id2label[i]) for i in range(c.num_labels)]
    if cfg.labels and set(map(str, cfg.labels)) != set(labels):
        raise TailorError(f"eval.labels {list(cfg.labels)} differ from the classifier's labels {labels}", where="eval.labels",
                          fix="leave eval.labels unset: a classifier is scored over the labels it was trained on")
    known = set(labels)
    for r in rows:
        if r["label"] not in known:
            raise TailorError(f"label '{r['label']}' is not one of the classifier's labels {labels}", where=r["where"],
                              fix="fix the row's label, or evaluate a classifier trained with that label")
    return labels


def head_probabilities(model, tokenizer, rows: list[dict], cfg: EvalConfig) -> tuple[list[list[float]], int]:
    """Per row, the softmax of a classifier's logits (label order = its id2label); and how many inputs were cut."""
    import torch

    ids, truncated = encode_texts(tokenizer, [r["text"] for r in rows], cfg.max_length)
    # The head reads the last token that is not the config's pad id, so batches are padded with exactly that id
    # (without one, rows go one at a time).
    pad = model.config.pad_token_id
    size = cfg.batch_size if pad is not None else 1
    device = next(model.parameters()).device
    probs: list[list[float]] = []
    with torch.no_grad():
        for i in range(0, len(ids), size):
            batch = ids[i:i + size]
            width = max(len(x) for x in batch)
            x = torch.full((len(batch), width), pad if pad is not None else 0, dtype=torch.long)
            mask = torch.zeros_like(x)
            for j, row in enumerate(batch):
                x[j, :len(row)] = torch.tensor(row)
                mask[j, :len(row)] = 1
            logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
            probs.extend(torch.softmax(logits.float(), dim=-1).tolist())
    return probs, truncated


def evaluate(model, tokenizer, rows: list[dict], cfg: EvalConfig) -> tuple[dict, list[dict]]:
    """Metrics and per-example rows for the classification task."""
    if is_classifier(model):
        labels = head_label_set(model, rows, cfg)
        probs, truncated = head_probabilities(model, tokenizer, rows, cfg)
    else:
        labels = label_set(rows, cfg)
        probs, truncated = label_probabilities(model, tokenizer, rows, labels, cfg)
    y_true = [r["label"] for r in rows]
    y_pred = [labels[max(range(len(labels)), key=lambda j: p[j])] for p in probs]
    result = {"task": "classification", "scored_by": "head" if is_classifier(model) else "label likelihood",
              **classification_metrics(y_true, y_pred, probs, labels), "truncated": truncated}
    examples = []
    for r, p, pred in zip(rows, probs, y_pred):
        examples.append({"where": r["where"], "text": r["text"], "label": r["label"], "predicted": pred,
                         "correct": float(pred == r["label"]), "prob_label": p[labels.index(r["label"])],
                         "probabilities": dict(zip(labels, p)), "margin": M.margin(p), "entropy": M.entropy(p)})
    return result, examples


def worst(examples: list[dict], k: int) -> list[dict]:
    """The k rows whose true label got the lowest probability."""
    order = sorted(range(len(examples)), key=lambda i: (examples[i]["prob_label"], i))
    return [{"index": i, **{key: examples[i][key] for key in ("where", "text", "label", "predicted", "prob_label")}}
            for i in order[:k]]


def uncertain(examples: list[dict], k: int, how: str) -> list[dict]:
    """The k rows the model is least sure about: smallest top-2 margin, or largest entropy."""
    key = (lambda i: (examples[i]["margin"], i)) if how == "margin" else (lambda i: (-examples[i]["entropy"], i))
    return [{"text": examples[i]["text"], "label": examples[i]["label"], "suggested_label": examples[i]["predicted"],
             "probabilities": examples[i]["probabilities"], how: examples[i][how], "where": examples[i]["where"]}
            for i in sorted(range(len(examples)), key=key)[:k]]


def plot_confusion(matrix: list[list[int]], labels: list[str], path: str | Path) -> Path:
    """The confusion matrix as a PNG (rows = true label, columns = predicted), counts in the cells."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = 1.2 + 0.6 * len(labels)
    fig = Figure(figsize=(size + 1.5, size))
    FigureCanvasAgg(fig)  # no pyplot: no global state, no display needed
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > top / 2 else "black")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
