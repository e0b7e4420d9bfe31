import csv
import datetime
import json
from pathlib import Path

import pytest

from tailor.config import SourceConfig
from tailor.data.packing import PadCollator
from tailor.data.tokenize import pretrain_dataset, sft_dataset
from tailor.data.loading import LoadReport, iter_source, load_records, require_rows, to_record
from tailor.data.records import StepReport, field_value
from tailor.errors import TailorError
from tests.conftest import write_jsonl

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


def test_val_ratio_hold_out_is_seeded_and_disjoint(tmp_path):
    from tailor.config import load_recipe
    from tailor.data.prepare import run
    from tailor.data.training_data import raw_files_recipe

    f = write_jsonl(tmp_path / "docs.jsonl", [{"text": f"document {i}"} for i in range(50)])
    runs = []
    for out in ("a", "b"):
        recipe = load_recipe(None, [f"data.train=[{f}]", "data.val_ratio=0.2", "train.seed=1",
                                    f"train.output_dir={tmp_path / out}"])
        runs.append(run(raw_files_recipe(recipe)))
    (a_train, a_val), (b_train, b_val) = [(p.records("train"), p.records("eval")) for p in runs]
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


# ---------------------------------------------------------------------------------------------
# iter_source: every input type, every format, bad input

ROWS = [{"instruction": "Translate", "input": "hi", "output": "你好", "customer": "c1"},
        {"instruction": "Sum 2+2", "input": "", "output": "4", "customer": "c2"}]
BOOK = [{"role": "user", "content": "Translate\nhi"}, {"role": "assistant", "content": "你好"}]


def _load(on_error="raise", base_dir=None, **src):
    report = StepReport("load")
    return list(iter_source(SourceConfig(**src), on_error, report, base_dir)), report


def _write_csv(path, rows, header=None):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header or list(rows[0]))
        for r in rows:
            w.writerow(list(r.values()) if isinstance(r, dict) else r)
    return path


def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=max(2, len(rows) // 4))
    return path


def test_every_file_type_gives_the_same_records(tmp_path):
    files = {"a.jsonl": write_jsonl(tmp_path / "a.jsonl", ROWS), "b.csv": _write_csv(tmp_path / "b.csv", ROWS),
             "c.parquet": _write_parquet(tmp_path / "c.parquet", ROWS)}
    (tmp_path / "d.json").write_text(json.dumps({"version": 2, "data": ROWS}), encoding="utf-8")
    files["d.json"] = tmp_path / "d.json"
    wheres = {"a.jsonl": ":1", "b.csv": ":2", "c.parquet": "[0]", "d.json": "[0]"}
    for name, path in files.items():
        recs, rep = _load(path=name, base_dir=tmp_path)  # relative path resolves against base_dir
        assert [r["messages"] for r in recs] == [BOOK, [{"role": "user", "content": "Sum 2+2"},
                                                        {"role": "assistant", "content": "4"}]], name
        assert recs[0]["where"] == f"{path}{wheres[name]}" and recs[0]["source"] == path.stem
        assert recs[0]["origin"] == "original" and recs[1]["meta"] == {"customer": "c2"}
        assert field_value(recs[1], "customer") == "c2"
        assert (rep.n_in, rep.n_out, rep.n_dropped) == (2, 2, 0)


def test_txt_per_line_and_per_file(tmp_path):
    p = tmp_path / "wiki.txt"
    p.write_text("first doc\n\n  \nsecond doc\r\n", encoding="utf-8")
    recs, rep = _load(path=str(p))
    assert [r["text"] for r in recs] == ["first doc", "second doc"] and recs[1]["where"] == f"{p}:4"
    assert rep.n_in == 2  # blank lines are not rows
    recs, _ = _load(path=str(p), text_per="file")
    assert [r["text"] for r in recs] == ["first doc\n\n  \nsecond doc\n"] and recs[0]["where"] == str(p)
    with pytest.raises(TailorError, match="plain text"):
        _load(path=str(p), format="alpaca")


def test_sharegpt_tags_system_tools_and_tool_turns(tmp_path):
    row = {"dialog": [{"speaker": "Q", "text": "weather in Oslo?"},
                      {"speaker": "call", "text": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
                      {"speaker": "result", "text": '{"temp": 3}'}, {"speaker": "A", "text": "3 degrees."}],
           "sys": "Be brief.", "tools": [{"name": "weather"}], "ticket": 7}
    p = write_jsonl(tmp_path / "s.jsonl", [row])
    recs, _ = _load(path=str(p), format="sharegpt", columns={"messages": "dialog", "system": "sys"},
                    tags={"role_tag": "speaker", "content_tag": "text", "user_tag": "Q", "assistant_tag": "A",
                          "function_tag": "call", "observation_tag": "result"})
    msgs = recs[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[0]["content"] == 'Be brief.\n\nTools you can call (JSON):\n[{"name": "weather"}]'
    assert msgs[2]["content"].startswith('{"name": "weather"') and msgs[3]["content"] == '{"temp": 3}'
    assert recs[0]["meta"] == {"ticket": 7}
    # default sharegpt names, detected automatically
    p2 = write_jsonl(tmp_path / "d.jsonl", [{"conversations": [{"from": "human", "value": "q"},
                                                               {"from": "function_call", "value": "{}"},
                                                               {"from": "observation", "value": "r"},
                                                               {"from": "gpt", "value": "a"}], "system": "S"}])
    recs, _ = _load(path=str(p2))
    assert [m["role"] for m in recs[0]["messages"]] == ["system", "user", "assistant", "tool", "assistant"]


def test_openai_messages_tool_calls_and_content_parts(tmp_path):
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "Oslo"}]},
                        {"role": "assistant", "content": None, "tool_calls": [
                            {"type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
                        {"role": "tool", "tool_call_id": "1", "content": "3C"},
                        {"role": "assistant", "content": "3 degrees."}]}
    recs, _ = _load(path=str(write_jsonl(tmp_path / "o.jsonl", [row])))
    msgs = recs[0]["messages"]
    assert msgs[0]["content"] == "weather Oslo"
    assert json.loads(msgs[1]["content"]) == {"name": "weather", "arguments": {"city": "Oslo"}}
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]


def test_tool_turns_render_and_are_not_trained(tokenizer):
    from tailor.data.templates import check_messages, encode_conversation, render

    conv = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "CALL"},
            {"role": "tool", "content": "3C"}, {"role": "assistant", "content": "cold"}]
    check_messages(conv)
    text = render(tokenizer, conv)
    assert "<｜tool▁output▁begin｜>3C<｜tool▁output▁end｜><｜Assistant｜>cold" in text
    enc = encode_conversation(tokenizer, conv, max_length=512)
    trained = tokenizer.decode([t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100])
    assert trained == f"CALL{tokenizer.eos_token}cold{tokenizer.eos_token}"


def test_alpaca_history_classification_and_column_mapping(tmp_path):
    rows = [{"question": "and 3+3?", "answer": "6", "sys": "Math tutor", "past": [["2+2?", "4"]]},
            {"body": "great product", "category": "positive", "stars": 5},
            {"dialog": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    p = write_jsonl(tmp_path / "m.jsonl", rows)
    cols = {"instruction": "question", "output": "answer", "system": "sys", "history": "past",
            "text": "body", "label": "category", "messages": "dialog"}
    recs, _ = _load(path=str(p), columns=cols)
    assert [m["role"] for m in recs[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert recs[0]["messages"][0]["content"] == "Math tutor" and recs[0]["messages"][3]["content"] == "and 3+3?"
    assert recs[1] | {"meta": None} == {"text": "great product", "label": "positive", "meta": None, "where": f"{p}:2",
                                        "source": "m", "origin": "original"}
    assert recs[1]["meta"] == {"stars": 5}
    assert recs[2]["messages"][1] == {"role": "assistant", "content": "hello"}
    with pytest.raises(TailorError, match="(?s)unknown columns key 'outptu'.*did you mean 'output'"):
        _load(path=str(p), columns={"outptu": "x"})


def test_preference_shapes(tmp_path):
    rows = [{"prompt": "q1", "chosen": "good", "rejected": "bad"},
            {"conversations": [{"from": "human", "value": "q2"}], "chosen": {"from": "gpt", "value": "good"},
             "rejected": {"from": "gpt", "value": "bad"}},
            {"instruction": "q3", "input": "ctx", "chosen": "good", "rejected": "bad", "system": "S"},
            {"prompt": [{"role": "user", "content": "q4"}], "chosen": [{"role": "assistant", "content": "good"}],
             "rejected": [{"role": "assistant", "content": "bad"}]}]
    recs, _ = _load(path=str(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert [r["prompt"][-1]["content"] for r in recs] == ["q1", "q2", "q3\nctx", "q4"]
    assert all((r["chosen"], r["rejected"]) == ("good", "bad") for r in recs)
    assert recs[2]["prompt"][0] == {"role": "system", "content": "S"}
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q", "chosen": "", "rejected": "x"},
                                             {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                                              "chosen": "x", "rejected": "y"}])
    _, rep = _load("skip", path=str(bad))
    assert rep.dropped == {"empty 'chosen'": 1, "prompt does not end with a user turn": 1}


def test_folder_glob_and_max_rows(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(3)])
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}"} for i in range(2)])
    write_jsonl(tmp_path / "sub" / "c.jsonl", [{"text": "c0"}])
    (tmp_path / "README.md").write_text("not data")
    (tmp_path / "dataset_info.json").write_text('{"x": {"file_name": "a.jsonl"}}')
    recs, _ = _load(path=str(tmp_path))
    assert [r["text"] for r in recs] == ["a0", "a1", "b0", "b1", "b2"] and recs[2]["source"] == "b"
    recs, _ = _load(path=str(tmp_path / "**" / "*.jsonl"))
    assert [r["text"] for r in recs] == ["a0", "a1", "b0", "b1", "b2", "c0"]
    recs, rep = _load(path="*.json*", base_dir=tmp_path, max_rows=3)  # matches dataset_info.json too: not rows
    assert [r["text"] for r in recs] == ["a0", "a1", "b0"] and rep.n_in == 3
    with pytest.raises(TailorError, match="no data files match"):
        _load(path=str(tmp_path / "*.parquet"))
    with pytest.raises(TailorError, match="not found"):
        _load(path=str(tmp_path / "nope.jsonl"))


def test_saved_datasets_dir(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list([{"text": f"doc {i}", "label": i % 2} for i in range(5)])
    ds.save_to_disk(str(tmp_path / "one"))
    DatasetDict({"train": ds.select(range(3)), "test": ds.select(range(3, 5))}).save_to_disk(str(tmp_path / "two"))
    recs, rep = _load(path=str(tmp_path / "one"))
    assert [(r["text"], r["label"]) for r in recs] == [(f"doc {i}", i % 2) for i in range(5)]
    assert recs[4]["where"] == f"{tmp_path / 'one'}[4]" and recs[0]["source"] == "one" and rep.n_in == 5
    recs, _ = _load(path=str(tmp_path / "two"), format="text", max_rows=4)
    assert [r["text"] for r in recs] == ["doc 0", "doc 1", "doc 2", "doc 3"]
    assert recs[3]["where"] == f"{tmp_path / 'two'}[test][0]" and recs[3]["meta"] == {"label": 1}


def test_meta_keeps_scalars_and_json_text(tmp_path):
    when = datetime.datetime(2024, 5, 1, 12, 30)
    p = _write_parquet(tmp_path / "t.parquet", [{"text": "x", "when": when, "tags": ["a", "b"], "score": 0.5}] * 3)
    recs, _ = _load(path=str(p))
    assert recs[0]["meta"] == {"when": "2024-05-01T12:30:00", "tags": '["a", "b"]', "score": 0.5}
    assert json.loads(json.dumps(recs[0]))  # the whole record is JSON-able


def _break_last_row_group(path):
    """Overwrite the last Parquet row group's pages: reading the whole file fails, streaming the first does not."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    col = md.row_group(md.num_row_groups - 1).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):
        pq.read_table(path)


def test_streaming_reads_only_what_is_asked(tmp_path):
    # A bad row far down the file is never reached when only the first record is taken: the readers
    # stream instead of loading the file.
    import tracemalloc

    big = [{"text": f"row {i} " + "x" * 400} for i in range(5000)]  # about 2 MB a file
    files = [write_jsonl(tmp_path / "s.jsonl", big), _write_csv(tmp_path / "s.csv", big),
             _write_parquet(tmp_path / "s.parquet", big)]
    with files[0].open("a") as f:
        f.write("{broken\n")
    with files[1].open("a") as f:
        f.write('"unterminated\n')
    _break_last_row_group(files[2])
    (tmp_path / "s.txt").write_text("".join(r["text"] + "\n" for r in big), encoding="utf-8")
    for path in [*files, tmp_path / "s.txt"]:
        report = StepReport("load")
        it = iter_source(SourceConfig(path=str(path)), "raise", report)
        tracemalloc.start()
        try:
            first = next(it)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert first["text"] == big[0]["text"] and report.n_in == 1, path
        if path.suffix != ".parquet":  # Parquet holds one 1024-row batch; its broken last row group proves streaming
            assert peak < 500_000, (path, peak)  # Python-side memory, a fraction of the 2 MB file


def test_bad_rows_raise_with_place_or_are_counted(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n{oops\n{"instruction": "a"}\n{"instruction": "a", "output": 3}\n'
                 '{"conversations": [{"from": "alien", "value": "x"}, {"from": "gpt", "value": "y"}]}\n'
                 '{"messages": [{"role": "user", "content": "q"}]}\n"just a string"\n{"nothing": 1}\n',
                 encoding="utf-8")
    with pytest.raises(TailorError, match=rf"(?s)invalid JSON.*where: {p}:2.*column 2"):
        _load(path=str(p))
    q = tmp_path / "q.jsonl"
    q.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n')
    with pytest.raises(TailorError, match=rf"(?s)missing field 'output'.*where: {q}:2, field 'output'.*fix:"):
        _load(path=str(q), format="alpaca")
    recs, rep = _load("skip", path=str(p), format="auto")
    assert len(recs) == 1 and rep.n_in == 8 and rep.n_out == 1
    assert rep.dropped == {"invalid JSON": 1, "no usable fields": 2, "'output' is not a string": 1,
                           "unknown role 'alien'": 1, "no assistant answer": 1, "row is not a JSON object": 1}
    assert rep.examples["invalid JSON"] == f"{p}:2" and rep.examples["unknown role 'alien'"] == f"{p}:5"
    q.with_name("s.jsonl").write_text('{"conversations": [{"from": "alien", "value": "x"}]}\n')
    with pytest.raises(TailorError, match=r"(?s)unknown role 'alien'.*conversations\[0\]\.from.*tags"):
        _load(path=str(q.with_name("s.jsonl")), format="sharegpt")
    with pytest.raises(ValueError, match="on_error"):
        _load("ignore", path=str(p))


def test_csv_problems(tmp_path):
    p = _write_csv(tmp_path / "q.csv", [["what?", "this"], ["only one cell"], ["why?", "because"]], header=["q", "a"])
    recs, rep = _load("skip", path=str(p), columns={"instruction": "q", "output": "a"})
    assert len(recs) == 2 and rep.dropped == {"wrong number of CSV fields": 1}
    assert rep.examples["wrong number of CSV fields"] == f"{p}:3"
    with pytest.raises(TailorError, match=r"column 'answer' named in `columns` is not in the file \(it has: q, a\)"):
        _load("skip", path=str(p), columns={"instruction": "q", "output": "answer"})
    with pytest.raises(TailorError, match="missing field 'output'"):
        _load(path=str(p), format="alpaca", columns={"instruction": "q"})


def test_legacy_api_reads_new_inputs(tmp_path):
    p = _write_csv(tmp_path / "q.csv", ROWS)
    report = LoadReport()
    recs = load_records([p], report=report)
    assert recs[0]["messages"] == BOOK and "meta" not in recs[0] and report.read == 2 and report.kept == 2
    assert len(load_records([tmp_path / "*.csv"])) == 2
    with pytest.raises(TailorError, match="is a folder"):
        load_records([tmp_path])
    pref = tmp_path / "p.jsonl"
    pref.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    assert load_records([pref], report=(r := LoadReport())) == [] and r.read == 1 and sum(r.skipped.values()) == 1
