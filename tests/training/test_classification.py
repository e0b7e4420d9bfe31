"""train.objective=classification: a label head on the base models, class weights, metrics, saving and evaluation."""

import json
import random

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainingArguments

from tailor.cli import main
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training.callbacks import read_metrics
from tailor.training import train as run

# Words the test tokenizer knows (they are in its corpus); the minority class is marked by one keyword.
NEUTRAL = ("the return window for laptops is days can be returned shipping to north region takes business store "
           "opens at am and closes on weekdays").split()
TEXTS = ["tents can be returned", "the store opens at 9 am", "shipping takes 2 days tents"]


def toy_rows(n: int, seed: int, every: int = 10, length: int = 5) -> list[dict]:
    """n texts of `length` neutral words; every `every`-th row is 'fraud' and holds the word 'tents' at a random
    place, the rest are 'ok' (90/10 by default)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(NEUTRAL) for _ in range(length)]
        fraud = i % every == 0
        if fraud:
            words.insert(rng.randrange(length + 1), "tents")
        rows.append({"text": " ".join(words), "label": "fraud" if fraud else "ok"})
    return rows


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def overrides(tmp_path, model_dir, train, *extra) -> list[str]:
    return [f"model.path={model_dir}", f"data.train=[{train}]", f"train.output_dir={tmp_path / 'run'}",
            "train.objective=classification", "adapter.method=full", "train.batch_size=16", "train.lr=1e-3",
            "train.warmup_ratio=0", "train.scheduler=constant", "train.logging_steps=1", "train.save_steps=1000",
            "data.max_length=32", *extra]


class Keep(TrainerCallback):
    """Keeps the trained model and a copy of the head's weights before training."""

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model
        self.head_before = _head_weight(model).detach().clone()


def _head_weight(model):
    score = model.get_base_model().score if hasattr(model, "get_base_model") else model.score
    # With a peft adapter the trained head is peft's copy (modules_to_save); the original stays as loaded.
    return score.modules_to_save["default"].weight if hasattr(score, "modules_to_save") else score.weight


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_balanced_class_weights_raise_minority_recall(tmp_path, llama_dir):
    from tailor.evaluation.run import run as evaluate

    train = write(tmp_path / "train.jsonl", toy_rows(300, 1))
    test = write(tmp_path / "test.jsonl", toy_rows(200, 2))
    recall, summary = {}, {}
    for weights in ("none", "balanced"):
        r = run(load_recipe(None, overrides(tmp_path / weights, llama_dir, train, "train.max_steps=10",
                                            f"train.class_weights={weights}")))
        summary[weights] = r.metrics
        recall[weights] = evaluate(r.final_dir, [str(test)], task="classification").metrics["per_class"]["fraud"]["recall"]
    # Same data, seed and steps: unweighted, the head learns "always ok"; balanced weights (5.0 for the 30 fraud
    # rows, 300 / (2 x 270) for the rest) make it find the keyword. Measured: recall 0.0 vs 0.8 (seeds 1, 7: 0.0
    # vs 0.75, 0.05 vs 0.95).
    assert recall["none"] <= 0.2
    assert recall["balanced"] >= recall["none"] + 0.4
    assert summary["balanced"]["class_weights"] == pytest.approx([5.0, 300 / (2 * 270)])
    assert summary["none"]["class_weights"] is None
    assert summary["balanced"]["labels"] == ["fraud", "ok"]


def test_the_loss_is_class_weighted_cross_entropy(tmp_path, llama_dir, tokenizer):
    from tailor.models.loading import load_classifier
    from tailor.training.classification import ClassificationTrainer, class_weights

    labels = ["a", "b", "c"]
    rows = [{"text": t, "label": lab} for t, lab in zip(["x"] * 6, "aaaabc")]
    weights = class_weights("balanced", labels, rows)
    assert weights == pytest.approx([6 / (3 * 4), 6 / (3 * 1), 6 / (3 * 1)])  # n_rows / (n_classes x rows of the class)
    model = load_classifier(llama_dir, num_labels=3, id2label=dict(enumerate(labels)), pad_token_id=tokenizer.pad_token_id)
    batch = dict(tokenizer(TEXTS, return_tensors="pt", padding=True))
    batch["labels"] = torch.tensor([0, 1, 2])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    losses = {}
    for name, w, smoothing in (("plain", None, 0.0), ("weighted", weights, 0.0), ("smoothed", weights, 0.2)):
        trainer = ClassificationTrainer(model=model, args=args, labels=labels, class_weights=w, label_smoothing=smoothing)
        losses[name] = trainer.compute_loss(model, batch).item()
    logits = _logits(model, tokenizer, TEXTS)
    nll = -torch.log_softmax(logits, -1)[torch.arange(3), batch["labels"]]
    w_y = torch.tensor(weights)[batch["labels"]]
    assert losses["plain"] == pytest.approx(nll.mean().item(), rel=1e-5)
    assert losses["weighted"] == pytest.approx(((w_y * nll).sum() / w_y.sum()).item(), rel=1e-5)
    assert abs(losses["smoothed"] - losses["weighted"]) > 1e-4


def test_saved_classifier_loads_in_plain_transformers_and_eval_uses_its_head(tmp_path, llama_dir, chat_file, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from tailor.models.loading import load_model

    train = write(tmp_path / "train.jsonl", toy_rows(120, 1))
    test = write(tmp_path / "test.jsonl", toy_rows(40, 2))
    r = run(load_recipe(None, overrides(tmp_path, llama_dir, train, f"data.eval=[{test}]", "train.max_steps=6",
                                        "train.eval_steps=2", "train.save_steps=2", "train.early_stopping_patience=5",
                                        "train.early_stopping_metric=eval_f1")))
    evals = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval_f1" in m][:3]  # then the final one
    assert [m["step"] for m in evals] == [2, 4, 6] and {"eval_accuracy", "eval_recall_fraud", "eval_auc_roc"} <= set(evals[0])
    state = json.loads(max((tmp_path / "run").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["best_metric"] == pytest.approx(max(m["eval_f1"] for m in evals))  # early stopping watched eval_f1
    assert r.metrics["eval_f1"] == pytest.approx(state["best_metric"])  # the best checkpoint is the final model

    model = AutoModelForSequenceClassification.from_pretrained(r.final_dir)
    tok = AutoTokenizer.from_pretrained(r.final_dir)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.id2label == {0: "fraud", 1: "ok"} and model.config.label2id == {"fraud": 0, "ok": 1}
    assert model.config.pad_token_id == tok.pad_token_id is not None
    logits = _logits(model, tok, TEXTS)
    clf = pipeline("text-classification", model=model, tokenizer=tok, device="cpu")
    assert [p["label"] for p in clf(TEXTS)] == [model.config.id2label[int(i)] for i in logits.argmax(-1)]

    out = tmp_path / "eval"
    assert main(["eval", str(r.final_dir), "--task", "classification", "--data", str(test), "--out", str(out)]) == 0
    result = json.loads((out / "eval_results.json").read_text())
    assert result["scored_by"] == "head" and 0 <= result["accuracy"] <= 1 and result["confusion_matrix"]["labels"] == ["fraud", "ok"]
    first = json.loads((out / "examples.jsonl").read_text().splitlines()[0])
    expected = torch.softmax(_logits(model, tok, [first["text"]]), -1)[0]
    assert [first["probabilities"]["fraud"], first["probabilities"]["ok"]] == pytest.approx(expected.tolist(), abs=1e-5)

    capsys.readouterr()
    assert main(["eval", str(r.final_dir), "--data", str(chat_file)]) == 2  # generation on a classifier
    assert "sequence classifier" in capsys.readouterr().err
    with pytest.raises(TailorError, match="sequence classifier"):
        load_model(r.final_dir)  # as a causal LM it would get a random LM head


@pytest.mark.parametrize("model_fixture,method", [("deepseek_dir", "lora"), ("qwen2_dir", "freeze"), ("llama_dir", "ia3")])
def test_head_trains_saves_and_reloads_with_identical_logits(tmp_path, request, tokenizer, model_fixture, method):
    from tailor.evaluation.run import run as evaluate
    from tailor.models.loading import HEAD_FILE, load_classifier

    base = request.getfixturevalue(model_fixture)
    train = write(tmp_path / "train.jsonl", [{**r, "label": r["label"].upper()} for r in toy_rows(64, 3, every=4)])
    keep = Keep()
    extra = ["adapter.freeze_last_n=1"] if method == "freeze" else []
    r = run(load_recipe(None, overrides(tmp_path, base, train, "train.max_steps=3", f"adapter.method={method}",
                                        "train.labels=[OK, FRAUD]", *extra)), callbacks=[keep])
    assert not torch.equal(_head_weight(keep.model), keep.head_before)  # the new head trained
    if method == "freeze":
        # Qwen2 ties its LM head to the embeddings; a classifier has no LM head, so the embeddings stay frozen.
        assert not keep.model.model.embed_tokens.weight.requires_grad
    trained = _logits(keep.model, tokenizer, TEXTS)
    reloaded = load_classifier(r.final_dir)
    assert type(reloaded.get_base_model() if method != "freeze" else reloaded).__name__.endswith("ForSequenceClassification")
    assert reloaded.config.id2label == {0: "OK", 1: "FRAUD"}  # train.labels fixes the class ids
    torch.testing.assert_close(_logits(reloaded, tokenizer, TEXTS), trained)
    if method != "freeze":
        from peft import PeftModel
        from transformers import AutoConfig, AutoModelForSequenceClassification

        weights = load_file(r.final_dir / "adapter_model.safetensors")
        assert any(".score." in k for k in weights)  # the head is saved with the adapter
        base_bytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))
        assert (r.final_dir / "adapter_model.safetensors").stat().st_size < base_bytes / 2
        config = AutoConfig.from_pretrained(r.final_dir / HEAD_FILE)  # plain transformers + peft, no tailor
        plain = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, config=config), r.final_dir)
        assert plain.config.id2label == {0: "OK", 1: "FRAUD"}
        torch.testing.assert_close(_logits(plain, tokenizer, TEXTS), trained)
    eval_file = write(tmp_path / "eval.jsonl", [{"text": t, "label": lab} for t, lab in zip(TEXTS, ["FRAUD", "OK", "FRAUD"])])
    m = evaluate(r.final_dir, [str(eval_file)], task="classification").metrics
    assert m["scored_by"] == "head" and m["n"] == 3
    assert m["confusion_matrix"]["labels"] == ["OK", "FRAUD"]
    if method != "freeze":  # base + --adapter gives the same scores
        m2 = evaluate(base, [str(eval_file)], adapter=r.final_dir, task="classification").metrics
        assert m2["accuracy"] == m["accuracy"] and m2["auc_roc"] == pytest.approx(m["auc_roc"])
        # tailor merge folds the adapter and its head into a plain classifier checkpoint
        from transformers import AutoModelForSequenceClassification

        from tailor.adapters.merge import merge, load_with_adapter
        from tailor.serving.server import _check_adapter_dir

        merged = merge(r.final_dir, tmp_path / "merged")
        plain_merged = AutoModelForSequenceClassification.from_pretrained(merged)
        assert plain_merged.config.id2label == {0: "OK", 1: "FRAUD"}
        torch.testing.assert_close(_logits(plain_merged, tokenizer, TEXTS), trained, rtol=1e-4, atol=1e-4)
        # and text generation paths refuse it instead of dropping the head
        with pytest.raises(TailorError, match="sequence-classification adapter"):
            load_with_adapter(r.final_dir)
        with pytest.raises(TailorError, match="sequence-classification adapter"):
            _check_adapter_dir("intent", r.final_dir)


def _write_recipe(tmp_path, model_dir, train):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(model_dir)}, "data": {"train": [str(train)]},
                                    "adapter": {"method": "full"},
                                    "train": {"objective": "classification", "output_dir": str(tmp_path / "run"), "max_steps": 1}}))
    return path


@pytest.mark.parametrize("extra,message", [
    (["train.class_weights=[1, 2, 3]"], "3 weights but there are 2 labels"),
    (["train.labels=[ok, spam]"], "label 'fraud' is not among the labels of train.labels"),
    (["train.labels=[fraud, ok, spam]", "train.class_weights=balanced"], "none for ['spam']"),
    (["train.class_weights=balanced", "train.objective=sft"], "apply to train.objective=classification only"),
    (["train.class_weights=[0, 0]"], "at least one above 0"),
    (["adapter.method=prompt"], "adapter.method=prompt"),
    (["data.packing=true"], "data.packing=True does not apply"),
    ("single", "at least 2 labels"),
    ("unseen", "validation label 'spam' never occurs in the training data"),
    ("no_label", "no classification rows"),
])
def test_bad_classification_settings_exit_2(tmp_path, llama_dir, capsys, extra, message):
    rows = toy_rows(20, 0)
    if extra == "single":
        rows, extra = [{**r, "label": "ok"} for r in rows], []
    elif extra == "unseen":
        extra = [f"data.eval=[{write(tmp_path / 'eval.jsonl', [{'text': 'tents', 'label': 'spam'}])}]"]
    elif extra == "no_label":
        rows, extra = [{"text": r["text"]} for r in rows], ["data.on_error=skip"]
    recipe = _write_recipe(tmp_path, llama_dir, write(tmp_path / "train.jsonl", rows))
    assert main(["train", str(recipe), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "final").exists()


def test_prepared_sources_with_a_stratified_split(tmp_path, llama_dir):
    train = write(tmp_path / "rows.jsonl", toy_rows(100, 5))
    r = run(load_recipe(None, overrides(tmp_path, llama_dir, train, "train.max_steps=1") + [
        "data.train=[]", f"data.sources=[{{path: {train}, format: classification}}]", "data.split.eval=0.2",
        "data.split.stratify_by=label", f"data.prepared_dir={tmp_path / 'prepared'}", "data.dedup.near=false"]))
    assert r.metrics["validation_rows"] == 20 and r.metrics["train_rows_per_label"] == {"fraud": 8, "ok": 72}
    assert r.metrics["data_report"]["kept"] == 80 and "eval_f1" in r.metrics


def test_label_order_holdout_and_weights_without_a_model():
    from tailor.training.classification import _hold_out, class_weights, natural_order

    assert natural_order(["10", "2", "1"]) == ["1", "2", "10"] and natural_order(["b", "10", "a"]) == ["10", "a", "b"]
    rows = toy_rows(100, 0)  # 10 fraud rows
    train, val = _hold_out(rows, 0.2, seed=0)
    assert len(val) == 20 and sum(r["label"] == "fraud" for r in val) == 2  # stratified: the rare class is held out too
    assert sorted(map(json.dumps, train + val)) == sorted(map(json.dumps, rows))
    assert class_weights([2.0, 1.0], ["fraud", "ok"], rows) == [2.0, 1.0]
    assert class_weights("none", ["fraud", "ok"], rows) is None
    with pytest.raises(TailorError, match="one weight per label"):
        class_weights([1.0], ["fraud", "ok"], rows)


def test_shipped_intent_example_trains_and_evaluates(tmp_path, llama_dir):
    from pathlib import Path

    from tailor.evaluation.run import run as evaluate

    path = Path(__file__).resolve().parents[2] / "configs" / "examples" / "classify-intent.yaml"
    recipe = load_recipe(path, [f"model.path={llama_dir}", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=4",
                                "train.eval_steps=2", "train.save_steps=2"])
    r = run(recipe)
    assert r.metrics["labels"] == ["account", "fraud", "refund", "shipping"]
    assert r.metrics["class_weights"][1] == max(r.metrics["class_weights"])  # the rare fraud class weighs most
    assert r.metrics["validation_rows"] == 18 and "eval_f1" in r.metrics
    m = evaluate(r.final_dir, cfg=recipe.eval).metrics
    assert m["scored_by"] == "head" and m["n"] == 26 and set(m["per_class"]) == {"account", "fraud", "refund", "shipping"}
