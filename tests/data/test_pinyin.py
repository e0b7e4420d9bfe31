"""Pinyin: the `pinyin` cleaning step and the data.augment.pinyin augmentation, through `tailor data prepare`."""

import json
import random
import sys

import pytest
import yaml

from tailor.config import load_recipe
from tailor.data.pinyin import rewrite
from tailor.data.prepare import run
from tailor.errors import TailorError

pytest.importorskip("pypinyin")


def test_readings_are_phrase_aware_in_every_tone_style():
    text = "重庆的银行几点开门？Open at 9."
    assert rewrite(text, "marks", "annotate").startswith("重庆(chóng qìng)的(de)银行(yín háng)")
    assert rewrite(text, "none", "replace") == "chongqing de yinhang ji dian kai men？Open at 9."
    assert rewrite(text, "numbers", "replace").startswith("chong2qing4 de yin2hang2")
    assert rewrite("no Chinese here", "marks", "replace") == "no Chinese here"
    mixed = rewrite("我想退货，这个背包能退吗？", "none", "replace", 0.5, random.Random(0))
    assert mixed != "我想退货，这个背包能退吗？" and any("\u4e00" <= c <= "\u9fff" for c in mixed)  # some words, not all


def _prepare(tmp_path, tokenizer_dir, tokenizer, rows, **data):
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = {"model": {"tokenizer": str(tokenizer_dir)},
           "data": {"sources": [{"path": "rows.jsonl"}], "max_length": 128, "prepared_dir": str(tmp_path / "prepared"),
                    "dedup": {"exact": False, "near": False}, **data}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    prepared = run(load_recipe(tmp_path / "recipe.yaml"), tokenizer, base_dir=tmp_path)
    return prepared, json.loads((prepared.path / "report.json").read_text())


def _chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


ROWS = [_chat("银行几点开门？", "银行上午九点开门。"), _chat("我想退货，这个背包能退吗？", "背包可以在100天内退货。"),
        _chat("When does the bank open?", "At 9 am.")]


def test_the_cleaning_step_annotates_or_replaces_every_text(tmp_path, tokenizer_dir, tokenizer):
    prepared, report = _prepare(tmp_path, tokenizer_dir, tokenizer, ROWS, clean=[{"step": "pinyin"}])
    rows = prepared.records("train")
    assert rows[0]["messages"][0]["content"] == "银行(yín háng)几(jǐ)点(diǎn)开(kāi)门(mén)？"
    assert rows[0]["messages"][1]["content"].startswith("银行(yín háng)")
    assert rows[2]["messages"][0]["content"] == "When does the bank open?"
    assert next(s for s in report["steps"] if s["step"] == "clean.pinyin")["changed"] == 2
    prepared, _ = _prepare(tmp_path, tokenizer_dir, tokenizer, ROWS[:1],
                           clean=[{"step": "pinyin", "mode": "replace", "tones": "none"}], prepared_dir=str(tmp_path / "p2"))
    assert prepared.records("train")[0]["messages"][0]["content"] == "yinhang ji dian kai men？"


def test_the_augmentation_adds_rows_with_prompts_partly_in_pinyin(tmp_path, tokenizer_dir, tokenizer):
    prepared, report = _prepare(tmp_path, tokenizer_dir, tokenizer, ROWS,
                                augment={"pinyin": {"rate": 1.0, "copies": 2, "share": 0.5, "tones": "none"}, "seed": 3})
    rows = prepared.records("train")
    made = [r for r in rows if r.get("origin") == "pinyin"]
    step = next(s for s in report["steps"] if s["step"] == "augment.pinyin")
    assert step["dropped"].get("no Chinese text in the prompt to write in pinyin") == 2  # the English row, twice
    assert len(made) == step["added"] - sum(step["dropped"].values()) and len(made) >= 2
    for r in made:
        src = next(x for x in rows[:3] if x["messages"][1]["content"] == r["messages"][1]["content"])
        assert r["messages"][1] == src["messages"][1]  # answers keep their characters
        assert r["messages"][0]["content"] != src["messages"][0]["content"]
        assert any(c.isascii() and c.isalpha() for c in r["messages"][0]["content"])
    again, _ = _prepare(tmp_path, tokenizer_dir, tokenizer, ROWS, prepared_dir=str(tmp_path / "p3"),
                        augment={"pinyin": {"rate": 1.0, "copies": 2, "share": 0.5, "tones": "none"}, "seed": 3})
    assert again.records("train") == rows  # seeded


def test_without_pypinyin_the_step_is_a_clear_error(tmp_path, tokenizer_dir, tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "pypinyin", None)
    with pytest.raises(TailorError, match="pinyin needs the pypinyin package") as e:
        _prepare(tmp_path, tokenizer_dir, tokenizer, ROWS, clean=[{"step": "pinyin"}])
    assert ".[pinyin]" in e.value.fix
