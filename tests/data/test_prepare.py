"""`tailor data prepare` / `inspect` end to end on small messy inputs: accounting, leakage, cache, training."""

import json
import time
from pathlib import Path

import pytest
import yaml

from tailor.cli import main
from tailor.config import load_recipe
from tailor.data.prepare import open_prepared, run
from tailor.errors import TailorError



def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"

QUESTIONS = [
    "How long is the return window for laptops bought online?",
    "Do you ship tents to Alaska, and how long does it take?",
    "What is the warranty on the Trailblazer backpack?",
    "Can I pay with a gift card in the Springfield store?",
    "When does the Portland store open on Sundays?",
    "How much does the Summit tent weigh when packed?",
    "Is there a fee for returning opened headphones?",
    "Which regions get free shipping over fifty dollars?",
    "退货需要提供原始包装吗？",
    "帐篷的保修期是多久？",
    "周日门店几点开门？",
    "寄到加拿大需要几天？",
]


def _chat(q: str, a: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def _messy(tmp_path: Path) -> Path:
    """12 distinct chats + exact and near duplicates, one malformed line, one empty answer, PII."""
    rows = [_chat(q, f"Answer number {i}: please see our policy page, section {i}.", customer=f"c{i % 4}")
            for i, q in enumerate(QUESTIONS)]
    rows.append(_chat(QUESTIONS[0].upper(), "ANSWER NUMBER 0: please see our policy page, section 0."))  # exact after normalization
    rows.append(_chat(QUESTIONS[1] + " Thanks", "Answer number 1: please see our policy page, section 1."))  # near
    rows.append(_chat("Email me at jane.doe@example.com about my order", "Sure, we will write to you."))
    rows.append({"messages": [{"role": "user", "content": "hello?"}, {"role": "assistant", "content": "   "}]})
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"messages": [broken\n')
    return path


def _recipe(tmp_path: Path, tokenizer_dir, source: Path, **data) -> Path:
    cfg = {
        "model": {"tokenizer": str(tokenizer_dir)},
        "data": {"sources": [{"path": source.name}], "on_error": "skip", "max_length": 128,
                 "clean": ["nfkc", "strip_control", "whitespace", {"step": "pii", "kinds": ["email"]}],
                 "dedup": {"exact": True, "near": True, "threshold": 0.7, "across_splits": True},
                 "split": {"test": 3, "seed": 1},
                 "prepared_dir": str(tmp_path / "prepared"), **data},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def test_prepare_accounts_for_every_row_and_masks_pii(tmp_path, tokenizer_dir, tokenizer):
    src = _messy(tmp_path)
    recipe_path = _recipe(tmp_path, tokenizer_dir, src)
    prepared = run(load_recipe(recipe_path), tokenizer, base_dir=tmp_path)
    report = json.loads((prepared.path / "report.json").read_text())
    assert report["rows_read"] == 17
    drops = {reason: n for s in report["steps"] for reason, n in s["dropped"].items()}
    assert drops.get("invalid JSON") == 1
    assert sum(n for r, n in drops.items() if "exact" in r) == 1
    assert sum(n for r, n in drops.items() if "near" in r) >= 1
    assert sum(report["splits"].values()) + sum(drops.values()) == 17
    train = prepared.records("train")
    texts = json.dumps(train + prepared.records("test"), ensure_ascii=False)
    assert "jane.doe@example.com" not in texts and "<EMAIL>" in texts
    assert report["splits"]["test"] == 3
    assert (prepared.path / "report.txt").read_text().startswith("rows read: 17")
    tok = prepared.tokenized("train")
    assert len(tok) == len(train) and all(-100 in labels for labels in tok["labels"])


def test_prepare_raise_names_file_and_line(tmp_path, tokenizer_dir, tokenizer):
    src = _messy(tmp_path)
    recipe_path = _recipe(tmp_path, tokenizer_dir, src, on_error="raise")
    with pytest.raises(TailorError) as e:
        run(load_recipe(recipe_path), tokenizer, base_dir=tmp_path)
    assert "chats.jsonl:" in str(e.value)


def test_no_test_row_has_a_near_twin_in_train(tmp_path, tokenizer_dir, tokenizer):
    from tailor.config import DedupConfig
    from tailor.data.dedup import drop_cross_split_twins
    from tailor.data.records import PrepareReport

    rows = [_chat(q, "See the policy page for details on this topic.", customer=f"c{i}") for i, q in enumerate(QUESTIONS)]
    rows += [_chat(q + "!", "See the policy page for details on this topic.", customer=f"d{i}") for i, q in enumerate(QUESTIONS)]
    src = write_jsonl(tmp_path / "twins.jsonl", rows)
    recipe_path = _recipe(tmp_path, tokenizer_dir, src, dedup={"exact": False, "near": False, "across_splits": True},
                          split={"test": 0.5, "seed": 3})
    # With de-dup off, the twins land on both sides of the split ...
    leaky = run(load_recipe(recipe_path), tokenizer, base_dir=tmp_path)
    again = drop_cross_split_twins({"train": leaky.records("train"), "eval": [], "test": leaky.records("test")},
                                   DedupConfig(threshold=0.7), PrepareReport())
    assert len(again["test"]) < len(leaky.records("test"))
    # ... and with across-split de-dup on (within-split near de-dup off), none survive in test.
    recipe_path = _recipe(tmp_path, tokenizer_dir, src, dedup={"exact": False, "near": True, "threshold": 0.7,
                                                               "across_splits": True}, split={"test": 0.5, "seed": 3})
    prepared = run(load_recipe(recipe_path), tokenizer, base_dir=tmp_path)
    check = drop_cross_split_twins({"train": prepared.records("train"), "eval": [], "test": prepared.records("test")},
                                   DedupConfig(threshold=0.7), PrepareReport())
    assert len(check["test"]) == len(prepared.records("test"))


def test_augmented_rows_only_in_train_and_tagged(tmp_path, tokenizer_dir, tokenizer):
    rows = [_chat(q, f"Reply {i}.") for i, q in enumerate(QUESTIONS)]
    src = write_jsonl(tmp_path / "plain.jsonl", rows)
    recipe_path = _recipe(tmp_path, tokenizer_dir, src, clean=[], dedup={"exact": True, "near": False},
                          split={"eval": 2, "test": 2}, augment={"eda": {"rate": 1.0, "copies": 1}, "seed": 0})
    prepared = run(load_recipe(recipe_path), tokenizer, base_dir=tmp_path)
    train = prepared.records("train")
    assert any(r["origin"] != "original" for r in train)
    for split in ("eval", "test"):
        assert all(r["origin"] == "original" for r in prepared.records(split))
    report = json.loads((prepared.path / "report.json").read_text())
    assert report["rows_read"] == len(QUESTIONS)


def test_second_prepare_reuses_the_cache_until_input_changes(tmp_path, tokenizer_dir, tokenizer):
    src = _messy(tmp_path)
    recipe_path = _recipe(tmp_path, tokenizer_dir, src)
    t0 = time.perf_counter()
    first = run(load_recipe(recipe_path), tokenizer, base_dir=tmp_path)
    t1 = time.perf_counter()
    second = run(load_recipe(recipe_path), tokenizer, base_dir=tmp_path)
    t2 = time.perf_counter()
    assert not first.cached and second.cached and second.splits == first.splits
    assert (t2 - t1) < (t1 - t0)
    with src.open("a", encoding="utf-8") as f:
        f.write(json.dumps(_chat("A brand new question about kayaks?", "A new answer.")) + "\n")
    third = run(load_recipe(recipe_path), tokenizer, base_dir=tmp_path)
    assert not third.cached and json.loads((third.path / "report.json").read_text())["rows_read"] == 18


def test_prepare_errors_are_clear(tmp_path, tokenizer_dir):
    with pytest.raises(TailorError, match="no data sources"):
        run(load_recipe(None, [f"model.tokenizer={tokenizer_dir}"]))
    with pytest.raises(TailorError, match="not found"):
        run(load_recipe(None, ["data.sources=[{path: /nonexistent/x.jsonl}]"]))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"foo": 1}, {"bar": 2}])
    with pytest.raises(TailorError, match="no rows left"):
        run(load_recipe(None, [f"data.sources=[{{path: {bad}}}]", "data.on_error=skip",
                               f"data.prepared_dir={tmp_path / 'p'}"]))


def test_cli_prepare_inspect_and_train_from_prepared(tmp_path, tokenizer_dir, llama_dir, capsys):
    src = _messy(tmp_path)
    recipe_path = _recipe(tmp_path, tokenizer_dir, src)
    assert main(["data", "prepare", str(recipe_path)]) == 0
    out = capsys.readouterr().out
    assert "prepared" in out and "invalid JSON" in out
    assert main(["data", "prepare", str(recipe_path)]) == 0
    assert "reusing" in capsys.readouterr().out
    prepared_dir = tmp_path / "prepared"
    assert main(["data", "inspect", str(prepared_dir), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "ok  eos" in out and "ok  template_eos" in out
    assert (prepared_dir / "token_lengths.png").stat().st_size > 1000
    from tailor.data.inspect import inspect_prepared
    from tailor.models.loading import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    result = inspect_prepared(open_prepared(prepared_dir), tok, samples=1)
    marked = result.samples[0]["text"]
    assert marked.count("⟪") == 1 and marked.rstrip().endswith(tok.eos_token + "⟫")
    code = main(["train", str(recipe_path), f"model.path={llama_dir}", "model.tokenizer=null", f"data.train=[{prepared_dir}]",
                 "data.sources=[]", "adapter.method=full", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=3",
                 "train.batch_size=4", "train.logging_steps=1"])
    assert code == 2  # prepared with the test tokenizer dir, trained with the model dir's: refused, clearly
    assert "tokenized with" in capsys.readouterr().err
    code = main(["train", str(recipe_path), f"model.path={llama_dir}", f"data.train=[{prepared_dir}]", "data.sources=[]",
                 "adapter.method=full", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=3", "train.batch_size=4",
                 "train.logging_steps=1"])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["train_sequences"] == open_prepared(prepared_dir).splits["train"]


def test_inspect_fails_loudly_when_eos_never_trained(tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "c.jsonl", [_chat(q, "Fine.") for q in QUESTIONS[:4]])
    # chatml ends turns with <|im_end|>, which this tokenizer does not have as EOS
    recipe_path = _recipe(tmp_path, tokenizer_dir, src, clean=[], split={}, chat_template="chatml")
    code = main(["data", "inspect", str(recipe_path)])
    assert code == 1


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present")
def test_worked_example_on_real_alpaca_and_sharegpt(tmp_path, tokenizer_dir, tokenizer):
    recipe = load_recipe(None, [
        f"model.tokenizer={tokenizer_dir}",
        f"data.sources=[{{registry: {SHARED / 'dataset_info.json'}, name: alpaca_en_demo}}, "
        f"{{registry: {SHARED / 'dataset_info.json'}, name: glaive_toolcall_en_demo}}]",
        "data.clean=[nfkc, strip_control, whitespace]", "data.split.test=0.05", "data.max_length=256",
        f"data.prepared_dir={tmp_path / 'real'}"])
    prepared = run(recipe, tokenizer)
    report = json.loads((prepared.path / "report.json").read_text())
    assert report["rows_read"] == 999 + 300
    assert prepared.splits["test"] > 0 and prepared.splits["train"] > 1000
    assert any(m["role"] == "tool" for r in prepared.records("train") for m in r.get("messages", []))
