"""tailor eval --task classification --explain K: integrated-gradients attributions; a planted label cue gets the top one."""

import json

import pytest

from tailor.cli import main
from tailor.training import train as run
from tailor.config import load_recipe

from tests.training.test_classification import toy_rows, write


def test_the_planted_cue_gets_the_top_attribution_and_the_report_highlights_it(tmp_path, llama_dir, capsys):
    pytest.importorskip("captum")
    train = str(write(tmp_path / "train.jsonl", toy_rows(96, 0, every=2, length=6)))
    ev = str(write(tmp_path / "eval.jsonl", toy_rows(12, 1, every=2, length=6)))
    run(load_recipe(None, [f"model.path={llama_dir}", f"data.train=[{train}]", f"train.output_dir={tmp_path / 'run'}",
                           "train.objective=classification", "adapter.method=full", "train.batch_size=16", "train.lr=3e-3",
                           "train.warmup_ratio=0", "train.epochs=10", "train.save_steps=1000", "data.max_length=32"]))
    out = tmp_path / "eval"
    assert main(["eval", str(tmp_path / "run" / "final"), "explain_select=uncertain", "efficiency=false", "--task",
                 "classification", "--data", ev, "--explain", "6", "--out", str(out)]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["accuracy"] >= 0.8  # the cue decides (nearly) every row
    rows = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    cued = [r for r in rows if r["predicted"] == "fraud" and "tents" in r["text"].split()]
    assert cued and all(r["top"][0] == "tents" for r in cued)
    for r in rows:
        assert r["delta"] < 0.01  # completeness: the attributions add up to p(x) - p(reference)
        assert {"text", "start", "end", "score", "raw"} <= set(r["tokens"][0])
        assert max(abs(t["score"]) for t in r["tokens"]) == pytest.approx(1.0)
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Token attributions" in page and page.count('class="attr"') >= 6 * 6 and "top: tents," in page


def test_explain_is_refused_for_other_tasks(tmp_path, llama_dir, chat_file, capsys):
    assert main(["eval", str(llama_dir), "--data", str(chat_file), "--explain", "2"]) == 2
    assert "--explain attributes classification decisions" in capsys.readouterr().err
