"""Sequence-classification fine-tuning (`train.objective: classification`): a label head on the base model.

The base (Llama, Qwen2, DeepSeek-V3, ...) is loaded as transformers' `...ForSequenceClassification`: the same
backbone with a new linear `score` head read at the last non-pad token (so the config's pad_token_id must be set;
it is set to the tokenizer's). Rows are {"text", "label"}; labels map to class ids in a fixed order (train.labels,
or the labels of the training rows sorted) that is saved as id2label/label2id in the model config, so the result
loads with plain `AutoModelForSequenceClassification` and `pipeline("text-classification")` names its labels.

The loss is cross-entropy with optional class weights (train.class_weights: none, balanced = scikit-learn's
n_rows / (n_classes * rows of the class), or one weight per label) and train.label_smoothing. Validation reports
the classification metrics `tailor eval` reports too (tailor.training.metrics: accuracy, macro precision/recall/F1
as eval_f1, AUC-ROC, ECE, per-class recall and F1), so early stopping can watch eval_f1.

Everything else (adapters, optimizers, schedules, EMA, FGM, checkpoints, resume) is the training stage's own:
the recipe (tailor.training.recipes.classification) composes the shared phases with what this module defines. With a peft adapter, peft's SEQ_CLS task type trains and
saves the head with the adapter (modules_to_save), and the classifier's config goes beside it (HEAD_FILE).
"""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from tailor.config import Recipe
from tailor.errors import TailorError
from tailor.models.loading import HEAD_FILE
from tailor.training.trainer import TailorTrainer

log = logging.getLogger("tailor")


# ---------------------------------------------------------------------------------------------
# Rows and labels


def read_rows(recipe: Recipe):
    """(train rows, validation rows, LoadReport): {"text", "label", "where"} rows from data.train/data.eval files,
    a prepared directory or data.sources; validation is data.eval, the prepared eval split, or a stratified
    data.val_ratio hold-out. A row without a usable text or label stops the run or is counted (data.on_error)."""
    from tailor.data.loading import LoadReport
    from tailor.data.prepare import is_prepared_dir, open_prepared

    d = recipe.data
    report = LoadReport()
    if d.sources or (len(d.train) == 1 and is_prepared_dir(d.train[0])):
        from tailor.data import prepare

        prepared = prepare.run(recipe) if d.sources and not d.train else open_prepared(d.train[0])
        train = _labelled(prepared.records("train"), report, str(prepared.path))
        val = _labelled(prepared.records("eval"), LoadReport(), str(prepared.path))
    else:
        if not d.train:
            raise TailorError("no training data given", where="data.train / data.sources",
                              fix='set data.train to .jsonl/.csv files of {"text": ..., "label": ...} rows')
        train = _read_files(d.train, recipe, report)
        val = _read_files(d.eval, recipe, LoadReport()) if d.eval else None
        if val is None:
            train, val = _hold_out(train, d.val_ratio, recipe.train.seed)
    if not train:
        reasons = "; ".join(f"{n}x {r} (e.g. {report.examples[r]})" for r, n in report.skipped.most_common(3))
        raise TailorError(f"no classification rows to train on: {reasons or 'the files are empty'}",
                          where="data.train", fix='write rows like {"text": "...", "label": "..."}')
    return train, val or [], report


def _read_files(paths: list[str], recipe: Recipe, report):
    from tailor.data.loading import iter_files

    rows = []
    for rec in iter_files(paths, "classification", recipe.data.text_field, report, recipe.data.on_error):
        rows.append({"text": rec["text"], "label": str(rec["label"]), "where": rec["where"]})
        report.kept += 1
    return rows


def _labelled(records: list[dict], report, where: str) -> list[dict]:
    rows = []
    for r in records:
        report.read += 1
        if r.get("label") is None or not isinstance(r.get("text"), str):
            report.skip("not a {text, label} row (train.objective=classification)", r.get("where", where))
            continue
        report.kept += 1
        rows.append({"text": r["text"], "label": str(r["label"]), "where": r.get("where", where)})
    return rows


def _hold_out(rows: list[dict], ratio: float, seed: int):
    """A validation share with the class proportions of the whole (the data stage's stratified split), so a
    rare class is in it too when it has rows to spare."""
    from tailor.config import SplitConfig
    from tailor.data.records import PrepareReport
    from tailor.data.split import split_records

    if ratio <= 0 or len(rows) < 2:
        return rows, []
    parts = split_records(rows, SplitConfig(eval=ratio, stratify_by="label", seed=seed), PrepareReport())
    return parts["train"], parts["eval"]


def natural_order(labels) -> list[str]:
    """Labels sorted: numerically when all are integers ("2" before "10"), else as text."""
    labels = set(labels)
    if all(re.fullmatch(r"-?\d+", x) for x in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def label_set(declared: list[str] | None, train: list[dict], val: list[dict],
              model_labels: list[str] | None = None) -> list[str]:
    """The labels in class-id order: a classifier's own (model.path), train.labels, or those of the training rows.

    Every training and validation row's label must be in it, and it needs at least 2 labels.
    """
    if model_labels is not None:
        if declared is not None and declared != model_labels:
            raise TailorError(f"train.labels {declared} differ from the labels of the classifier in model.path "
                              f"{model_labels}", where="train.labels",
                              fix="leave train.labels unset (the classifier's order is kept) or list them in that order")
        labels = model_labels
    else:
        labels = list(declared) if declared is not None else natural_order(r["label"] for r in train)
    known = set(labels)
    source = "the classifier in model.path" if model_labels is not None else "train.labels" if declared is not None else None
    for r in (*train, *val):
        if r["label"] not in known:
            if source is None:  # only a validation row can miss a label taken from the training rows
                raise TailorError(f"validation label '{r['label']}' never occurs in the training data {labels}",
                                  where=r["where"],
                                  fix="add training rows with that label, or set train.labels to the full label set")
            raise TailorError(f"label '{r['label']}' is not among the labels of {source}: {labels}", where=r["where"],
                              fix="fix the row's label, or add it to train.labels" if model_labels is None
                              else "fix the row's label (a trained classifier's label set is fixed)")
    if len(labels) < 2:
        raise TailorError(f"classification needs at least 2 labels, found {labels}", where="train.labels / data.train",
                          fix="give rows of at least two labels, or list the label set in train.labels")
    missing = [lab for lab in labels if lab not in {r["label"] for r in train}]
    if missing:
        log.warning("labels with no training rows (the head never sees them): %s", missing)
    return labels


def class_weights(setting, labels: list[str], train: list[dict]) -> list[float] | None:
    """Per-class loss weights in label order: None (train.class_weights=none), scikit-learn's balanced
    weights n_rows / (n_classes * rows of the class), or the listed weights (one per label)."""
    if setting == "none":
        return None
    if setting == "balanced":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        counts = Counter(r["label"] for r in train)
        absent = [lab for lab in labels if not counts[lab]]
        if absent:
            raise TailorError(f"balanced class weights need training rows of every label; none for {absent}",
                              where="train.class_weights",
                              fix="add rows of those labels, drop them from train.labels, or list the weights")
        y = np.asarray([labels.index(r["label"]) for r in train])
        return [float(w) for w in compute_class_weight("balanced", classes=np.arange(len(labels)), y=y)]
    if len(setting) != len(labels):
        raise TailorError(f"train.class_weights has {len(setting)} weights but there are {len(labels)} labels",
                          where="train.class_weights", fix=f"give one weight per label, in this order: {labels}")
    return [float(w) for w in setting]


# ---------------------------------------------------------------------------------------------
# Loss, metrics, trainer


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over classes; with weights the weighted mean sum_i w[y_i] * CE_i / sum_i w[y_i] (torch's)."""
    if weights is not None:
        weights = weights.to(device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits.float(), labels, weight=weights, label_smoothing=label_smoothing)


def metrics_function(labels: list[str]) -> Callable:
    """Trainer `compute_metrics`: the classification metrics (tailor.training.metrics) from the head's logits."""
    import numpy as np

    from tailor.training.metrics import classification_metrics

    def compute(pred) -> dict:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        logits = np.asarray(logits, dtype=np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        y_true = [labels[i] for i in np.asarray(pred.label_ids).reshape(-1)]
        y_pred = [labels[i] for i in probs.argmax(-1)]
        m = classification_metrics(y_true, y_pred, probs.tolist(), labels)
        out = {"accuracy": m["accuracy"], "f1": m["f1_macro"], "precision": m["precision_macro"],
               "recall": m["recall_macro"], "ece": m["ece"]}
        if m["auc_roc"] is not None:
            out["auc_roc"] = m["auc_roc"]
        for lab, pc in m["per_class"].items():
            out[f"recall_{lab}"], out[f"f1_{lab}"] = pc["recall"], pc["f1"]
        return out

    return compute


class ClassificationTrainer(TailorTrainer):
    """A Trainer whose loss is the (class-weighted, optionally smoothed) cross-entropy of the head's logits, with
    the classification metrics (tailor.training.metrics) on validation."""

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it by the accumulation steps
    loss_shifts_labels = False  # one class id per row: every label is a prediction target

    def __init__(self, *args, labels: list[str], class_weights: list[float] | None = None,
                 label_smoothing: float = 0.0, summary: dict | None = None, **kwargs):
        kwargs.setdefault("compute_metrics", metrics_function(labels))
        super().__init__(*args, **kwargs)
        self.labels = labels
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.label_smoothing = label_smoothing
        self.label_names = ["labels"]  # peft wrappers hide the forward signature the Trainer reads them from
        self._summary = dict(summary or {})
        self._evals: dict[str, dict] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        loss = weighted_cross_entropy(outputs.logits, labels, self.class_weights, self.label_smoothing)
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, *args, **kwargs):
        result = super().evaluate(*args, **kwargs)
        self._evals[kwargs.get("metric_key_prefix", "eval")] = result
        return result

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        self.save_extras(Path(output_dir or self.args.output_dir))

    def save_extras(self, folder: Path) -> None:
        """Next to a saved adapter, the head settings it needs to load (a full model has them in its config)."""
        write_head(self.model, folder)

    def summary_metrics(self) -> dict:
        """Labels, class weights, rows per label and the last validation metrics, for train_summary.json."""
        last = self._evals.get("eval", {})
        keep = {k: v for k, v in last.items() if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))}
        return {**self._summary, **keep}


def write_head(model, folder: Path) -> None:
    """Write the classifier's config (labels, head size, pad id) as HEAD_FILE beside a peft adapter of a classifier."""
    from peft import PeftModel

    if isinstance(model, PeftModel) and Path(folder, "adapter_config.json").is_file():
        base = model.get_base_model()
        config = copy.deepcopy(base.config)
        config.architectures = [type(base).__name__]  # still the causal LM's, as loaded from the base directory
        config.to_json_file(Path(folder, HEAD_FILE))
