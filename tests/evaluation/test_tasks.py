"""lm, classification and retrieval evaluation on a tiny model: numbers checked against direct forward passes."""

import json
import math

import pytest
import torch

from tailor.cli import main
from tailor.config import EvalConfig, build
from tailor.errors import TailorError
from tailor.adapters.loading import load_any
from tailor.evaluation.run import run
from tailor.evaluation.scoring import encode_turn
from tests.conftest import CORPUS, write_jsonl

CLS_ROWS = [{"text": "great laptop, love it", "label": "pos"}, {"text": "the tent broke", "label": "neg"},
            {"text": "it is fine", "label": "neu"}, {"text": "awful shipping", "label": "neg"},
            {"text": "我很喜欢", "label": "pos"}]
RET_ROWS = [{"query": "How long can I return a laptop?", "candidates": ["30 days", "60 days", "Springfield"], "relevant": [0]},
            {"query": "Tents?", "candidates": ["30 days", "Tents can be returned within 60 days."], "positive": 1}]


@pytest.fixture(scope="module")
def loaded(llama_dir):
    return load_any(llama_dir)


def _logprob(model, ids: list[int], labels: list[int]) -> float:
    """Summed log-prob of the labelled tokens, one unpadded sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != -100)


def test_lm_loss_is_token_weighted_and_matches_unbatched_forward(tmp_path, llama_dir, loaded):
    model, tok = loaded
    docs = CORPUS[:6]
    f = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in docs])
    res = run(llama_dir, [str(f)], EvalConfig(task="lm", batch_size=4), model=model, tokenizer=tok)
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in docs]
    nll = -sum(_logprob(model, x, x) for x in ids)
    n = sum(len(x) - 1 for x in ids)
    assert res.metrics["tokens"] == n and res.metrics["loss"] == pytest.approx(nll / n, rel=1e-4)
    assert res.metrics["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-3)
    # short windows score the same tokens (each window starts on the previous one's last token)
    small = run(llama_dir, [str(f)], EvalConfig(task="lm", max_length=8, batch_size=16), model=model, tokenizer=tok)
    assert small.metrics["tokens"] == n and small.metrics["windows"] > len(docs)
    assert [e["tokens"] for e in small.examples] == [len(x) - 1 for x in ids]
    worst = res.metrics["worst_examples"][0]
    assert worst["nll"] == max(e["nll"] for e in res.examples)


def test_classification_probabilities_metrics_png_and_uncertain(tmp_path, llama_dir, loaded):
    model, tok = loaded
    f = write_jsonl(tmp_path / "cls.jsonl", CLS_ROWS)
    cfg = EvalConfig(task="classification", select_uncertain=2, uncertainty="entropy", batch_size=4)
    res = run(llama_dir, [str(f)], cfg, out_dir=tmp_path / "out", model=model, tokenizer=tok)
    labels = ["neg", "neu", "pos"]
    assert res.metrics["confusion_matrix"]["labels"] == labels
    # row 0 by hand: the label (and end-of-turn) scored after the rendered prompt, softmax over labels
    logps = []
    for lab in labels:
        enc = encode_turn(tok, "great laptop, love it\nLabel:", lab, 1024)
        logps.append(_logprob(model, enc["input_ids"], enc["labels"]))
    z = [math.exp(x - max(logps)) for x in logps]
    expected = [v / sum(z) for v in z]
    got = res.examples[0]["probabilities"]
    assert [got[lab] for lab in labels] == pytest.approx(expected, abs=1e-5)
    assert res.examples[0]["predicted"] == labels[expected.index(max(expected))]
    acc = sum(e["predicted"] == e["label"] for e in res.examples) / len(CLS_ROWS)
    assert res.metrics["accuracy"] == pytest.approx(acc)
    assert sum(map(sum, res.metrics["confusion_matrix"]["matrix"])) == len(CLS_ROWS)
    png = tmp_path / "out" / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picked = [json.loads(line) for line in (tmp_path / "out" / "uncertain.jsonl").read_text().splitlines()]
    top2 = sorted(res.examples, key=lambda e: -e["entropy"])[:2]
    assert [p["text"] for p in picked] == [e["text"] for e in top2] and "suggested_label" in picked[0]
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert saved["worst_examples"][0]["prob_label"] == min(e["prob_label"] for e in res.examples)


def test_retrieval_ranks_by_mean_candidate_likelihood(tmp_path, llama_dir, loaded):
    model, tok = loaded
    f = write_jsonl(tmp_path / "ret.jsonl", RET_ROWS)
    res = run(llama_dir, [str(f)], EvalConfig(task="retrieval", ranking_k=[1, 2]), model=model, tokenizer=tok)
    for row, ex in zip(RET_ROWS, res.examples):
        means = []
        for c in row["candidates"]:
            enc = encode_turn(tok, row["query"], c, 1024)
            means.append(_logprob(model, enc["input_ids"], enc["labels"]) / sum(x != -100 for x in enc["labels"][1:]))
        assert ex["scores"] == pytest.approx(means, abs=1e-5)
        assert ex["ranking"] == sorted(range(len(means)), key=lambda i: -means[i])
    rr = [1 / (ex["ranking"].index(ex["relevant"][0]) + 1) for ex in res.examples]
    assert res.metrics["mrr"] == pytest.approx(sum(rr) / 2)
    assert set(res.metrics) >= {"recall@1", "recall@2", "ndcg@1", "ndcg@2"} and "recall@10" not in res.metrics


def test_bad_rows_and_options_are_clear_errors(tmp_path, llama_dir):
    no_label = write_jsonl(tmp_path / "c.jsonl", [{"text": "ok", "label": "a"}, {"text": "no label here"}])
    with pytest.raises(TailorError, match="label") as exc:
        run(llama_dir, [str(no_label)], EvalConfig(task="classification"))
    assert "c.jsonl:2" in str(exc.value)
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "x", "label": "a"}])
    with pytest.raises(TailorError, match="at least 2 labels"):
        run(llama_dir, [str(one)], EvalConfig(task="classification"))
    two = write_jsonl(tmp_path / "two.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": 7}])
    with pytest.raises(TailorError, match="label 'a' is not in eval.labels"):
        run(llama_dir, [str(two)], EvalConfig(task="classification", labels=["7", "c"]))
    out_of_range = write_jsonl(tmp_path / "r.jsonl", [{"query": "q", "candidates": ["a", "b"], "relevant": [0, 2]}])
    with pytest.raises(TailorError, match="out of range") as exc:
        run(llama_dir, [str(out_of_range)], EvalConfig(task="retrieval"))
    assert "r.jsonl:1" in str(exc.value)
    for bad, msg in (({"candidates": ["a"], "positive": 0}, "query"), ({"query": "q", "candidates": [], "positive": 0}, "candidates"),
                     ({"query": "q", "candidates": ["a"]}, "relevant"), ({"query": "q", "candidates": ["a"], "positive": True}, "out of range")):
        f = write_jsonl(tmp_path / "bad.jsonl", [bad])
        with pytest.raises(TailorError, match=msg):
            run(llama_dir, [str(f)], EvalConfig(task="retrieval"))
    with pytest.raises(TailorError, match="Did you mean 'classification'"):
        run(llama_dir, [str(no_label)], EvalConfig(), task="clasification")
    with pytest.raises(TailorError, match="select_uncertain works for"):
        run(llama_dir, [str(out_of_range)], EvalConfig(task="retrieval", select_uncertain=3), out_dir=tmp_path)
    with pytest.raises(TailorError, match="output folder"):
        run(llama_dir, [str(no_label)], EvalConfig(task="classification", select_uncertain=3))
    with pytest.raises(TailorError, match="robustness"):
        run(llama_dir, [str(no_label)], EvalConfig(task="classification", robustness=True))
    for bad, msg in (({"classification_template": "Label:"}, "must contain {text}"), ({"ranking_k": [0, 5]}, "positive"),
                     ({"task": "ranking"}, "task"), ({"robustness_noise": []}, "robustness_noise")):
        with pytest.raises(TailorError, match=msg):
            build(EvalConfig, bad, "command line")


def test_cli_eval_tasks(tmp_path, llama_dir, capsys):
    f = write_jsonl(tmp_path / "cls.jsonl", CLS_ROWS)
    out = tmp_path / "out"
    assert main(["eval", str(llama_dir), "batch_size=8", "--task", "classification", "--data", str(f), "--out", str(out),
                 "--select-uncertain", "2"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "per_class/neg/f1" in printed and "uncertain.jsonl" in printed
    assert len((out / "uncertain.jsonl").read_text().splitlines()) == 2
    assert main(["eval", str(llama_dir), "--task", "ranking", "--data", str(f)]) == 2
    assert "unknown evaluation task 'ranking'" in capsys.readouterr().err
    assert main(["eval", str(llama_dir), "--task", "classification", "--data", str(f), "--select-uncertain", "0"]) == 2
    assert main(["eval", str(llama_dir), "task=bogus", "--data", str(f)]) == 2
