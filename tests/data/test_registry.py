import json
from collections import Counter
from pathlib import Path

import pytest

from tailor.config import SourceConfig
from tailor.data.loading import iter_source
from tailor.data.records import StepReport, record_kind
from tailor.data.registry import resolve_registry
from tailor.errors import TailorError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def _load(registry, name, on_error="raise", base_dir=None, **extra):
    report = StepReport(name)
    recs = list(iter_source(SourceConfig(registry=str(registry), name=name, **extra), on_error, report, base_dir))
    return recs, report


def _registry(tmp_path, entries: dict, files: dict) -> Path:
    for name, rows in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".jsonl"):
            p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        elif name.endswith(".txt"):
            p.write_text(rows, encoding="utf-8")
        else:
            p.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    return tmp_path / "dataset_info.json"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared LLaMA-Factory demo datasets not present")
def test_every_entry_of_the_real_registry():
    expected = {"identity": (91, "chat"), "alpaca_en_demo": (999, "chat"), "alpaca_zh_demo": (1000, "chat"),
                "glaive_toolcall_en_demo": (300, "chat"), "dpo_en_demo": (300, "preference"),
                "wiki_demo": (30, "text"), "c4_demo": (300, "text")}
    assert set(json.loads((SHARED / "dataset_info.json").read_text())) == set(expected)
    for name, (rows, kind) in expected.items():
        recs, rep = _load(SHARED, name)
        assert (rep.n_in, rep.n_out, len(recs)) == (rows, rows, rows), name
        assert {record_kind(r) for r in recs} == {kind}, name
        assert all(r["source"] == name and r["origin"] == "original" for r in recs)
    tool, _ = _load(SHARED, "glaive_toolcall_en_demo")
    roles = Counter(m["role"] for r in tool for m in r["messages"])
    assert roles["tool"] == 211 and roles["user"] == 746 and roles["assistant"] == 746 + 211
    assert roles["system"] == 191  # rows whose `tools` is not empty get the tool definitions as system text
    first = tool[0]["messages"]
    assert first[0]["role"] == "system" and "search_recipes" in first[0]["content"]
    call = next(m for m in first if m["content"].startswith('{"name": "search_recipes"'))
    assert call["role"] == "assistant" and first[first.index(call) + 1]["role"] == "tool"
    dpo, _ = _load(SHARED, "dpo_en_demo")
    assert all(r["prompt"][-1]["role"] == "user" and r["chosen"] and r["rejected"] for r in dpo)
    ident, _ = _load(SHARED, "identity")
    assert ident[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content":
                                    "Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?"}]
    wiki, _ = _load(SHARED, "wiki_demo")
    assert wiki[0]["text"].startswith("Anarchism") and wiki[0]["where"].endswith("wiki_demo.txt:1")


def test_alpaca_columns_follow_llamafactory(tmp_path):
    rows = [{"q": "Capital of France?", "ctx": "one word", "a": "Paris", "sys": "Geo", "hist": [["hi", "hello"]],
             "input": "not read: the entry lists columns without `query`", "system": "not read either", "id": 1}]
    reg = _registry(tmp_path, {"geo": {"file_name": "geo.json", "columns": {
        "prompt": "q", "query": "ctx", "response": "a", "system": "sys", "history": "hist"}},
        "geo2": {"file_name": "geo.json", "columns": {"prompt": "q", "response": "a"}}}, {"geo.json": rows})
    recs, _ = _load(reg, "geo")
    assert recs[0]["messages"] == [{"role": "system", "content": "Geo"}, {"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "hello"},
                                   {"role": "user", "content": "Capital of France?\none word"},
                                   {"role": "assistant", "content": "Paris"}]
    assert recs[0]["meta"]["id"] == 1 and recs[0]["source"] == "geo"
    recs, _ = _load(reg, "geo2")  # columns not listed are not read (LLaMA-Factory's rule); they stay in meta
    assert recs[0]["messages"] == [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]
    assert set(recs[0]["meta"]) == {"ctx", "sys", "hist", "input", "system", "id"}


def test_sharegpt_openai_tags_ranking_pretraining_and_folders(tmp_path):
    chat = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"}]}]
    rank = [{"instruction": "q", "input": "", "chosen": "good", "rejected": "bad"}]
    reg = _registry(tmp_path, {
        "oai": {"file_name": "oai.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant", "system_tag": "system"}},
        "rank": {"file_name": "rank.json", "ranking": True},
        "pt": {"file_name": "docs", "columns": {"prompt": "body"}, "num_samples": 3},
        "lines": {"file_name": "lines.txt", "columns": {"prompt": "text"}},
    }, {"oai.jsonl": chat, "rank.json": rank, "docs/1.jsonl": [{"body": f"d{i}"} for i in range(2)],
        "docs/2.json": [{"body": f"e{i}"} for i in range(2)], "lines.txt": "one\ntwo\n"})
    recs, _ = _load(tmp_path, "oai")  # the registry's folder works as well as the file
    assert recs[0]["messages"] == chat[0]["messages"]
    recs, _ = _load(reg, "rank")
    assert recs[0]["prompt"] == [{"role": "user", "content": "q"}] and recs[0]["chosen"] == "good"
    recs, rep = _load(reg, "pt")  # file_name is a folder; num_samples caps the rows
    assert [r["text"] for r in recs] == ["d0", "d1", "e0"] and rep.n_in == 3
    recs, _ = _load(reg, "pt", max_rows=1)
    assert [r["text"] for r in recs] == ["d0"]
    recs, _ = _load("dataset_info.json", "lines", base_dir=tmp_path)  # relative registry path
    assert [r["text"] for r in recs] == ["one", "two"]
    src = resolve_registry(reg, "oai")
    assert Path(src.path) == tmp_path / "oai.jsonl" and src.format == "sharegpt" and src.tags["role_tag"] == "role"


def test_registry_errors(tmp_path):
    reg = _registry(tmp_path, {
        "alpaca_en_demo": {"file_name": "a.json"},
        "hub": {"hf_hub_url": "someone/some-data", "formatting": "sharegpt"},
        "script": {"script_url": "my_script"},
        "pictures": {"file_name": "a.json", "columns": {"prompt": "q", "response": "a", "videos": "vid"}},
        "typo": {"file_name": "a.json", "columns": {"promt": "q"}},
        "gone": {"file_name": "missing.json"},
        "badrow": {"file_name": "a.json", "formatting": "sharegpt"},
    }, {"a.json": [{"instruction": "q", "output": "a"}]})
    with pytest.raises(TailorError, match="no dataset named 'alpaca_demo'.*(\n.*)*closest names: alpaca_en_demo"):
        resolve_registry(reg, "alpaca_demo")
    for name, key in (("hub", "hf_hub_url: someone/some-data"), ("script", "script_url: my_script")):
        with pytest.raises(TailorError, match=rf"(?s)'{name}' is not a local file \({key}\).*does not download"
                                              r".*download the data files.*file_name"):
            resolve_registry(reg, name)
    with pytest.raises(TailorError, match="cannot use videos"):
        resolve_registry(reg, "pictures")
    with pytest.raises(TailorError, match="(?s)unknown column key 'promt'.*did you mean 'prompt'"):
        resolve_registry(reg, "typo")
    with pytest.raises(TailorError, match="not found"):
        resolve_registry(reg, "gone")
    with pytest.raises(TailorError, match="dataset registry not found"):
        resolve_registry(tmp_path / "nowhere", "x")
    with pytest.raises(TailorError, match=r"(?s)missing field 'conversations'.*a\.json\[0\]"):
        _load(reg, "badrow")
    recs, rep = _load(reg, "badrow", on_error="skip")
    assert recs == [] and rep.dropped == {"missing field 'conversations'": 1}
