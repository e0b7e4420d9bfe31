"""Two simulated months of `tailor refresh` on a toy model, through the CLI.

Month 1: store return-window facts -> v1 (a LoRA adapter) trained, evaluated, registered, promoted.
Month 2: shipping-time facts arrive (a shifted domain) -> drift detected -> v2 trained incrementally
(continuing v1's adapter, with replay of month-1 data), gated, promoted. A crash in the gate leaves
the registry untouched and the rerun resumes the finished training. A rerun without new drift does
nothing. A candidate trained on shuffled answers is rejected by the gate; rollback restores v1.
"""

import json
import random
from pathlib import Path

import pytest
import yaml

from tailor.cli import main
from tailor.config import load_recipe
from tailor.quickstart.store_domain import generate_store_domain
from tailor.mlops import drift
from tailor.mlops.registry import Registry

MONTH1, MONTH2 = "return_window", "shipping_time"
OTHER = ("warranty", "price", "policy", "store_hours")
FACTS = 4


def _rows(rows: list[dict], topic: str, answers: dict) -> list[dict]:
    """The rows of the first FACTS facts of a topic, each carrying its fact (`answer`) so fact accuracy is measured."""
    facts = sorted({r["fact_id"] for r in rows if r["fact_id"].startswith(topic + "/")})[:FACTS]
    return [{"messages": r["messages"], "answer": answers[r["fact_id"]], "fact_id": r["fact_id"]}
            for r in rows if r["fact_id"] in facts]


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _shuffled_answers(rows: list[dict]) -> list[dict]:
    """Every question paired with the answer of another fact: the 'shuffled labels' of a broken data feed."""
    facts = sorted({r["fact_id"] for r in rows})
    by_fact = {f: [r for r in rows if r["fact_id"] == f] for f in facts}
    out = []
    for i, f in enumerate(facts):
        donors = by_fact[facts[(i + 1) % len(facts)]]
        for j, r in enumerate(by_fact[f]):
            wrong = donors[j % len(donors)]
            out.append({"messages": [r["messages"][0], wrong["messages"][1]], "answer": wrong["answer"], "fact_id": f})
    random.Random(0).shuffle(out)
    return out


@pytest.fixture
def world(tmp_path, monkeypatch):
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer
    from tailor.training import train

    monkeypatch.setenv("TAILOR_REGISTRY", str(tmp_path / "registry.db"))
    domain = generate_store_domain(seed=0, languages=("en",), train_per_fact=10, eval_per_fact=2)
    answers = {f.id: f.answer for f in domain.facts}
    d = tmp_path / "data"
    d.mkdir()
    files = {
        "other": _write(d / "other_topics.jsonl", [r for r in domain.train if r["fact_id"].split("/")[0] in OTHER]),
        "m1_train": _write(d / "month1_train.jsonl", _rows(domain.train, MONTH1, answers)),
        "m1_eval": _write(d / "month1_eval.jsonl", _rows(domain.eval, MONTH1, answers)),
        "m2": _write(d / "month2.jsonl", _rows(domain.train + domain.eval, MONTH2, answers)),
    }
    files["m2_bad"] = _write(d / "month2_bad.jsonl", _shuffled_answers(_rows(domain.train + domain.eval, MONTH2, answers)))
    tok = train_tokenizer([m["content"] for r in domain.train for m in r["messages"]], vocab_size=400,
                          out_dir=tmp_path / "tokenizer")
    init_model("llama-micro", tok, out_dir=tmp_path / "init", seed=0)
    # The base model: fully fine-tuned on the store's other topics, so it knows the answer style (not the facts).
    train(load_recipe(None, [f"model.path={tmp_path / 'init'}", f"data.train=[{files['other']}]", "adapter.method=full",
                             f"train.output_dir={tmp_path / 'base'}", "train.epochs=2", "train.batch_size=16", "train.lr=5e-3",
                             "train.warmup_ratio=0", "data.max_length=96", "train.save_steps=1000"]))
    common = {"data": {"max_length": 96}, "eval": {"max_new_tokens": 8, "batch_size": 32},
              "train": {"batch_size": 8, "lr": 1e-2, "warmup_ratio": 0.0, "logging_steps": 5, "save_steps": 10}}
    month1 = {**common, "model": {"path": str(tmp_path / "base" / "final")}, "adapter": {"method": "lora", "r": 8, "alpha": 16},
              "train": {**common["train"], "epochs": 8, "output_dir": str(tmp_path / "v1")},
              "data": {**common["data"], "train": [files["m1_train"]]}, "eval": {**common["eval"], "data": [files["m1_eval"]]}}
    refresh = {**common, "train": {**common["train"], "epochs": 8, "lr": 5e-3},
               "data": {**common["data"], "dedup": {"near": False}},
               "refresh": {"model_name": "bot", "new_data": [files["m2"]], "holdout": 0.25, "replay": 0.5,
                           "tolerance": 0.1, "work_dir": str(tmp_path / "refresh")}}
    for name, recipe in (("month1", month1), ("refresh", refresh)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return tmp_path, files


def _log(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "refresh.jsonl").read_text().splitlines()]


def test_two_months_drift_refresh_gate_reject_rollback(world, monkeypatch, capsys):
    tmp, files = world
    reg = Registry(tmp / "registry.db")

    # Month 1: v1 trained, evaluated on its held-out questions, registered with that baseline, promoted.
    assert main(["train", str(tmp / "month1.yaml")]) == 0
    assert main(["eval", str(tmp / "v1" / "final"), "max_new_tokens=8", "efficiency=false", "--data", files["m1_eval"],
                 "--out", str(tmp / "v1-eval")]) == 0
    assert main(["registry", "register", "bot", str(tmp / "v1" / "final"), "--recipe", str(tmp / "month1.yaml"),
                 "--metrics", str(tmp / "v1-eval" / "eval_results.json")]) == 0
    assert main(["registry", "promote", "bot", "1", "--reason", "month 1"]) == 0
    v1 = reg.production("bot")
    assert v1.version == 1 and v1.base_path == str((tmp / "base" / "final").resolve()) and v1.data_fingerprint
    assert v1.metrics["answer_perplexity"] > 0 and v1.recipe["eval"]["data"] == [files["m1_eval"]]
    capsys.readouterr()

    # Month 2, first attempt: the gate crashes after training -> registry and production untouched.
    events_before, revision_before = reg.events("bot"), reg.revision("bot")

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in the gate")

    with monkeypatch.context() as m:
        m.setattr(drift, "gate", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            main(["refresh", str(tmp / "refresh.yaml")])
    assert [v.version for v in reg.versions("bot")] == [1]
    assert reg.production("bot").version == 1 and reg.events("bot") == events_before and reg.revision("bot") == revision_before
    work = next((tmp / "refresh" / "bot").iterdir())
    steps = {(r["step"], r["status"]) for r in _log(work)}
    assert {("train", "done"), ("gate", "failed")} <= steps

    # The rerun resumes the finished training, gates and promotes v2.
    assert main(["refresh", str(tmp / "refresh.yaml")]) == 0
    out = capsys.readouterr().out
    assert "promoted v2 to production" in out
    log = _log(work)
    assert {"step": "train", "status": "reused"}.items() <= next(r for r in log[::-1] if r["step"] == "train").items()
    d = json.loads((work / "steps" / "drift.json").read_text())
    gate = json.loads((work / "steps" / "gate.json").read_text())
    with capsys.disabled():  # the numbers the report quotes (visible with pytest -s)
        print(f"\nmonth-2 drift of v1: answer perplexity {d['perplexity_baseline']:.3f} (recorded baseline) -> "
              f"{d['perplexity_new']:.3f} on the new data ({d['rise']:+.1%}, threshold +15%)")
        for c in gate["checks"]:
            print(f"gate v2: {c['text']} -> {'pass' if c['holds'] else 'FAIL'}")
    assert d["degraded"] and d["rise"] > 0.15 and d["baseline_source"] == "recorded"
    assert gate["passed"]
    v2 = reg.production("bot")
    assert (v2.version, v2.parent, v2.stage) == (2, 1, "production") and reg.get("bot", 1).stage == "archived"
    assert v2.base_path == v1.base_path and Path(v2.path, "adapter_config.json").is_file()
    assert v2.recipe["lineage"]["train_data"][0] == files["m1_train"] and len(v2.recipe["lineage"]["holdout"]) == 2
    assert v2.metrics["new/answer_perplexity"] < gate["sets"]["new"]["production"]["perplexity"]
    mix = json.loads((work / "steps" / "mix.json").read_text())
    assert mix["replay_rows"] > 0 and mix["new_rows"] > 0

    # Nothing new: the next scheduled run measures v2, finds no drift, changes nothing; the one after says it already ran.
    revision = reg.revision("bot")
    assert main(["refresh", str(tmp / "refresh.yaml")]) == 0
    assert "no drift" in capsys.readouterr().out
    assert main(["refresh", str(tmp / "refresh.yaml")]) == 0
    assert "already done" in capsys.readouterr().out
    assert [v.version for v in reg.versions("bot")] == [1, 2] and reg.revision("bot") == revision

    # A broken feed (answers shuffled across facts), forced through: the gate rejects it and says why.
    rc = main(["refresh", str(tmp / "refresh.yaml"), f"refresh.new_data=[{files['m2_bad']}]", "refresh.replay=0",
               "train.epochs=10", "train.lr=3e-2", "--force"])
    out = capsys.readouterr().out
    assert rc == 1 and "rejected v3" in out
    v3 = reg.get("bot", 3)
    assert v3.stage == "rejected" and reg.production("bot").version == 2
    reject = [e for e in reg.events("bot", 3) if e["action"] == "reject"][0]
    with capsys.disabled():
        print(f"gate v3 (shuffled answers): rejected: {reject['reason']}")
    assert "old held-out set" in reject["reason"] and "perplexity" in reject["reason"]
    assert main(["registry", "promote", "bot", "3"]) == 2
    assert "was rejected" in capsys.readouterr().err

    # Rollback: v2 archived, v1 production again; listing and the audit log show it.
    assert main(["registry", "rollback", "bot", "--reason", "month-2 complaints"]) == 0
    assert reg.production("bot").version == 1 and reg.get("bot", 2).stage == "archived"
    assert main(["registry", "list", "bot"]) == 0 and main(["registry", "show", "bot"]) == 0
    out = capsys.readouterr().out
    assert "production" in out and "rollback" in out
    actions = [e["action"] for e in reg.events("bot")]
    assert actions.count("promote") == 2 and actions.count("reject") == 1 and actions[-1] == "rollback"
    reg.close()


def test_last_n_layers_mode_on_a_full_model(tmp_path, llama_dir, chat_file, monkeypatch, capsys):
    """refresh.mode=last-n-layers: production is a full model; only its last block, final norm and head change.
    A crash in the middle of training leaves the registry alone; the rerun resumes from the last checkpoint."""
    import torch
    from safetensors.torch import load_file
    from transformers import Trainer

    monkeypatch.setenv("TAILOR_REGISTRY", str(tmp_path / "registry.db"))
    new = [{"messages": [{"role": "user", "content": f"When does the store in town {i} open?"},
                         {"role": "assistant", "content": f"The store in town {i} opens at {7 + i % 3} am."}]} for i in range(24)]
    _write(tmp_path / "new.jsonl", new)
    (tmp_path / "month1.yaml").write_text(yaml.safe_dump({"model": {"path": str(llama_dir)}, "data": {"train": [str(chat_file)]},
                                                          "eval": {"data": [str(chat_file)]}}))
    assert main(["registry", "register", "shop", str(llama_dir), "--recipe", str(tmp_path / "month1.yaml"),
                 "--stage", "production"]) == 0
    (tmp_path / "refresh.yaml").write_text(yaml.safe_dump({
        "data": {"max_length": 64, "dedup": {"near": False}}, "eval": {"max_new_tokens": 4},
        "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-2, "save_steps": 2},
        "refresh": {"model_name": "shop", "new_data": "new.jsonl", "mode": "last-n-layers", "last_n_layers": 1,
                    "replay": 0.25, "work_dir": str(tmp_path / "work"), "max_examples": 8}}))
    step = Trainer.training_step
    calls = []

    def crash_at_step_3(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash in training")
        return step(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "training_step", crash_at_step_3)
        with pytest.raises(RuntimeError, match="simulated crash in training"):
            main(["refresh", str(tmp_path / "refresh.yaml"), "--force"])
    reg = Registry(tmp_path / "registry.db")
    assert [v.version for v in reg.versions("shop")] == [1] and reg.production("shop").version == 1
    rc = main(["refresh", str(tmp_path / "refresh.yaml"), "--force"])
    out = capsys.readouterr().out
    work = next((tmp_path / "work" / "shop").iterdir())
    assert json.loads((work / "steps" / "train.json").read_text())["resumed_from"] == "checkpoint-2"
    v2 = reg.get("shop", 2)
    assert (rc, v2.stage) in ((0, "production"), (1, "rejected")) and "A/B gate" in out
    assert "fact_accuracy not compared" in out and "fact_accuracy not gated" in out  # these rows carry no `answer`
    assert v2.base_path is None and v2.parent == 1 and v2.recipe["adapter"]["method"] == "freeze"
    before, after = load_file(str(llama_dir / "model.safetensors")), load_file(str(Path(v2.path) / "model.safetensors"))
    last = f"layers.{json.loads((llama_dir / 'config.json').read_text())['num_hidden_layers'] - 1}."
    for name, w in before.items():
        trains = last in name or name.startswith("lm_head") or name == "model.norm.weight"
        assert (not torch.equal(w, after[name])) == trains, name
    reg.close()
