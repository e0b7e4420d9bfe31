"""`tailor compare`: paired bootstrap CIs, win/tie/loss, pairing checks, the --require gate and exit codes."""

import json

import numpy as np
import pytest

from tailor.cli import main
from tailor.errors import TailorError
from tailor.evaluation.compare import (check_requirements, compare_examples, pair_examples, paired_bootstrap,
                                       parse_requirement, read_eval_dir, run, score_keys, win_tie_loss)
from tests.conftest import write_jsonl


def save_eval(d, examples, metrics=None):
    """A saved `tailor eval --out` folder (what compare reads without generating)."""
    write_jsonl(d / "examples.jsonl", examples)
    if metrics is not None:
        (d / "eval_results.json").write_text(json.dumps(metrics))
    return d


def ex(i, fact, f1, pred="x", lang="en", **extra):
    return {"prompt": f"question {i}", "reference": f"answer {i}", "prediction": pred, "fact_accuracy": fact,
            "token_f1": f1, "lang": lang, "fact_id": i, **extra}


@pytest.fixture
def saved_pair(tmp_path):
    """A: 4 examples, B fixes example 1 and changes the output of example 3; perplexity is corpus-level."""
    a = [ex(0, 1.0, 1.0, "a0"), ex(1, 0.0, 0.2, "wrong"), ex(2, 1.0, 0.5, "a2", "zh"), ex(3, 0.0, 0.0, "a3", "zh")]
    b = [ex(0, 1.0, 1.0, "a0"), ex(1, 1.0, 0.6, "right"), ex(2, 1.0, 0.5, "a2", "zh"), ex(3, 0.0, 0.0, "b3 other", "zh")]
    ma = {"n": 4, "fact_accuracy": 0.5, "token_f1": 0.425, "answer_perplexity": 9.0}
    mb = {"n": 4, "fact_accuracy": 0.75, "token_f1": 0.525, "answer_perplexity": 7.5}
    return save_eval(tmp_path / "A", a, ma), save_eval(tmp_path / "B", b, mb)


def test_bootstrap_ci_covers_the_true_difference_and_narrows_with_more_data():
    covered = 0
    for s in range(20):
        rng = np.random.default_rng(100 + s)
        a = rng.normal(0, 1, 200)
        b = a + 0.3 + rng.normal(0, 1, 200)  # true paired difference 0.3
        diff, low, high = paired_bootstrap(a, b, resamples=1000, seed=s)
        assert low < diff < high
        covered += low <= 0.3 <= high
    assert covered >= 16  # a 95% interval misses about 1 in 20

    rng = np.random.default_rng(0)
    a, noise = rng.normal(0, 1, 1600), rng.normal(0, 1, 1600)
    b = a + 0.3 + noise
    _, lo_small, hi_small = paired_bootstrap(a[:100], b[:100], 1000)
    _, lo_big, hi_big = paired_bootstrap(a, b, 1000)
    assert (hi_big - lo_big) < 0.4 * (hi_small - lo_small)  # ~1/sqrt(16) = 0.25
    assert paired_bootstrap(a, b, 1000, seed=3) == paired_bootstrap(a, b, 1000, seed=3)


def test_pairing_matters_correlated_sides_give_a_narrow_interval():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 5, 300)  # large between-example spread, small within-pair change
    b = a + 0.1 + rng.normal(0, 0.1, 300)
    _, low, high = paired_bootstrap(a, b, 1000)
    assert 0 < low < 0.1 < high < 0.2


def test_hand_checkable_comparison(saved_pair):
    (ma, ea), (mb, eb) = read_eval_dir(saved_pair[0]), read_eval_dir(saved_pair[1])
    r = compare_examples(ma, ea, mb, eb, resamples=1000)
    rows = {x["name"]: x for x in r["scores"]}
    fa = rows["fact_accuracy"]
    assert (fa["mean_a"], fa["mean_b"], fa["diff"]) == (0.5, 0.75, 0.25)
    assert (fa["wins"], fa["ties"], fa["losses"]) == (1, 3, 0)
    # differences are [0, 1, 0, 0]: a resampled mean is k/4, so the interval is [0, 0.5 or 0.75]
    assert fa["ci_low"] == 0.0 and 0.5 <= fa["ci_high"] <= 0.75
    assert rows["token_f1"]["diff"] == pytest.approx(0.1)
    # per-language rows: en holds examples 0 and 1, zh holds 2 and 3
    assert rows["fact_accuracy/en"]["diff"] == 0.5 and rows["fact_accuracy/zh"]["diff"] == 0.0
    assert rows["fact_accuracy/zh"]["n"] == 2
    # fact_id is an identifier, not a score; perplexity has no per-example values, so no CI
    assert "fact_id" not in rows and score_keys(ea, eb) == ["fact_accuracy", "token_f1"]
    assert r["corpus"] == [{"name": "answer_perplexity", "a": 9.0, "b": 7.5, "diff": -1.5, "better": "lower"}]
    # the most different examples: the score flip first, then the output-only change; identical ones left out
    assert [t["index"] for t in r["top_differences"]] == [1, 3]
    assert r["top_differences"][0]["output_b"] == "right" and r["top_differences"][0]["score_diff"] == 1.0


def test_win_tie_loss_respects_direction():
    assert win_tie_loss([0, 1, 1, 0.5], [1, 1, 0, 0.5]) == (1, 2, 1)
    assert win_tie_loss([2.0, 2.0, 1.0], [1.0, 3.0, 1.0], higher_is_better=False) == (1, 1, 1)
    a = [ex(i, 1.0, 0.5, answer_nll=2.0) for i in range(3)]
    b = [ex(i, 1.0, 0.5, answer_nll=v) for i, v in enumerate([1.0, 1.0, 3.0])]
    row = next(x for x in compare_examples({}, a, {}, b, resamples=200)["scores"] if x["name"] == "answer_nll")
    assert row["better"] == "lower" and (row["wins"], row["ties"], row["losses"]) == (2, 0, 1)


def test_corpus_metric_with_a_per_example_namesake_keeps_its_name():
    """Corpus BLEU is not the mean of sentence BLEU: the per-example row becomes mean_bleu."""
    a = [ex(i, 1.0, 0.5, bleu=b) for i, b in enumerate([10.0, 20.0])]
    b = [ex(i, 1.0, 0.5, bleu=b) for i, b in enumerate([30.0, 20.0])]
    r = compare_examples({"bleu": 12.0, "empty_rate": 0.0}, a, {"bleu": 31.0, "empty_rate": 0.0}, b, resamples=200)
    names = [x["name"] for x in r["scores"]]
    assert "mean_bleu" in names and "bleu" not in names
    assert {"name": "bleu", "a": 12.0, "b": 31.0, "diff": 19.0, "better": "higher"} in r["corpus"]


def test_example_sets_must_match(tmp_path):
    a = [ex(i, 1.0, 1.0) for i in range(3)]
    with pytest.raises(TailorError, match="A has 3 examples, B has 2"):
        pair_examples(a, a[:2])
    other = [dict(e, reference="something else") if e["fact_id"] == 1 else e for e in a]
    with pytest.raises(TailorError, match="example 1 has a different reference"):
        pair_examples(a, other)
    with pytest.raises(TailorError, match="no examples"):
        pair_examples([], a)
    # by id: order does not matter, but the id sets must match and be unique
    with_ids = [dict(e, id=f"q{i}") for i, e in enumerate(a)]
    pairs = pair_examples(with_ids, with_ids[::-1])
    assert all(x["id"] == y["id"] for x, y in pairs)
    with pytest.raises(TailorError, match="1 ids only in A"):
        pair_examples(with_ids, with_ids[:2] + [dict(a[2], id="q9")])
    with pytest.raises(TailorError, match="more than once"):
        pair_examples(with_ids, with_ids[:2] + [dict(a[2], id="q0")])
    with pytest.raises(TailorError, match="not every example has the id field `key`"):
        pair_examples(with_ids, with_ids, id_key="key")
    # through the stage: a saved run with a broken line names the file and line
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "examples.jsonl").write_text('{"prediction": "x"}\n{"prediction": \n')
    with pytest.raises(TailorError, match="examples.jsonl:2"):
        read_eval_dir(bad)


@pytest.mark.parametrize("text, metric, quantity, op, value", [
    ("fact_accuracy>=+0.02", "fact_accuracy", "diff", ">=", 0.02),
    ("fact_accuracy>=0.8", "fact_accuracy", "b", ">=", 0.8),
    ("exact_match>-0.01", "exact_match", "diff", ">", -0.01),
    (" ci_low(fact_accuracy) > 0 ", "fact_accuracy", "ci_low", ">", 0.0),
    ("ci_high(answer_nll)<0", "answer_nll", "ci_high", "<", 0.0),
    ("a(token_f1)==0.5", "token_f1", "a", "==", 0.5),
    ("fact_accuracy/zh<=1e-1", "fact_accuracy/zh", "b", "<=", 0.1),
])
def test_requirement_grammar(text, metric, quantity, op, value):
    req = parse_requirement(text)
    assert (req.metric, req.quantity, req.op, req.value) == (metric, quantity, op, value)


@pytest.mark.parametrize("text", ["fact_accuracy", "fact_accuracy=>0.1", "fact_accuracy>=abc", "ci_low(fact_accuracy>0",
                                  "mean(fact_accuracy)>0", "fact_accuracy>=0.1 and more", ">=0.1", "", "x>=+-1"])
def test_bad_requirements_are_clear_errors(text):
    with pytest.raises(TailorError, match="cannot read the requirement") as e:
        parse_requirement(text)
    assert "B−A" in e.value.message()


def test_check_requirements(saved_pair):
    (ma, ea), (mb, eb) = read_eval_dir(saved_pair[0]), read_eval_dir(saved_pair[1])
    r = compare_examples(ma, ea, mb, eb, resamples=1000)
    reqs = ["fact_accuracy>=+0.25", "fact_accuracy>=+0.3", "fact_accuracy>=0.75", "answer_perplexity<=-1",
            "ci_low(fact_accuracy)>=0", "ci_low(fact_accuracy)>0"]
    got = check_requirements(r, [parse_requirement(t) for t in reqs])
    assert [g["holds"] for g in got] == [True, False, True, True, True, False]
    with pytest.raises(TailorError, match="did you mean 'fact_accuracy'"):
        check_requirements(r, [parse_requirement("fact_acuracy>0")])
    with pytest.raises(TailorError, match="no confidence interval"):
        check_requirements(r, [parse_requirement("ci_low(answer_perplexity)>0")])


def test_cli_exit_codes_and_outputs(saved_pair, tmp_path, capsys):
    a, b = map(str, saved_pair)
    out = tmp_path / "cmp"
    assert main(["compare", a, b, "--out", str(out), "--resamples", "500", "--require", "fact_accuracy>=+0.2",
                 "--require", "answer_perplexity<=-1"]) == 0
    saved = json.loads((out / "compare.json").read_text())
    assert saved["n"] == 4 and [g["holds"] for g in saved["gate"]] == [True, True]
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    capsys.readouterr()
    assert main(["compare", a, b, "--out", str(out), "--require", "fact_accuracy>=+0.5"]) == 1
    err = capsys.readouterr().err
    assert "gate failed: fact_accuracy>=+0.5" in err and "Traceback" not in err
    assert main(["compare", a, b, "--out", str(out), "--require", "fact_accuracy>>1"]) == 2
    assert "cannot read the requirement" in capsys.readouterr().err
    assert main(["compare", a, b, "--out", str(out), "--require", "no_such_metric>0"]) == 2
    assert main(["compare", a, str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", a, b, "--out", str(out), "--data", "x.jsonl"]) == 2
    assert "both saved evaluations" in capsys.readouterr().err
    assert main(["compare", a, b, "max_new_tokens=4", "--out", str(out)]) == 2
    assert "eval settings are given" in capsys.readouterr().err
    assert main(["compare", a, b, "--out", str(out), "--scores", "nope"]) == 2
    assert "choose from: fact_accuracy, token_f1" in capsys.readouterr().err


def test_cli_gate_results_are_saved(saved_pair, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, saved_pair), "--out", str(out), "--require", "fact_accuracy>=+0.2",
                 "--require", "token_f1>=0.9"]) == 1
    saved = json.loads((out / "compare.json").read_text())
    assert [(g["requirement"], g["holds"]) for g in saved["gate"]] == [("fact_accuracy>=+0.2", True), ("token_f1>=0.9", False)]
    assert saved["gate"][1]["value"] == pytest.approx(0.525)


def test_compare_two_models_end_to_end(tmp_path, llama_dir, chat_file):
    """The model path: both sides generate; the same model twice must tie on every example."""
    from tailor.config import EvalConfig

    out = tmp_path / "cmp"
    res = run(llama_dir, llama_dir, [str(chat_file)], EvalConfig(max_new_tokens=4, max_examples=6), out_dir=out,
              requirements=["exact_match>=+0", "ci_high(token_f1)<=0"], resamples=200)
    assert res.passed and res.result["n"] == 6
    for row in res.result["scores"]:
        assert row["diff"] == 0 and row["ci_low"] == row["ci_high"] == 0, row["name"]
        assert row["wins"] == row["losses"] == 0 and row["ties"] == row["n"]
    assert res.result["top_differences"] == []
    assert (out / "a" / "examples.jsonl").is_file() and (out / "b" / "eval_results.json").is_file()
    assert res.report == out / "report.html" and "evaluation: a" in res.report.read_text()
    # the saved evaluations compare again without generating, with the same numbers
    again = run(out / "a", out / "b", resamples=200, report=False)
    assert again.result["scores"] == res.result["scores"]


def test_reciprocal_rank_is_higher_is_better():
    from tailor.evaluation.compare import direction

    assert direction("reciprocal_rank") == 1 and direction("mrr/en") == 1
    assert direction("nll") == -1 and direction("mean_rank") == -1
