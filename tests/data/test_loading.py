import json
from pathlib import Path

import pytest

from tailor.data.dataset import PadCollator, pretrain_dataset, sft_dataset, split_validation
from tailor.data.loading import LoadReport, load_records, require_rows, to_record
from tailor.errors import TailorError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def test_formats_become_canonical_messages():
    alpaca = to_record({"instruction": "Translate", "input": "hi", "output": "你好", "system": "S",
                        "history": [["q0", "a0"]]})
    assert [m["role"] for m in alpaca["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert alpaca["messages"][3]["content"] == "Translate\nhi"
    share = to_record({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
    assert share["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    oai = to_record({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "a"})
    assert oai["answer"] == "a"
    assert to_record({"text": "doc"}) == {"text": "doc"}
    assert to_record({"body": "doc"}, text_field="body") == {"text": "doc"}


def test_unusable_rows_are_counted_with_their_place(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n{not json}\n{"text": ""}\n[1]\n{"messages": [{"role": "user", "content": "q"}]}\n'
                 '{"conversations": [{"from": "alien", "value": "x"}]}\n')
    report = LoadReport()
    recs = load_records([p], report=report)
    assert len(recs) == 1 and report.read == 6 and report.kept == 1
    assert report.skipped["invalid JSON"] == 1 and report.examples["invalid JSON"] == f"{p}:2"
    assert report.skipped["empty text"] == 1 and report.skipped["no assistant answer"] == 1
    assert sum(report.skipped.values()) == 5


def test_no_usable_rows_is_a_clear_error(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"foo": 1}\n')
    report = LoadReport()
    recs = load_records([p], report=report)
    with pytest.raises(TailorError, match="no usable training rows.*no usable fields"):
        require_rows(recs, report, [p], "training")


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(TailorError, match="not found"):
        load_records([tmp_path / "nope.jsonl"])
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(TailorError, match="unsupported"):
        load_records([tmp_path / "x.xml"])
    (tmp_path / "bad.json").write_text('[{"text": 1},')
    with pytest.raises(TailorError, match=r"bad\.json:1"):
        load_records([tmp_path / "bad.json"])


def test_packing_keeps_every_token_but_the_counted_tail(tokenizer):
    recs = [{"text": "Shipping takes 3 to 5 business days."}, {"text": "退货期限是30天。"}] * 10
    report = LoadReport()
    ds = pretrain_dataset(recs, tokenizer, block_size=16, packing=True, report=report)
    stream = []
    for r in recs:
        stream += tokenizer(r["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    flat = [t for row in ds["input_ids"] for t in row]
    assert all(len(row) == 16 for row in ds["input_ids"])
    assert flat == stream[: len(flat)] and len(stream) - len(flat) < 16
    if len(stream) % 16:
        assert any("tail" in k for k in report.skipped)


def test_sft_dataset_and_collator(tokenizer):
    recs = [{"messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "answer"}]},
            {"messages": [{"role": "user", "content": "x " * 300}, {"role": "assistant", "content": "y"}]}]
    report = LoadReport()
    ds = sft_dataset(recs, tokenizer, max_length=32, system_prompt="S", report=report)
    assert len(ds) == 1 and report.skipped["no assistant token within data.max_length"] == 1
    batch = PadCollator(tokenizer.pad_token_id)([ds[0], {"input_ids": [1, 2], "labels": [-100, 2]}])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["labels"][1, 2:].eq(-100).all() and batch["attention_mask"][1].sum() == 2


def test_split_validation_is_seeded_and_disjoint():
    recs = [{"text": str(i)} for i in range(50)]
    a_train, a_val = split_validation(recs, 0.2, seed=1)
    b_train, b_val = split_validation(recs, 0.2, seed=1)
    assert a_val == b_val and len(a_val) == 10 and len(a_train) == 40
    assert not {r["text"] for r in a_val} & {r["text"] for r in a_train}


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared datasets not present")
def test_real_datasets_load():
    report = LoadReport()
    assert len(load_records([SHARED / "alpaca_en_demo.json"], report=report)) == 999
    assert len(load_records([SHARED / "alpaca_zh_demo.json"])) == 1000
    tool = load_records([SHARED / "glaive_toolcall_en_demo.json"], report=(r2 := LoadReport()))
    assert r2.read == 300 and r2.kept + sum(r2.skipped.values()) == 300
    assert len(load_records([SHARED / "c4_demo.jsonl"])) == 300
    wiki = load_records([SHARED / "wiki_demo.txt"])
    assert len(wiki) >= 29 and all("text" in r for r in wiki)
    assert json.loads((SHARED / "dataset_info.json").read_text())
