import copy
import json
import random

import pytest

from tailor.config import AugmentConfig
from tailor.data.augment import augment_records, eda_text, segment
from tailor.models.translation import load_translator, translator_for
from tailor.data.records import PrepareReport
from tailor.data.synonyms import builtin_synonyms, load_dictionary, merged_synonyms
from tailor.errors import TailorError

from tests.conftest import copy_without_chat_template

QUESTIONS = ["How long can I return a laptop to the store?", "Can I get a refund for broken headphones quickly?",
             "Please tell me the price of the cheap tent.", "I want to cancel my order and buy a new phone."]


def chat(q, a="Laptops can be returned within 30 days.", i=0):
    return {"messages": [{"role": "system", "content": "You are a helpful support agent."},
                         {"role": "user", "content": q}, {"role": "assistant", "content": a}],
            "where": f"train.jsonl:{i + 1}"}


def train_rows():
    return [chat(q, i=i) for i, q in enumerate(QUESTIONS)]


def augment(train, **cfg):
    report = PrepareReport()
    out = augment_records(train, AugmentConfig(**cfg), report)
    for step in report.steps:  # candidates are either kept or dropped under a reason
        assert step.n_out == step.n_in + step.added - step.n_dropped
    if report.steps:
        assert report.steps[-1].n_out == len(out)
    return out, report


def user(rec):
    return next(m["content"] for m in rec["messages"] if m["role"] == "user")


def test_eda_is_seeded_and_only_touches_prompts():
    train = train_rows()
    before = copy.deepcopy(train)
    out, report = augment(train, eda={"rate": 1.0, "copies": 2, "alpha": 0.2}, seed=7)
    assert out[:4] == before and train == before  # originals first and unchanged
    new = out[4:]
    step = report.steps[0]
    assert step.name == "augment.eda" and step.added == 8 and len(new) == 8 - step.n_dropped > 0
    for rec in new:
        src = next(t for t in train if t["where"] == rec["augmented_from"])
        assert rec["origin"].startswith("eda:") and rec["origin"][4:] in ("synonym", "insert", "swap", "delete")
        assert user(rec) != user(src)
        assert [m for m in rec["messages"] if m["role"] != "user"] == [m for m in src["messages"] if m["role"] != "user"]
    again, _ = augment(train_rows(), eda={"rate": 1.0, "copies": 2, "alpha": 0.2}, seed=7)
    other, _ = augment(train_rows(), eda={"rate": 1.0, "copies": 2, "alpha": 0.2}, seed=8)
    assert again == out and other != out


def test_eda_rate_and_fields():
    train = train_rows()
    out, report = augment(train, eda={"rate": 0.0})
    assert out == train and report.steps == []
    out, report = augment(train, eda={"rate": 0.5, "ops": ["synonym"]})
    assert len({r["augmented_from"] for r in out[4:]}) == report.steps[0].added == 2
    # fields=all may rewrite answers; fields=prompt never does, and counts rows with no prompt text
    out, _ = augment(train, eda={"rate": 1.0, "copies": 3, "fields": "all", "ops": ["swap"], "alpha": 0.3})
    assert any(r["messages"][2] != train[0]["messages"][2] for r in out[4:])
    docs = [{"text": "The store opens at nine and the shop closes late.", "where": "docs.txt:1"}]
    out, report = augment(docs, eda={"rate": 1.0})
    assert out == docs and report.steps[0].dropped == {"no prompt text to change (fields=prompt never edits answers or plain text)": 1}
    out, _ = augment(docs, eda={"rate": 1.0, "fields": "all", "ops": ["delete"]})
    assert len(out) == 2 and len(out[1]["text"].split()) == len(docs[0]["text"].split()) - 1


def test_each_operation():
    table = builtin_synonyms()
    text = "Please help me find a cheap laptop in the store today"
    words = text.split()
    for seed in range(20):
        rng = random.Random(seed)
        syn = eda_text(text, "synonym", 0.1, rng, table).split()
        changed = [(a, b) for a, b in zip(words, syn) if a != b]
        assert len(syn) >= len(words) and changed and changed[0][1].lower() in table[changed[0][0].lower()] + [
            w.split()[0] for w in table[changed[0][0].lower()]]
        ins = eda_text(text, "insert", 0.1, rng, table).split()
        assert len(ins) > len(words) and all(w in ins for w in words)
        swap = eda_text(text, "swap", 0.1, rng, table).split()
        assert sorted(swap) == sorted(words)
        dele = eda_text(text, "delete", 0.2, rng, table).split()
        assert len(dele) == len(words) - 2 and all(w in words for w in dele)
    # never deletes everything, never returns empty text
    assert eda_text("Hello", "delete", 0.5, random.Random(0), table) == "Hello"
    assert eda_text("hi there", "delete", 0.5, random.Random(0), table) in ("hi", "there")


def test_numbers_placeholders_and_masks_survive():
    table = builtin_synonyms()
    text = "Send the receipt to <EMAIL> within 30 days, for {product} please."
    for seed in range(30):
        for op in ("swap", "delete", "synonym", "insert"):
            out = eda_text(text, op, 0.5, random.Random(seed), table)
            assert "<EMAIL>" in out and "30" in out and "{product}" in out and out.strip()


def test_chinese_words_are_matched_by_longest_match():
    table = builtin_synonyms()
    assert segment("笔记本电脑的退货期限是多久", table, 5) == ["笔记本电脑", "的", "退货", "期限", "是", "多久"]
    text = "笔记本电脑的退货期限是30天吗？"
    outs = {eda_text(text, "synonym", 0.1, random.Random(s), table) for s in range(30)}
    subs = {"笔记本电脑": table["笔记本电脑"], "退货": table["退货"], "期限": table["期限"], "多久": []}
    assert len(outs) > 3 and all("30天吗？" in o for o in outs)
    assert any(o.startswith(tuple(subs["笔记本电脑"])) for o in outs) and any(
        s in o for o in outs for s in subs["退货"])
    rows = [chat("笔记本电脑可以退货吗？", "可以，30天内。")]
    out, _ = augment(rows, eda={"rate": 1.0, "ops": ["synonym"], "alpha": 0.5})
    assert out[1]["origin"] == "eda:synonym" and user(out[1]) != user(rows[0])
    assert out[1]["messages"][2]["content"] == "可以，30天内。"


def test_user_dictionary_files(tmp_path):
    (tmp_path / "syn.json").write_text(json.dumps({"zorbl": ["quux"], "保温杯": ["水杯"]}), encoding="utf-8")
    (tmp_path / "syn.tsv").write_text("# mine\nzorbl\tfrob, quux\n\n保温杯\t水壶，杯子\n", encoding="utf-8")
    assert load_dictionary(tmp_path / "syn.tsv") == {"zorbl": ["frob", "quux"], "保温杯": ["水壶", "杯子"]}
    assert merged_synonyms(tmp_path / "syn.json")["refund"] == builtin_synonyms()["refund"]
    rows = [chat("my zorbl 保温杯 leaks")]
    report = PrepareReport()
    cfg = AugmentConfig(eda={"rate": 1.0, "ops": ["synonym"], "alpha": 0.5, "dictionary": "syn.json"})
    out = augment_records(rows, cfg, report, base_dir=tmp_path)  # relative to the recipe folder
    assert user(out[1]) == "my quux 水杯 leaks"

    (tmp_path / "bad.tsv").write_text("zorbl\tquux\nno tab here\n", encoding="utf-8")
    (tmp_path / "bad.json").write_text('{"zorbl": "quux"}', encoding="utf-8")
    (tmp_path / "broken.json").write_text('{"zorbl": [', encoding="utf-8")
    (tmp_path / "spaces.json").write_text('{"two words": ["x"]}', encoding="utf-8")
    for name, msg, where in [("bad.tsv", "word<TAB>synonym", "bad.tsv:2"), ("bad.json", "list of non-empty", "zorbl"),
                             ("broken.json", "not valid JSON", "broken.json:1"), ("spaces.json", "cannot be matched", "two words"),
                             ("missing.tsv", "not found", "data.augment.eda.dictionary")]:
        with pytest.raises(TailorError, match=msg) as e:
            augment_records(rows, AugmentConfig(eda={"rate": 1.0, "dictionary": str(tmp_path / name)}), PrepareReport())
        assert where in e.value.where and e.value.fix


TEMPLATE = json.dumps({"instruction": "What is the return window for {product}?",
                       "output": "{product} can be returned within {days}. Use {{braces}} literally."})


def test_fill_makes_each_slot_combination_once():
    slots = {"product": ["a laptop", "a tent", 'the "Pro" bag \\ v2'], "days": ["30 days", "60 days"]}
    out, report = augment([], fill={"templates": [TEMPLATE], "slots": slots, "count": 4}, seed=1)
    assert len(out) == 4 and report.steps[0].name == "augment.fill" and report.steps[0].added == 4
    pairs = {(r["messages"][0]["content"], r["messages"][1]["content"]) for r in out}
    assert len(pairs) == 4 and all(r["origin"] == "fill" and "templates[0]" in r["where"] for r in out)
    assert all(r["messages"][1]["content"].endswith("Use {braces} literally.") for r in out)
    again, _ = augment([], fill={"templates": [TEMPLATE], "slots": slots, "count": 4}, seed=1)
    assert again == out

    train = train_rows()
    out, report = augment(train, fill={"templates": [TEMPLATE, '{"text": "{product} is in stock"}'], "slots": slots,
                                       "count": 20})
    assert out[:4] == train and len(out) == 4 + 6 + 3  # 6 + 3 combinations exist
    step = report.steps[0]
    assert step.added == 20 and step.dropped == {"fill.count exceeds the 9 slot combinations": 11}
    assert any(r.get("text") == 'the "Pro" bag \\ v2 is in stock' for r in out)  # quotes and backslash kept
    assert 'the "Pro" bag \\ v2 can be returned within 60 days. Use {braces} literally.' in [
        r["messages"][1]["content"] for r in out if "messages" in r]


def test_fill_errors_name_the_template():
    slots = {"product": ["laptop"]}
    cases = [([TEMPLATE], "unknown slot.*{days}", "templates[0]"),
             (['{"text": "ok {product}"}', '{"text": "x" '], "not valid JSON", "templates[1]"),
             (['["a list"]'], "must be a JSON object", "templates[0]"),
             (['{"product_name": "{product}"}'], "does not make a usable row", "templates[0]"),  # {prompt} alone is a GRPO prompt row now
             ([], "no templates", "fill.templates")]
    for templates, msg, where in cases:
        with pytest.raises(TailorError, match=msg) as e:
            augment([], fill={"templates": templates, "slots": slots, "count": 2})
        assert where in e.value.where
    # a row made unusable by a slot value is counted, not raised
    out, report = augment([], fill={"templates": ['{"instruction": "q", "output": "{a}"}'], "slots": {"a": ["x", " "]},
                                    "count": 2})
    assert len(out) == 1 and report.steps[0].dropped == {"no assistant answer": 1}


def fake_translator(calls):
    def translate(texts, src, tgt):
        calls.append((list(texts), src, tgt))
        return ["" if "EMPTY" in t else t if "SAME" in t else f"{t} ({src}>{tgt})" for t in texts]
    return translate


def test_back_translation_with_an_injected_translator():
    train = train_rows() + [chat("EMPTY please", i=4), chat("SAME words", i=5), {"text": "a plain document", "where": "d:1"}]
    calls = []
    report = PrepareReport()
    cfg = AugmentConfig(back_translation={"rate": 1.0, "pivot": "zh", "source": "en"})
    out = augment_records(train, cfg, report, translator=fake_translator(calls))
    assert out[:7] == train_rows() + train[4:]
    new = out[7:]
    assert [user(r) for r in new] == [f"{q} (en>zh) (zh>en)" for q in QUESTIONS]
    assert all(r["origin"] == "back_translation" and r["messages"][2] == train[0]["messages"][2] for r in new)
    assert [r["augmented_from"] for r in new] == [f"train.jsonl:{i + 1}" for i in range(4)]
    step = report.steps[0]
    assert step.name == "augment.back_translation" and step.added == 7 and step.n_out == len(out)
    assert step.dropped == {"translation empty": 1, "augmented text identical to original": 1,
                            "no prompt text to change (fields=prompt never edits answers or plain text)": 1}
    load = report.step("load[0] train.jsonl")  # the whole run's accounting still adds up
    load.n_in = load.n_out = len(train)
    report.splits = {"train": len(out)}
    report.check()
    sent = [t for texts, _, _ in calls for t in texts]
    assert calls[0][1:] == ("en", "zh") and calls[1][1:] == ("zh", "en")
    assert not any("returned within" in t or "support agent" in t for t in sent)  # only user turns go out

    with pytest.raises(TailorError, match="no translator model") as e:
        augment_records(train, cfg, PrepareReport())
    assert e.value.where == "data.augment.back_translation.model"
    assert translator_for(cfg.back_translation) is None  # no model named: nothing to load
    named = AugmentConfig(back_translation={"model": "some/translator", "rate": 1.0})
    with pytest.raises(TailorError, match="needs the translator passed in") as e:  # the data stage loads no model
        augment_records(train, named, PrepareReport())
    assert "translator_for" in e.value.fix
    with pytest.raises(TailorError, match="returned 0 results for 4"):
        augment_records(train_rows(), cfg, PrepareReport(), translator=lambda t, s, d: [])


def test_back_translation_through_a_tiny_causal_lm(llama_dir, tmp_path):
    train = train_rows()[:3]
    report = PrepareReport()
    cfg = AugmentConfig(back_translation={"model": str(llama_dir), "rate": 1.0, "max_new_tokens": 4})
    out = augment_records(train, cfg, report, translator=translator_for(cfg.back_translation))
    step = report.steps[0]
    assert step.added == 3 and len(out) == 3 + 3 - step.n_dropped
    assert set(step.dropped) <= {"translation empty", "augmented text identical to original"}
    assert all(r["origin"] == "back_translation" and user(r).strip() for r in out[3:])
    # the same model without a chat template gets a plain-text prompt
    plain = copy_without_chat_template(llama_dir, tmp_path / "plain")
    translate = load_translator(str(plain), max_new_tokens=3)
    res = translate(["How long can I return a laptop?", "hi"], "en", "zh")
    assert len(res) == 2 and all(isinstance(r, str) for r in res)


def test_back_translation_through_a_tiny_seq2seq_model(tokenizer, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=16, num_layers=1, num_decoder_layers=1, num_heads=2,
                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    translate = load_translator(str(tmp_path / "t5"), max_new_tokens=5, batch_size=2)
    res = translate(["How long can I return a laptop?", "退货", "hi"], "en", "zh")
    assert len(res) == 3 and all(isinstance(r, str) for r in res)
    report = PrepareReport()
    cfg = AugmentConfig(back_translation={"model": "t5", "rate": 1.0, "max_new_tokens": 5})
    out = augment_records(train_rows()[:2], cfg, report, translator=translator_for(cfg.back_translation, base_dir=tmp_path),
                          base_dir=tmp_path)
    assert report.steps[0].added == 2 and len(out) == 4 - report.steps[0].n_dropped
    with pytest.raises(TailorError, match="translator model not found"):
        load_translator(str(tmp_path / "nope"))
