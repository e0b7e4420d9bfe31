"""One data path: raw data.train files, data.sources and a prepared directory give training the same tokens."""

import json

import pytest

from tailor.config import load_recipe
from tailor.data.prepare import run
from tailor.data.training_data import RUN_DATA, build_training_data
from tailor.errors import TailorError
from tests.conftest import CONVERSATIONS, CORPUS, write_jsonl

BLOCK = 16


def _three_ways(tmp_path, tokenizer, rows: list[dict], *overrides: str):
    """(train, validation, report) from the same rows given as a data.train file, as data.sources, and as a
    directory prepared by `tailor data prepare` (each its own run directory)."""
    f = write_jsonl(tmp_path / "rows.jsonl", rows)
    common = [f"model.tokenizer={tokenizer.name_or_path}", f"data.max_length={BLOCK}", *overrides]
    raw = load_recipe(None, [*common, f"data.train=[{f}]", f"train.output_dir={tmp_path / 'raw'}"])
    sources = load_recipe(None, [*common, f"data.sources=[{{path: {f}}}]", f"data.prepared_dir={tmp_path / 'src'}",
                                 f"train.output_dir={tmp_path / 'src-run'}"])
    prepared = run(load_recipe(None, [*common, f"data.sources=[{{path: {f}}}]", f"data.prepared_dir={tmp_path / 'prep'}"]),
                   tokenizer)
    from_dir = load_recipe(None, [*common, f"data.train=[{prepared.path}]", f"train.output_dir={tmp_path / 'dir-run'}"])
    return [build_training_data(r, tokenizer) for r in (raw, sources, from_dir)]


def _rows(ds):
    return list(ds["input_ids"]), list(ds["labels"])


@pytest.mark.parametrize("packing", [True, False])
def test_pretraining_gets_the_same_blocks_from_files_sources_and_prepared_dirs(tmp_path, tokenizer, packing):
    texts = list(dict.fromkeys(CORPUS))  # distinct: data.sources de-duplicates by default
    docs = [{"text": t} for t in texts] + [{"text": " ".join(texts)}]  # the last one spans several blocks
    ways = _three_ways(tmp_path, tokenizer, docs, "train.objective=pretrain", f"data.packing={str(packing).lower()}")
    first = _rows(ways[0][0])
    for train, val, _ in ways[1:]:
        assert _rows(train) == first and val is None
    ids, labels = first
    assert ids == labels  # loss on every token
    eos = tokenizer.eos_token_id
    encoded = [tokenizer(d["text"], add_special_tokens=False)["input_ids"] + [eos] for d in docs]
    assert len(encoded[-1]) > 2 * BLOCK
    if packing:  # full blocks of the concatenated documents; the counted tail is the only thing left out
        stream = [t for e in encoded for t in e]
        assert all(len(r) == BLOCK for r in ids) and [t for r in ids for t in r] == stream[:len(ids) * BLOCK]
        assert len(stream) % BLOCK == 0 or any("tail tokens" in k for k in ways[0][2].skipped)
    else:  # every document cut into consecutive blocks: no text lost, no block spans two documents
        assert [t for r in ids for t in r] == [t for e in encoded for t in e]
        expected = [e[i:i + BLOCK] for e in encoded for i in range(0, len(e), BLOCK)]
        assert ids == expected and sum(1 for r in ids if len(r) < BLOCK) == len(docs) - sum(len(e) % BLOCK == 0 for e in encoded)


def test_sft_gets_the_same_masked_conversations_from_files_sources_and_prepared_dirs(tmp_path, tokenizer):
    rows = [{"messages": c} for c in CONVERSATIONS]
    ways = _three_ways(tmp_path, tokenizer, rows, "train.objective=sft", "data.max_length=64",
                       "data.system_prompt=You are the store's assistant.")
    first = _rows(ways[0][0])
    for train, _, report in ways[1:]:
        assert _rows(train) == first and report.kept == len(rows)
    for (ids, labels), conv in zip(zip(*first), CONVERSATIONS):
        assert ids[:1] == [tokenizer.bos_token_id]
        text = tokenizer.decode(ids)
        # data.system_prompt is added to conversations without a system message, once; never replaces one
        assert text.count("You are the store's assistant.") == (conv[0]["role"] != "system")
        learned = tokenizer.decode([t for t, lab in zip(ids, labels) if lab != -100])
        answers = [m["content"] for m in conv if m["role"] == "assistant"]
        assert learned == "".join(a + tokenizer.eos_token for a in answers)  # loss on assistant turns only


def test_raw_files_are_prepared_once_in_the_run_directory(tmp_path, tokenizer):
    f = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS])
    recipe = load_recipe(None, [f"model.tokenizer={tokenizer.name_or_path}", f"data.train=[{f}]", "data.max_length=64",
                                f"train.output_dir={tmp_path / 'run'}"])
    build_training_data(recipe, tokenizer)
    cache = tmp_path / "run" / RUN_DATA
    manifest = json.loads((cache / "prepared.json").read_text())
    stamp = (cache / "prepared.json").stat().st_mtime_ns
    build_training_data(recipe, tokenizer)
    assert (cache / "prepared.json").stat().st_mtime_ns == stamp  # unchanged inputs: reused, not rewritten
    with f.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": "A new question?"},
                                          {"role": "assistant", "content": "A new answer."}]}) + "\n")
    train, _, report = build_training_data(recipe, tokenizer)
    assert json.loads((cache / "prepared.json").read_text())["cache_key"] != manifest["cache_key"]
    assert len(train) == len(CONVERSATIONS) + 1 and report.read == len(CONVERSATIONS) + 1


def test_every_row_left_out_is_counted_with_its_reason(tmp_path, tokenizer):
    rows = [{"messages": c} for c in CONVERSATIONS] + [{"text": "a plain document"}]
    rows.append({"messages": [{"role": "user", "content": "x " * 200}, {"role": "assistant", "content": "y"}]})
    f = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with f.open("a", encoding="utf-8") as fh:
        fh.write("{broken\n")
    common = [f"model.tokenizer={tokenizer.name_or_path}", f"data.train=[{f}]", "data.max_length=32",
              f"train.output_dir={tmp_path / 'run'}"]
    with pytest.raises(TailorError, match="invalid JSON") as e:  # data.on_error=raise (the default) names the line
        build_training_data(load_recipe(None, common), tokenizer)
    assert f"{f}:{len(rows) + 1}" in str(e.value)
    train, _, report = build_training_data(load_recipe(None, [*common, "data.on_error=skip"]), tokenizer)
    assert report.read == len(rows) + 1
    assert report.skipped["invalid JSON"] == 1
    assert report.skipped["raw text record in an sft run (needs a conversation)"] == 1
    assert report.skipped["no assistant token within data.max_length"] == 1
    assert report.kept == len(train) == len(CONVERSATIONS)
    assert report.examples["invalid JSON"] == f"{f}:{len(rows) + 1}"


def test_dedup_is_off_for_data_train_files_unless_asked(tmp_path, tokenizer):
    f = write_jsonl(tmp_path / "docs.jsonl", [{"text": CORPUS[0]}] * 3 + [{"text": CORPUS[1]}])
    common = [f"model.tokenizer={tokenizer.name_or_path}", f"data.train=[{f}]", "train.objective=pretrain",
              "data.packing=false"]
    train, _, _ = build_training_data(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'a'}"]), tokenizer)
    asked, _, report = build_training_data(load_recipe(None, [*common, "data.dedup.exact=true",
                                                              f"train.output_dir={tmp_path / 'b'}"]), tokenizer)
    assert report.read == 4 and sum(report.skipped.values()) == 2 and len(asked) < len(train)


def test_a_prepared_directory_must_be_the_only_training_entry(tmp_path, tokenizer):
    f = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS])
    prepared = run(load_recipe(None, [f"data.sources=[{{path: {f}}}]", f"data.prepared_dir={tmp_path / 'p'}"]), tokenizer)
    recipe = load_recipe(None, [f"data.train=[{prepared.path}, {f}]", f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(TailorError, match="only entry"):
        build_training_data(recipe, tokenizer)


def test_processes_preparing_the_same_run_data_at_once_agree(tmp_path, tokenizer):
    """Ranks of a distributed run may all prepare <output_dir>/data; each gets the same complete directory."""
    from concurrent.futures import ThreadPoolExecutor

    f = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS] * 50)
    recipe = load_recipe(None, [f"data.train=[{f}]", "data.max_length=64", f"train.output_dir={tmp_path / 'run'}"])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: build_training_data(recipe, tokenizer), range(4)))
    first = _rows(results[0][0])
    assert all(_rows(train) == first for train, _, _ in results) and len(first[0]) == len(CONVERSATIONS) * 50
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [RUN_DATA]  # no temporary folder left behind
