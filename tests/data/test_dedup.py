import random

import numpy as np
import pytest
from datasketch import MinHash

from tailor.config import DedupConfig
from tailor.data import dedup as dd
from tailor.data.dedup import dedup_records, drop_cross_split_twins, exact_key, normalize_for_hash
from tailor.data.records import PrepareReport

WORDS = ("order return refund laptop tent shipping days store open close price discount member card warranty "
         "battery screen delivery north south weekend support account password email invoice receipt").split()
HAN = "订单退货退款笔记本电脑帐篷运输天商店营业关门价格折扣会员卡保修电池屏幕送货北部南部周末客服账户密码发票收据"


def en_doc(rng, n=50):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def zh_doc(rng, n=150):
    return "".join(rng.choice(HAN) for _ in range(n))


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa = {normalize_for_hash(a)[i:i + n] for i in range(len(normalize_for_hash(a)) - n + 1)}
    sb = {normalize_for_hash(b)[i:i + n] for i in range(len(normalize_for_hash(b)) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def edit_words(text: str, k: int, rng) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), k):
        words[i] = "zzz" + words[i]
    return " ".join(words)


def edit_chars(text: str, k: int, rng) -> str:
    chars = list(text)
    for i in rng.sample(range(len(chars)), k):
        chars[i] = "龘"
    return "".join(chars)


def run(records, cfg):
    report = PrepareReport()
    out = list(dedup_records(records, cfg, report))
    for s in report.steps:
        assert s.n_in == s.n_out + s.n_dropped, s.line()
    return out, report


def test_normalize_for_hash():
    assert normalize_for_hash("Hello,   World!") == normalize_for_hash("hello world") == "helloworld"
    assert normalize_for_hash("ＨＥＬＬＯ\u3000World…") == "helloworld"
    assert normalize_for_hash("你好，世界！") == normalize_for_hash("你好 世界") == "你好世界"
    assert normalize_for_hash("zero\u200bwidth") == "zerowidth"
    assert normalize_for_hash("What is C#?") != normalize_for_hash("What is C?")
    assert normalize_for_hash("1+1=2") != normalize_for_hash("11 2")
    assert normalize_for_hash("???") != normalize_for_hash("!!!") != normalize_for_hash("")
    assert normalize_for_hash("Straße") == normalize_for_hash("STRASSE")
    # full-width forms fold exactly like their ASCII twins, kept symbols included
    for wide, narrow in [("C＃ 语言", "C# 语言"), ("５０％ 折扣", "50% 折扣"), ("？？？", "???"), ("ＡＢＣ，你好", "abc你好")]:
        assert normalize_for_hash(wide) == normalize_for_hash(narrow)


def test_exact_duplicates_with_case_space_and_punctuation_variants():
    rows = [
        {"messages": [{"role": "user", "content": "How long can I return a laptop?"},
                      {"role": "assistant", "content": "30 days."}], "where": "f:1"},
        {"messages": [{"role": "user", "content": "how long can i  return a laptop"},
                      {"role": "assistant", "content": "30 days!"}], "where": "f:2"},
        {"messages": [{"role": "user", "content": "How long can I return a tent?"},
                      {"role": "assistant", "content": "30 days."}], "where": "f:3"},
        {"text": "笔记本电脑的退货期限是30天。", "where": "f:4"},
        {"text": "笔记本电脑的退货期限是30天", "where": "f:5"},
        # same words, different kind or split across turns differently: not twins
        {"text": "How long can I return a laptop? 30 days.", "where": "f:6"},
        {"messages": [{"role": "user", "content": "How long can I return a laptop? 30"},
                      {"role": "assistant", "content": "days."}], "where": "f:7"},
    ]
    out, report = run(rows, DedupConfig(near=False))
    assert [r["where"] for r in out] == ["f:1", "f:3", "f:4", "f:6", "f:7"]
    assert [s.name for s in report.steps] == ["dedup.exact"]
    rep = report.steps[0]
    assert rep.dropped == {"exact duplicate": 2}
    assert rep.examples["exact duplicate"] == "f:2 (twin of f:1)"
    assert exact_key(rows[0]) == exact_key(rows[1]) != exact_key(rows[2])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_near_duplicates_found_at_the_threshold_and_distinct_rows_kept(lang):
    rng = random.Random(0 if lang == "en" else 1)
    make, edit = (en_doc, edit_words) if lang == "en" else (zh_doc, edit_chars)
    bases = [make(rng) for _ in range(6)]
    near = [edit(b, 1, rng) for b in bases[:3]]       # true Jaccard >= 0.9
    far = [edit(b, 20 if lang == "en" else 25, rng) for b in bases[3:]]  # true Jaccard well below 0.8
    for b, n in zip(bases, near):
        assert jaccard(b, n) >= 0.9
    for b, f in zip(bases[3:], far):
        assert jaccard(b, f) <= 0.6
    rows = [{"text": t, "where": f"f:{i}"} for i, t in enumerate(bases + near + far)]
    out, report = run(rows, DedupConfig(exact=False, near=True, threshold=0.8))
    kept = {r["where"] for r in out}
    assert kept == {f"f:{i}" for i in range(6)} | {"f:9", "f:10", "f:11"}
    rep = report.steps[0]
    assert rep.name == "dedup.near" and rep.dropped == {"near duplicate (Jaccard >= 0.8)": 3}
    assert rep.examples["near duplicate (Jaccard >= 0.8)"] == "f:6 (twin of f:0)"


def test_exact_and_near_together_account_for_every_row():
    rng = random.Random(3)
    base = [en_doc(rng) for _ in range(20)]
    rows = [{"text": t} for t in base]
    rows += [{"text": t.upper() + " !"} for t in base[:5]]          # exact (after normalization)
    rows += [{"text": edit_words(t, 1, rng)} for t in base[5:10]]  # near
    rows += [{"text": ""}, {"text": ""}]                          # no shingles: exact twins only
    out, report = run(iter(rows), DedupConfig())
    exact, near = report.steps
    assert (exact.n_in, exact.n_out, exact.n_dropped) == (32, 26, 6)
    assert (near.n_in, near.n_out, near.n_dropped) == (26, 21, 5)
    assert len(out) == 21


def test_signatures_equal_datasketch_minhash():
    docs = ["hello world, this is a test of the shingles", "abc", "你好世界你好", "x" * (dd._BLOCK + 500)]
    signer = dd._Signer(64, 5)
    sigs = signer(docs)
    hv, counts = dd.shingle_hashes(docs, 5)
    assert counts.tolist() == [39, 1, 2, dd._BLOCK + 496]
    start = 0
    for i, n in enumerate(counts):
        m = MinHash(num_perm=64, seed=dd.SEED, hashfunc=int)
        m.update_batch(hv[start:start + n].tolist())
        start += n
        assert np.array_equal(m.hashvalues, sigs[i])
    # the same text gives the same signature wherever it sits in a batch
    assert np.array_equal(signer(["abc", docs[0]])[1], sigs[0])


def test_dedup_is_lazy_and_reports_exist_at_call_time():
    report = PrepareReport()
    pulled = []

    def source():
        for i in range(1000):
            pulled.append(i)
            yield {"text": f"row number {i} " * 3}

    stream = dedup_records(source(), DedupConfig(near=False), report)
    assert [s.name for s in report.steps] == ["dedup.exact"] and pulled == []
    next(stream)
    assert len(pulled) == 1


def test_cross_split_twins_are_dropped_from_held_out_splits():
    rng = random.Random(5)
    train_docs = [en_doc(rng) for _ in range(10)] + [zh_doc(rng) for _ in range(10)]
    train = [{"text": t, "where": f"train:{i}"} for i, t in enumerate(train_docs)]
    fresh = [en_doc(rng) for _ in range(4)]
    eval_rows = [{"text": train_docs[0].upper(), "where": "eval:0"},            # exact twin in train
                 {"text": edit_words(train_docs[1], 1, rng), "where": "eval:1"},  # near twin in train
                 {"text": fresh[0], "where": "eval:2"}, {"text": fresh[1], "where": "eval:3"}]
    test_rows = [{"text": edit_chars(train_docs[12], 1, rng), "where": "test:0"},  # near twin in train (zh)
                 {"text": fresh[0] + "!", "where": "test:1"},                      # exact twin in eval
                 {"text": edit_words(fresh[1], 1, rng), "where": "test:2"},        # near twin in eval
                 {"text": fresh[2], "where": "test:3"}, {"text": fresh[3], "where": "test:4"}]
    splits = {"train": train, "test": test_rows, "eval": eval_rows}
    report = PrepareReport()
    out = drop_cross_split_twins(splits, DedupConfig(), report)
    assert out["train"] is train and list(out) == ["train", "test", "eval"]
    assert [r["where"] for r in out["eval"]] == ["eval:2", "eval:3"]
    assert [r["where"] for r in out["test"]] == ["test:3", "test:4"]
    rep = report.steps[0]
    assert rep.name == "dedup.across_splits" and (rep.n_in, rep.n_out) == (9, 4)
    assert rep.dropped == {"exact twin in train": 1, "near twin in train": 2, "exact twin in eval": 1,
                           "near twin in eval": 1}
    assert rep.examples["near twin in train"] == "eval:1"
    for held in out["test"] + out["eval"]:
        assert all(jaccard(held["text"], t["text"]) < 0.8 for t in train)


def test_cross_split_exact_only_and_switched_off():
    train = [{"text": "Returns take 30 days."}]
    test = [{"text": "returns take 30 days"}, {"text": "Returns take 30 days, sometimes 31."}]
    report = PrepareReport()
    out = drop_cross_split_twins({"train": train, "test": test}, DedupConfig(near=False), report)
    assert out["test"] == test[1:] and report.steps[0].dropped == {"exact twin in train": 1}
    report = PrepareReport()
    out = drop_cross_split_twins({"train": train, "test": test}, DedupConfig(across_splits=False), report)
    assert out["test"] == test and report.steps == []


def test_chat_and_text_rows_are_never_twins():
    text = "How long can I return a laptop? Thirty days from the day it was delivered."
    rows = [{"text": text}, {"messages": [{"role": "user", "content": text}]}]
    out, report = run(rows, DedupConfig())
    assert len(out) == 2
