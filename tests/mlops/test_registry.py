"""The model registry (CRUD, rollback chain, concurrent writers, bad input) and refresh's building blocks."""

import json
import multiprocessing
import os
import sqlite3

import pytest

from tailor.cli import main
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.mlops import drift
from tailor.mlops.refresh import _merged, flatten, history, load_adapter_weights, mix_data, run_key, train_candidate
from tailor.mlops.registry import ModelVersion, Registry

PG_URL = os.environ.get("TAILOR_TEST_POSTGRES_URL")  # e.g. postgresql+psycopg://postgres@localhost/tailor_test


@pytest.fixture
def dirs(tmp_path):
    out = []
    for i in range(1, 5):
        (tmp_path / f"m{i}").mkdir()
        out.append(tmp_path / f"m{i}")
    return out


def _crud(reg: Registry, dirs) -> None:
    assert reg.production("bot") is None and reg.revision("bot") == 0
    v1 = reg.register("bot", dirs[0], recipe={"data": {"train": ["a.jsonl"]}}, data_fingerprint="f1",
                      metrics={"answer_perplexity": 5.0, "bad": float("nan")}, note="first")
    assert (v1.version, v1.stage, v1.parent) == (1, "candidate", None)
    got = reg.get("bot", 1)
    assert got.recipe == {"data": {"train": ["a.jsonl"]}} and got.metrics == {"answer_perplexity": 5.0, "bad": None}
    assert reg.revision("bot") == 0  # registering a candidate does not move the production alias
    reg.promote("bot", 1, reason="month 1")
    assert reg.production("bot").version == 1 and reg.revision("bot") == 1
    assert reg.promote("bot", 1).stage == "production" and reg.revision("bot") == 1  # no-op
    reg.register("bot", dirs[1], parent=1, stage="production", reason="month 2")
    reg.register("bot", dirs[2], parent=2)
    reg.promote("bot", 3)
    assert [(v.version, v.stage) for v in reg.versions("bot")] == [(1, "archived"), (2, "archived"), (3, "production")]
    assert reg.revision("bot") == 3
    # Rollback walks back through the promotion history: 3 -> 2 -> 1, then there is nothing earlier.
    assert reg.rollback("bot").version == 2 and reg.production("bot").version == 2
    assert reg.rollback("bot", reason="again").version == 1
    with pytest.raises(TailorError, match="did not replace an earlier production version"):
        reg.rollback("bot")
    assert reg.rollback("bot", to=3).version == 3 and reg.revision("bot") == 6
    rejected = reg.register("bot", dirs[3], parent=3, stage="rejected", reason="worse on the old set")
    assert rejected.stage == "rejected" and reg.production("bot").version == 3
    with pytest.raises(TailorError, match="was rejected .worse on the old set. and cannot be promoted"):
        reg.promote("bot", 4)
    reg.set_metrics("bot", 1, {"fact_accuracy": 0.5})
    assert reg.get("bot", 1).metrics == {"answer_perplexity": 5.0, "bad": None, "fact_accuracy": 0.5}
    actions = [e["action"] for e in reg.events("bot")]
    assert actions.count("register") == 4 and actions.count("promote") == 3 and actions.count("rollback") == 3
    assert actions[-2:] == ["reject", "metrics"]
    promote2 = [e for e in reg.events("bot", 2) if e["action"] == "promote"][0]
    assert promote2["reason"] == "month 2" and promote2["details"]["previous"] == 1 and promote2["time"]
    assert reg.names() == ["bot"] and reg.versions("nobody") == []
    with pytest.raises(TailorError, match="bot has no version 9") as e:
        reg.get("bot", 9)
    assert "known versions: 1, 2, 3, 4" in str(e.value)
    with pytest.raises(TailorError, match="production version changed"):
        reg.register("bot", dirs[0], stage="production", expect_production=1)
    assert len(reg.versions("bot")) == 4


def test_crud_promote_rollback_reject_on_sqlite(tmp_path, dirs):
    with Registry(tmp_path / "reg.db") as reg:
        _crud(reg, dirs)
    assert sqlite3.connect(tmp_path / "reg.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL: set TAILOR_TEST_POSTGRES_URL to a scratch database to run")
def test_crud_on_postgresql(dirs):
    from sqlalchemy import create_engine, text

    with create_engine(PG_URL).begin() as conn:  # a clean slate: the test owns this scratch database
        for table in ("tailor_events", "tailor_versions", "tailor_models", "tailor_registry_meta"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    with Registry(PG_URL) as reg:
        _crud(reg, dirs)
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError, match="tailor_one_production"):  # the partial unique index exists here too
        with create_engine(PG_URL).begin() as conn:
            conn.execute(text("UPDATE tailor_versions SET stage = 'production' WHERE version = 1"))


def test_the_database_itself_refuses_a_second_production_version(tmp_path, dirs):
    with Registry(tmp_path / "reg.db") as reg:
        reg.register("bot", dirs[0], stage="production")
        reg.register("bot", dirs[1])
    db = sqlite3.connect(tmp_path / "reg.db")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute("UPDATE tailor_versions SET stage = 'production' WHERE version = 2")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.execute("UPDATE tailor_versions SET stage = 'live' WHERE version = 2")


def _writer(url: str, path: str, worker: int, n: int) -> None:
    reg = Registry(url)
    for i in range(n):
        mv = reg.register("bot", path, note=f"worker {worker} #{i}", metrics={"worker": worker})
        reg.promote("bot", mv.version, reason=f"worker {worker}")
    reg.close()


def _concurrent(url: str, path, workers: int = 4, n: int = 10) -> Registry:
    ctx = multiprocessing.get_context("fork")  # the worker function is inherited, not imported by name
    procs = [ctx.Process(target=_writer, args=(url, str(path), w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers
    reg = Registry(url)
    versions = reg.versions("bot")
    assert sorted(v.version for v in versions) == list(range(1, workers * n + 1))
    assert [v.stage for v in versions].count("production") == 1
    assert {v.stage for v in versions} == {"production", "archived"}
    events = reg.events("bot")
    actions = [e["action"] for e in events]
    assert actions.count("register") == workers * n and actions.count("promote") == workers * n
    assert actions.count("archive") == workers * n - 1 and reg.revision("bot") == workers * n
    last_promoted = [e["version"] for e in events if e["action"] == "promote"][-1]
    assert reg.production("bot").version == last_promoted
    for w in range(workers):  # every worker's writes are all there
        assert sum(1 for v in versions if v.metrics["worker"] == w) == n
    return reg


def test_concurrent_writers_in_several_processes(tmp_path, dirs):
    reg = _concurrent(str(tmp_path / "reg.db"), dirs[0])
    reg.close()
    assert sqlite3.connect(tmp_path / "reg.db").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL: set TAILOR_TEST_POSTGRES_URL to a scratch database to run")
def test_concurrent_writers_on_postgresql(dirs):
    from sqlalchemy import create_engine, text

    with create_engine(PG_URL).begin() as conn:
        for table in ("tailor_events", "tailor_versions", "tailor_models", "tailor_registry_meta"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    _concurrent(PG_URL, dirs[0]).close()


# ---------------------------------------------------------------------------------------------
# The CLI: bad input exits 2 with a clear message


def test_registry_cli_and_its_errors(tmp_path, dirs, capsys, monkeypatch):
    url = str(tmp_path / "reg.db")
    monkeypatch.setenv("TAILOR_REGISTRY", url)
    assert main(["registry", "list"]) == 2 and "there is no registry at" in capsys.readouterr().err
    assert not (tmp_path / "reg.db").exists()  # a read does not create an empty registry
    (tmp_path / "metrics.json").write_text(json.dumps({"answer_perplexity": 4.5, "n": 8, "efficiency": {"seconds": 1.0},
                                                       "worst_examples": [{"a": 1}]}))
    assert main(["registry", "register", "bot", str(dirs[0]), "--metrics", str(tmp_path / "metrics.json"), "--note", "v1"]) == 0
    assert main(["registry", "register", "bot", str(dirs[1]), "--parent", "1", "--stage", "production"]) == 0
    capsys.readouterr()
    assert main(["registry", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["stage"]) for v in listed] == [(1, "candidate"), (2, "production")]
    assert listed[0]["metrics"] == {"answer_perplexity": 4.5, "n": 8, "efficiency/seconds": 1.0}
    assert main(["registry", "show", "bot", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2 and [e["action"] for e in shown["events"]] == ["register", "promote"]

    def fails(argv, *needles):
        assert main(argv) == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, err

    fails(["registry", "show", "bot", "7"], "bot has no version 7", "known versions: 1, 2")
    fails(["registry", "list", "nobody"], "no versions of 'nobody'", "registered models: bot")
    fails(["registry", "promote", "bot", "9"], "no version 9")
    fails(["registry", "rollback", "bot"], "did not replace an earlier production version", "--to V")
    fails(["registry", "rollback", "other"], "other has no production version to roll back")
    fails(["registry", "register", "bad name!", str(dirs[0])], "invalid model name")
    fails(["registry", "register", "bot", str(tmp_path / "missing")], "model path does not exist")
    (tmp_path / "broken.json").write_text("{not json")
    fails(["registry", "register", "bot", str(dirs[0]), "--metrics", str(tmp_path / "broken.json")], "not valid JSON")
    fails(["registry", "list", "--url", "foo://nowhere"], "cannot open the registry", "postgresql")
    fails(["registry", "list", "--url", str(tmp_path)], "the registry path is a directory")
    assert main(["registry", "list", "--url", "postgresql+psycopg://nobody@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err  # without a driver installed: which one to install; with one: the connection error
    assert "cannot open the registry" in err or "registry database error" in err, err
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    fails(["registry", "list", "--url", str(tmp_path / "garbage.db")], "registry database error")
    with pytest.raises(SystemExit) as e:  # argparse: VERSION must be a number
        main(["registry", "promote", "bot", "x"])
    assert e.value.code == 2 and "invalid int value" in capsys.readouterr().err
    # A rejected version cannot be promoted.
    with Registry(url) as reg:
        reg.register("bot", dirs[2], stage="rejected", reason="worse on the old held-out set")
    fails(["registry", "promote", "bot", "3"], "v3 was rejected (worse on the old held-out set)")
    assert main(["registry", "promote", "bot", "1", "--reason", "back"]) == 0
    assert "promoted bot v1 to production (v2 archived)" in capsys.readouterr().out


def test_refresh_bad_input_exits_2(tmp_path, dirs, capsys, monkeypatch):
    monkeypatch.setenv("TAILOR_REGISTRY", str(tmp_path / "reg.db"))
    data = tmp_path / "new.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    recipe = tmp_path / "refresh.yaml"

    def fails(body: str, *needles, extra=()):
        recipe.write_text(body)
        assert main(["refresh", str(recipe), *extra]) == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, err

    fails("refresh: {new_data: new.jsonl}\n", "no model to refresh", "refresh.model_name")
    fails("refresh: {model_name: bot}\n", "no new data given")
    fails("refresh: {model_name: bot, new_data: missing.jsonl}\n", "new data not found", "missing.jsonl")
    fails("refresh: {model_name: bot, new_data: new.jsonl}\ndata: {train: [new.jsonl]}\n", "recipe sets data.train")
    fails("refresh: {model_name: bot, new_data: new.jsonl, treshold: 0.2}\n", "unknown setting 'refresh.treshold'",
          "Did you mean 'refresh.threshold'")
    fails("refresh: {model_name: bot, new_data: new.jsonl}\n", "there is no registry at", str(tmp_path / "reg.db"))
    with Registry(tmp_path / "reg.db") as reg:
        assert reg.production("bot") is None
    fails("refresh: {model_name: bot, new_data: new.jsonl}\n", "bot has no production version to refresh")
    with Registry(tmp_path / "reg.db") as reg:
        reg.register("bot", dirs[0])
    fails("refresh: {model_name: bot, new_data: new.jsonl}\n", "it has v1 (candidate)", "tailor registry promote bot 1")
    fails("refresh: {model_name: bot, new_data: new.jsonl}\n", "cannot open the registry", extra=["--url", "nope://x"])


# ---------------------------------------------------------------------------------------------
# Refresh's building blocks


def test_continuing_an_adapter_loads_it_exactly_and_trainable(tmp_path, llama_dir, tokenizer):
    import torch

    from tailor.adapters import apply_adapter
    from tailor.adapters.merge import load_with_adapter
    from tailor.config import AdapterConfig
    from tailor.models.loading import load_model

    cfg = AdapterConfig(method="lora", r=4, alpha=8)
    trained = apply_adapter(load_model(llama_dir, for_training=True), cfg)
    torch.manual_seed(0)
    for name, p in trained.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a fresh LoRA is a no-op (B = 0); make this one change the outputs
    trained.save_pretrained(tmp_path / "adapter")
    ids = tokenizer("Tents can be returned within 60 days.", return_tensors="pt")["input_ids"]
    reference, _ = load_with_adapter(tmp_path / "adapter", llama_dir)
    fresh = apply_adapter(load_model(llama_dir, for_training=True), cfg)
    load_adapter_weights(fresh, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(ids).logits, reference.eval()(ids).logits, atol=1e-6)
        assert not torch.allclose(fresh(ids).logits, load_model(llama_dir)(ids).logits, atol=1e-3)
    assert all(p.requires_grad for n, p in fresh.named_parameters() if "lora_" in n)
    merged, _, base = _merged(str(tmp_path / "adapter"), str(llama_dir))  # last-n-layers on an adapter
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, reference(ids).logits, atol=1e-5) and merged.training
    assert base == llama_dir and not any("lora_" in n for n, _ in merged.named_parameters())
    other = apply_adapter(load_model(llama_dir, for_training=True), AdapterConfig(method="lora", r=8, alpha=8))
    with pytest.raises(Exception, match="size mismatch|does not fit"):
        load_adapter_weights(other, tmp_path / "adapter")


def test_continue_adapter_refuses_a_full_model(tmp_path, llama_dir, chat_file):
    recipe = load_recipe(None, ["refresh.model_name=bot", f"refresh.new_data=[{chat_file}]"])
    prod = ModelVersion("bot", 1, "production", str(llama_dir), None)
    with pytest.raises(TailorError, match="is a full model, not an adapter") as e:
        train_candidate(recipe, prod, {"path": str(chat_file)}, tmp_path / "work")
    assert "refresh.mode=last-n-layers" in e.value.fix


def test_mix_replays_the_share_of_old_data(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"text": f"old {i}"}) + "\n" for i in range(50)))
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps({"text": f"new {i}"}) + "\n" for i in range(30)))
    prod = ModelVersion("bot", 1, "production", str(tmp_path), None, recipe={"data": {"train": [str(old)]}})
    recipe = load_recipe(None, ["refresh.replay=0.4"])
    mix = mix_data(recipe, prod, {"train": str(new), "all": str(new)}, tmp_path / "work")
    rows = [json.loads(line)["text"] for line in open(mix["path"])]
    assert (mix["new_rows"], mix["replay_rows"], len(rows)) == (30, 20, 50)
    assert sum(r.startswith("old") for r in rows) == 20 and len(set(rows)) == 50
    assert mix_data(recipe, prod, {"train": str(new), "all": str(new)}, tmp_path / "again")["path"] != mix["path"]
    assert open(mix["path"]).read() == open(tmp_path / "again" / "data" / "mix.jsonl").read()  # seeded: same mix
    bare = ModelVersion("bot", 1, "production", str(tmp_path), None)
    with pytest.raises(TailorError, match="records no training data to replay"):
        mix_data(recipe, bare, {"train": str(new)}, tmp_path / "work2")
    assert mix_data(load_recipe(None, ["refresh.replay=0"]), bare, {"train": str(new)}, tmp_path / "w3")["replay_rows"] == 0


def test_run_key_lineage_and_flatten(tmp_path):
    recipe = load_recipe(None, ["refresh.model_name=bot"])
    key = run_key("bot", 1, "abc", recipe)
    assert key == run_key("bot", 1, "abc", load_recipe(None, ["refresh.model_name=bot", "refresh.registry=other.db"]))
    assert len({key, run_key("bot", 2, "abc", recipe), run_key("bot", 1, "abd", recipe),
                run_key("bot", 1, "abc", load_recipe(None, ["refresh.model_name=bot", "train.lr=1e-3"]))}) == 4
    assert history({"data": {"train": ["a"]}, "eval": {"data": ["b"]}}, "train") == ["a"]
    assert history({"data": {"train": ["a"], "eval": ["c"]}}, "holdout") == ["c"]
    assert history({"lineage": {"holdout": ["x", "y"]}, "eval": {"data": ["b"]}}, "holdout") == ["x", "y"]
    rec = {"messages": [], "meta": {"answer": "30 days", "lang": "en"}, "where": "f:1", "source": "s", "origin": "original",
           "split": "train"}
    assert flatten(rec) == {"messages": [], "answer": "30 days", "lang": "en"}
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text("x")
    fp = drift.data_fingerprint([tmp_path / "d"])
    (tmp_path / "d" / "a.jsonl").write_text("y")
    assert drift.data_fingerprint([tmp_path / "d"]) != fp
    with pytest.raises(TailorError, match="data path not found"):
        drift.data_fingerprint([tmp_path / "nope"])


def test_drift_decision_and_combined_perplexity():
    cfg = load_recipe(None, ["refresh.threshold=0.15", "refresh.task_drop=0.1"]).refresh
    base = {"perplexity": 10.0, "fact_accuracy": 0.8}
    assert not drift.check_drift(base, {"perplexity": 11.4, "fact_accuracy": 0.75}, cfg)["degraded"]
    up = drift.check_drift(base, {"perplexity": 11.6, "fact_accuracy": 0.8}, cfg)
    assert up["degraded"] and abs(up["rise"] - 0.16) < 1e-9 and "+16.0%" in up["reasons"][0]
    down = drift.check_drift(base, {"perplexity": 10.0, "fact_accuracy": 0.6}, cfg)
    assert down["degraded"] and "fact_accuracy" in down["reasons"][0]
    both = drift.combine([{"perplexity": 2.0, "tokens": 10, "n": 2, "fact_accuracy": 1.0},
                          {"perplexity": 8.0, "tokens": 10, "n": 6, "fact_accuracy": 0.0}], "fact_accuracy")
    assert abs(both["perplexity"] - 4.0) < 1e-9 and both["fact_accuracy"] == 0.25 and both["n"] == 8
    with pytest.raises(TailorError, match="no perplexity to compare"):
        drift.check_drift({}, {"perplexity": 3.0}, cfg)


def test_gate_min_gain_demands_a_large_enough_drop_on_the_new_set(tmp_path, monkeypatch):
    """refresh.min_gain: a candidate 10% better on the new set passes with min_gain 0 and 0.05, fails with 0.2."""
    from tailor.config import EvalConfig, RefreshConfig

    def fake_compare(a, b, files, eval_cfg, out_dir):
        a_ppl, b_ppl = (5.0, 5.0) if "old" in files[0] else (10.0, 9.0)
        row = {"name": "answer_perplexity", "diff": b_ppl - a_ppl, "mean_a": a_ppl, "mean_b": b_ppl,
               "ci_low": b_ppl - a_ppl, "ci_high": b_ppl - a_ppl}
        return {"n": 4, "scores": [row], "corpus": [], "a": {"metrics": {"answer_perplexity": a_ppl}},
                "b": {"metrics": {"answer_perplexity": b_ppl}}}

    monkeypatch.setattr(drift, "_compare", fake_compare)
    decisions = {}
    for gain in (0.0, 0.05, 0.2):
        cfg = RefreshConfig(model_name="bot", new_data="new.jsonl", min_gain=gain, task_metric=None)
        decisions[gain] = drift.gate("prod", "cand", ["old.jsonl"], ["new.jsonl"], EvalConfig(), cfg, tmp_path)["passed"]
    assert decisions == {0.0: True, 0.05: True, 0.2: False}
