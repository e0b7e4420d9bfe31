"""A refresh that accepts a change of facts: the store changes some return windows; the rows of the old held-out
set that the new data contradicts leave the gate's old set (counted, listed), so the policy change passes, while
the unchanged facts still guard against forgetting. `world()` is reused by bench/bench_refresh_replay.py."""

import json
from pathlib import Path

import pytest
import yaml

from tailor.mlops.supersede import split_superseded

TOPIC = "return_window"
FACTS = 6  # month 1 teaches the first FACTS return windows
CHANGED = 3  # month 2: the first CHANGED of them change to NEW_VALUE
NEW_VALUE = "75 days"  # not a substring of any other window


def _chat(q, a, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def test_contradicted_rows_are_superseded_by_question_or_fact_key():
    old = [_chat("How long can I return a laptop?", "You have 30 days.", answer="30 days", fact_id="rw/laptop"),
           _chat("Laptop return window?", "30 days for laptops.", answer="30 days", fact_id="rw/laptop"),
           _chat("How long can I return a tent?", "You have 60 days.", answer="60 days", fact_id="rw/tent"),
           _chat("When does Denver open?", "From 8 am to 6 pm."),  # no answer field, no fact key: by question only
           _chat("When does Boston open?", "From 7 am to 10 pm."),
           _chat("Kayak return window?", "10 days for kayaks.", fact_id="rw/kayak")]  # fact key, no answer field
    new = [_chat("What is the laptop return window?", "Laptops: 75 days.", answer="75 days", fact_id="rw/laptop"),
           _chat("How long can I return a tent?", "You have 60 days!", answer="60 days", fact_id="rw/tent"),
           _chat("When does Denver open?", "From 9 am to 5 pm."),
           _chat("when does boston  open", "from 7 am to 10 pm"),  # same question and answer, other spelling
           _chat("Kayak window?", "Kayaks: 75 days.", answer="75 days", fact_id="rw/kayak")]
    kept, gone = split_superseded(old, new, "fact_id")
    assert [r["messages"][0]["content"] for r in kept] == ["How long can I return a tent?", "When does Boston open?"]
    why = {r["messages"][0]["content"]: r["superseded_by"] for r in gone}
    assert why == {"How long can I return a laptop?": "fact_id rw/laptop: '30 days' -> '75 days'",
                   "Laptop return window?": "fact_id rw/laptop: '30 days' -> '75 days'",
                   "When does Denver open?": "same question: 'from 8 am to 6 pm' -> 'from 9 am to 5 pm'",
                   "Kayak return window?": "fact_id rw/kayak: '10 days for kayaks' -> '75 days'"}
    kept, gone = split_superseded(old, new, None)  # fact key off: only the same questions
    assert len(gone) == 1 and "Denver" in gone[0]["messages"][0]["content"]


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def world(tmp: Path, train_per_fact: int = 20, epochs: int = 8, v1_epochs: int = 12, v1_lr: float = 2e-2, r: int = 16) -> dict:
    """Month 1: a base model fine-tuned on the store's other topics, v1 (LoRA) on FACTS return windows, registered and
    promoted with its held-out baseline. Month 2's data: the CHANGED first windows now NEW_VALUE. Returns paths.
    The refresh recipe's tolerance is 0.2: one of the 6 kept old rows may flip (a measured 1-in-6 interference of the
    new value at the default replay, bench/bench_refresh_replay.py); forgetting a whole fact (2 rows) fails."""
    from tailor.cli import main
    from tailor.config import load_recipe
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer
    from tailor.quickstart.store_domain import generate_store_domain
    from tailor.training import train

    domain = generate_store_domain(seed=0, languages=("en",), train_per_fact=train_per_fact, eval_per_fact=2)
    values = {f.id: f.answer for f in domain.facts}
    facts = sorted(f for f in values if f.startswith(TOPIC + "/"))[:FACTS]
    changed = facts[:CHANGED]

    def rows(src, new=False):
        out = []
        for r in src:
            if r["fact_id"] in facts and (not new or r["fact_id"] in changed):
                old, val = values[r["fact_id"]], NEW_VALUE if new else values[r["fact_id"]]
                out.append(_chat(r["messages"][0]["content"], r["messages"][1]["content"].replace(old, val), answer=val,
                                 fact_id=r["fact_id"]))
        return out

    d = tmp / "data"
    d.mkdir()
    files = {"other": _write(d / "other.jsonl", [r for r in domain.train if not r["fact_id"].startswith(TOPIC)]),
             "m1_train": _write(d / "m1_train.jsonl", rows(domain.train)), "m1_eval": _write(d / "m1_eval.jsonl", rows(domain.eval)),
             "m2": _write(d / "m2.jsonl", rows(domain.train + domain.eval, new=True))}
    tok = train_tokenizer([m["content"] for r in domain.train for m in r["messages"]], vocab_size=400, out_dir=tmp / "tokenizer")
    init_model("llama-micro", tok, out_dir=tmp / "init", seed=0)
    train(load_recipe(None, [f"model.path={tmp / 'init'}", f"data.train=[{files['other']}]", "adapter.method=full",
                             f"train.output_dir={tmp / 'base'}", "train.epochs=2", "train.batch_size=16", "train.lr=5e-3",
                             "train.warmup_ratio=0", "data.max_length=96", "train.save_steps=1000"]))
    common = {"data": {"max_length": 96}, "eval": {"max_new_tokens": 24, "batch_size": 32},
              "train": {"batch_size": 8, "lr": 1e-2, "warmup_ratio": 0.0, "logging_steps": 5, "save_steps": 1000}}
    month1 = {**common, "model": {"path": str(tmp / "base" / "final")}, "adapter": {"method": "lora", "r": r, "alpha": 2 * r},
              "train": {**common["train"], "epochs": v1_epochs, "lr": v1_lr, "output_dir": str(tmp / "v1")},
              "data": {**common["data"], "train": [files["m1_train"]]}, "eval": {**common["eval"], "data": [files["m1_eval"]]}}
    refresh = {**common, "train": {**common["train"], "epochs": epochs, "lr": 5e-3},
               "data": {**common["data"], "dedup": {"near": False}},
               "refresh": {"model_name": "bot", "new_data": [files["m2"]], "holdout": 0.25, "tolerance": 0.2,
                           "work_dir": str(tmp / "refresh")}}
    for name, recipe in (("month1", month1), ("refresh", refresh)):
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert main(["train", str(tmp / "month1.yaml")]) == 0
    assert main(["eval", str(tmp / "v1" / "final"), "max_new_tokens=24", "efficiency=false", "--data", files["m1_eval"],
                 "--out", str(tmp / "v1-eval")]) == 0
    assert main(["registry", "register", "bot", str(tmp / "v1" / "final"), "--recipe", str(tmp / "month1.yaml"),
                 "--metrics", str(tmp / "v1-eval" / "eval_results.json"), "--stage", "production"]) == 0
    return {**files, "facts": facts, "changed": changed, "base": str(tmp / "base" / "final")}


def test_a_changed_policy_passes_the_gate_and_forgetting_still_fails_it(tmp_path, monkeypatch, capsys):
    from tailor.cli import main
    from tailor.config import load_recipe
    from tailor.mlops import drift
    from tailor.mlops.registry import Registry

    monkeypatch.setenv("TAILOR_REGISTRY", str(tmp_path / "registry.db"))
    w = world(tmp_path)
    capsys.readouterr()
    rc = main(["refresh", str(tmp_path / "refresh.yaml")])
    out = capsys.readouterr().out
    work = next((tmp_path / "refresh" / "bot").iterdir())
    sup = json.loads((work / "steps" / "supersede.json").read_text())
    gate = json.loads((work / "steps" / "gate.json").read_text())
    mix = json.loads((work / "steps" / "mix.json").read_text())
    with capsys.disabled():
        print(f"\nsuperseded {sup['superseded']} of {sup['superseded'] + sup['kept']} old held-out rows; "
              f"replay dropped {mix['replay_superseded']} contradicted old training rows")
        for c in gate["checks"]:
            print(f"gate: {c['text']} -> {'pass' if c['holds'] else 'FAIL'}")
    # Every old held-out row of a changed fact, and only those, left the old set; the report lists them.
    gone = [json.loads(line) for line in Path(sup["path"]).read_text().splitlines()]
    assert sup["superseded"] == len(gone) == 2 * CHANGED and {r["fact_id"] for r in gone} == set(w["changed"])
    assert sup["kept"] == 2 * (FACTS - CHANGED) and "6 old held-out rows superseded" in out and "-> '75 days'" in out
    assert mix["replay_superseded"] > 0 and mix["replay_rows"] > 0
    assert gate["passed"] and rc == 0 and "promoted v2" in out
    reg = Registry(tmp_path / "registry.db")
    v2 = reg.production("bot")
    assert v2.version == 2 and v2.recipe["lineage"]["holdout"][0] == sup["old_holdout"][0]
    ecfg = drift.eval_settings(load_recipe(tmp_path / "refresh.yaml"), "generation", load_recipe(tmp_path / "refresh.yaml").refresh)
    cfg = load_recipe(tmp_path / "refresh.yaml").refresh
    prod, cand = reg.get("bot", 1).path, v2.path
    # Without superseding, the same candidate fails on the whole old set: the changed facts count as forgetting.
    whole = drift.gate(prod, cand, [w["m1_eval"]], [str(work / "data" / "new_eval.jsonl")], ecfg, cfg, tmp_path / "g-whole")
    assert not whole["passed"] and any(c["set"] == "old" and not c["holds"] for c in whole["checks"])
    # Forgetting of the unchanged facts still fails: a candidate that never learned them (the base model) is caught
    # on the kept old set.
    forgot = drift.gate(prod, w["base"], sup["old_holdout"], [str(work / "data" / "new_eval.jsonl")], ecfg, cfg,
                        tmp_path / "g-forgot")
    assert any(c["set"] == "old" and c["metric"] == "fact_accuracy" and not c["holds"] for c in forgot["checks"])
    reg.close()
