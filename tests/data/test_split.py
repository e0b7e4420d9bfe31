import datetime as dt
from collections import Counter

import pytest

from tailor.config import SplitConfig
from tailor.data.records import PrepareReport
from tailor.data.split import split_records, split_sizes
from tailor.errors import TailorError


def rows(n, **columns):
    """n text rows; each extra column is a function of the row index stored in meta."""
    return [{"text": f"row {i}", "where": f"d.jsonl:{i + 1}", "meta": {k: f(i) for k, f in columns.items()}}
            for i in range(n)]


def ids(split):
    return [int(r["text"].split()[1]) for r in split]


def run(records, **cfg):
    report = PrepareReport()
    out = split_records(records, SplitConfig(**cfg), report)
    step = report.steps[-1]
    assert step.name == "split" and step.n_in == step.n_out == len(records) and not step.dropped
    assert sorted(i for s in out.values() for i in ids(s)) == list(range(len(records)))  # every row exactly once
    return out


def test_shares_and_counts_give_exact_sizes_in_input_order():
    out = run(rows(100), eval=0.1, test=0.2, seed=3)
    assert [len(out[s]) for s in ("train", "eval", "test")] == [70, 10, 20]
    assert all(ids(s) == sorted(ids(s)) for s in out.values())
    out = run(rows(20), eval=5, test=3)
    assert [len(out[s]) for s in ("train", "eval", "test")] == [12, 5, 3]
    out = run(rows(20), eval=0.01)  # a requested share never rounds to an empty split
    assert len(out["eval"]) == 1 and out["test"] == []
    out = run(rows(7))
    assert ids(out["train"]) == list(range(7)) and out["eval"] == out["test"] == []


def test_seeded_shuffle_is_deterministic():
    a = run(rows(50), eval=0.2, test=0.2, seed=1)
    b = run(rows(50), eval=0.2, test=0.2, seed=1)
    c = run(rows(50), eval=0.2, test=0.2, seed=2)
    assert a == b
    assert ids(a["eval"]) != ids(c["eval"])


def test_stratified_keeps_proportions_and_small_classes():
    labels = ["a"] * 40 + ["b"] * 15 + ["c"] * 5
    recs = [{"text": f"row {i}", "label": lab, "where": f"d:{i}"} for i, lab in enumerate(labels)]
    out = run(recs, eval=0.2, test=0.2, stratify_by="label", seed=0)
    counts = {s: Counter(r["label"] for r in out[s]) for s in out}
    assert counts["eval"] == {"a": 8, "b": 3, "c": 1} and counts["test"] == {"a": 8, "b": 3, "c": 1}
    assert counts["train"] == {"a": 24, "b": 9, "c": 3}

    # class sizes 2, 3 and 45 (label in meta): the 2-row class covers train and eval, the 3-row one all splits
    recs = rows(50, tier=lambda i: "gold" if i < 2 else "silver" if i < 5 else "bronze")
    out = run(recs, eval=0.1, test=0.1, stratify_by="tier", seed=4)
    tiers = {s: Counter(r["meta"]["tier"] for r in out[s]) for s in out}
    assert len(out["eval"]) == len(out["test"]) == 5
    assert tiers["train"]["gold"] == tiers["eval"]["gold"] == 1 and tiers["test"]["gold"] == 0
    assert all(tiers[s]["silver"] == 1 for s in out) and tiers["train"]["bronze"] == 38
    assert run(recs, eval=0.1, test=0.1, stratify_by="tier", seed=4) == out


def test_stratified_row_without_the_field_is_an_error():
    recs = rows(10, label=lambda i: i % 2)
    del recs[6]["meta"]["label"]
    with pytest.raises(TailorError, match="no 'label' field") as e:
        run(recs, eval=0.2, stratify_by="label")
    assert e.value.where == "d.jsonl:7" and "stratify_by" in e.value.fix


def test_groups_never_straddle_splits():
    sizes = [1 + (i * 7) % 4 for i in range(30)]  # 30 customers with 1 to 4 rows each
    customer = [g for g, k in enumerate(sizes) for _ in range(k)]
    recs = rows(len(customer), customer_id=lambda i: f"c{customer[i]}")
    out = run(recs, eval=0.2, test=0.2, group_by="customer_id", seed=5)
    where = {}
    for s, split in out.items():
        for r in split:
            assert where.setdefault(r["meta"]["customer_id"], s) == s
    target = int(0.2 * len(recs) + 0.5)
    assert 0 < len(out["eval"]) <= target and 0 < len(out["test"]) <= target
    assert len(out["eval"]) >= target - 3  # groups of at most 4 rows fill the target closely
    assert run(recs, eval=0.2, test=0.2, group_by="customer_id", seed=5) == out
    other = run(recs, eval=0.2, test=0.2, group_by="customer_id", seed=6)
    assert ids(other["test"]) != ids(out["test"])


def test_group_larger_than_target_and_too_few_groups():
    recs = rows(12, g=lambda i: "big" if i < 8 else "small" if i < 11 else "tiny")
    out = run(recs, eval=1, group_by="g")
    assert [r["meta"]["g"] for r in out["eval"]] == ["tiny"]
    out = run(recs, eval=2, group_by="g")  # no group fits 2 rows: the smallest one goes instead
    assert [r["meta"]["g"] for r in out["eval"]] == ["tiny"]
    with pytest.raises(TailorError, match="too few"):
        run(rows(6, g=lambda i: i % 2), eval=1, test=1, group_by="g")
    with pytest.raises(TailorError, match="no group for train"):
        # test (4 rows) takes the three 1-row groups; eval's fallback would then take the last one
        run(rows(8, g=lambda i: "abc"[i] if i < 3 else "d"), eval=1, test=4, group_by="g")


def test_time_split_is_strictly_ordered_and_ties_move_later():
    days = [5, 1, 7, 2, 7, 3, 8, 4, 6, 7]  # three rows tie at day 7, right at the train/eval cut
    recs = rows(10, ts=lambda i: f"2024-03-{days[i]:02d}T12:00:00")
    out = run(recs, eval=2, test=1, time_column="ts")
    t = {s: [r["meta"]["ts"] for r in out[s]] for s in out}
    assert all(t[s] == sorted(t[s]) for s in t)
    assert max(t["train"]) < min(t["eval"]) and max(t["eval"]) < min(t["test"])
    assert len(out["eval"]) == 3 and {x[8:10] for x in t["eval"]} == {"07"} and len(out["test"]) == 1

    # dates, date objects and epoch numbers work too; aware times compare in UTC
    recs = rows(4, ts=lambda i: [dt.date(2024, 1, 3), "2024-01-01", "2024-01-04", "2024-01-02"][i])
    assert ids(run(recs, test=1, time_column="ts")["test"]) == [2]
    recs = rows(4, ts=lambda i: ["2024-01-01T10:00:00+08:00", "2024-01-01T03:00:00Z", "2024-01-01T01:00:00Z",
                                 "2024-01-01T02:30:00+00:00"][i])
    assert ids(run(recs, test=1, time_column="ts")["test"]) == [1]  # 10:00+08:00 is 02:00Z
    recs = rows(5, ts=lambda i: [1700000300, 1700000100, 1700000500.5, 1700000200, 1700000400][i])
    out = run(recs, eval=1, test=1, time_column="ts")
    assert (ids(out["train"]), ids(out["eval"]), ids(out["test"])) == ([1, 3, 0], [4], [2])


def test_time_values_that_cannot_be_ordered_are_errors():
    with pytest.raises(TailorError, match="cannot read 'ts'") as e:
        run(rows(4, ts=lambda i: "yesterday" if i == 2 else f"2024-01-0{i + 1}"), test=1, time_column="ts")
    assert e.value.where == "d.jsonl:3"
    with pytest.raises(TailorError, match="mixes numbers and times"):
        run(rows(4, ts=lambda i: i if i else "2024-01-01"), test=1, time_column="ts")
    with pytest.raises(TailorError, match="with a zone"):
        run(rows(4, ts=lambda i: "2024-01-01T00:00:00Z" if i else "2024-01-02"), test=1, time_column="ts")
    with pytest.raises(TailorError, match="no 'ts' field"):
        run(rows(3, other=lambda i: i), test=1, time_column="ts")
    with pytest.raises(TailorError, match="train would be empty"):
        run(rows(4, ts=lambda i: "2024-01-01"), test=1, time_column="ts")
    with pytest.raises(TailorError, match="swallow the whole eval"):
        run(rows(5, ts=lambda i: [1, 2, 3, 3, 3][i]), eval=1, test=1, time_column="ts")


def test_bad_sizes_are_errors():
    with pytest.raises(TailorError, match="add up to 1.1"):
        split_sizes(100, SplitConfig(eval=0.6, test=0.5))
    with pytest.raises(TailorError, match="leave none of the 10 rows"):
        split_sizes(10, SplitConfig(eval=6, test=4))
    with pytest.raises(TailorError, match="neither a share"):
        split_sizes(10, SplitConfig(eval=2.5))
    with pytest.raises(TailorError, match="none of the 1 rows"):
        split_records(rows(1), SplitConfig(eval=0.1), PrepareReport())
    assert split_sizes(0, SplitConfig()) == (0, 0)
