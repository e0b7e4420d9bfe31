"""Checkpoint manifests, completeness checks, rotation (last K + best) and resume compatibility."""

import hashlib
import json
import logging
import shutil

import pytest
import yaml
from datasets import Dataset
from transformers import TrainerCallback

from tailor.cli import main
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.training.callbacks import read_metrics
from tailor.training.checkpoints import (MANIFEST, changed_settings, check_resume, data_fingerprint, incomplete_reason,
                                         list_checkpoints, read_manifest, rotate, write_manifest)
from tailor.training.regularize import WeightEMA
from tailor.training import latest_checkpoint
from tailor.training import train as run
from tests.conftest import CONVERSATIONS, write_jsonl

COMMON = ["train.batch_size=4", "train.logging_steps=1", "data.max_length=48", "adapter.method=full", "train.lr=5e-3",
          "data.val_ratio=0.25", "train.eval_steps=2", "train.save_steps=3", "train.save_total_limit=1",
          "train.ema_decay=0.5", "train.max_steps=4"]


def overrides(model_dir, data, out, *extra):
    return [f"model.path={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}", *COMMON, *extra]


class SaveSteps(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_save(self, args, state, control, **kw):
        self.steps.append(state.global_step)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory, llama_dir):
    """One finished run: saves at 3 and 4 (the last step), evaluations at 2 and 4, one checkpoint kept + the best."""
    root = tmp_path_factory.mktemp("sealed")
    data = write_jsonl(root / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS] * 4)
    recipe = load_recipe(None, overrides(llama_dir, data, root / "run"))
    saves = SaveSteps()
    run(recipe, callbacks=[saves])
    return root, data, recipe, saves.steps


def copy_run(sealed, tmp_path):
    root, data = sealed[:2]
    shutil.copytree(root / "run", tmp_path / "run")
    return tmp_path / "run", data


def test_manifest_lists_every_file_with_its_hash_and_the_run(sealed):
    root, _, recipe, _ = sealed
    out = root / "run"
    ckpt = out / "checkpoint-4"
    m = read_manifest(ckpt)
    assert m["step"] == 4 and m["format"] == 1 and m["epoch"] > 0 and m["processes"] == 1
    assert m["recipe"] == recipe.model_dump(mode="json")
    assert len(m["data"]["train"]) == 64 and len(m["data"]["eval"]) == 64 and m["data"]["train"] != m["data"]["eval"]
    assert {"torch", "transformers", "peft", "tailor", "python"} <= set(m["versions"])
    on_disk = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(m["files"]) == on_disk
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
            WeightEMA.FILE} <= on_disk
    for rel, meta in m["files"].items():
        data = (ckpt / rel).read_bytes()
        assert meta == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    evals = {r["step"]: r["eval_loss"] for r in read_metrics(out / "metrics.jsonl") if "eval_loss" in r}
    assert m["metric"] == {"name": "eval_loss", "value": evals[4], "greater_is_better": False}
    assert not list(ckpt.glob(f".{MANIFEST}*")), "no temporary manifest left behind"


def test_rotation_keeps_the_last_k_and_the_best(sealed):
    """save_total_limit=1: checkpoint-4 (the last) stays, plus checkpoint-2 if its evaluation was the best.

    checkpoint-2 exists only because the evaluation at step 2 beat all earlier ones (save_steps is 3).
    """
    out, saved = sealed[0] / "run", sealed[3]
    assert saved == [2, 3, 4]  # 2: a new best evaluation forces a save
    evals = {r["step"]: r["eval_loss"] for r in read_metrics(out / "metrics.jsonl") if "eval_loss" in r}
    assert set(evals) == {2, 4}
    best = min(evals, key=lambda s: (evals[s], s))
    assert [p.name for p in list_checkpoints(out)] == sorted({"checkpoint-4", f"checkpoint-{best}"})
    if best == 2:
        assert read_manifest(out / "checkpoint-2")["metric"]["value"] == evals[2]


def fake_checkpoint(out, step, metric=None, payload=b"weights"):
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(payload * 10)
    (ckpt / "sub").mkdir()
    (ckpt / "sub" / "state.json").write_text("{}")
    info = {"step": step}
    if metric is not None:
        info["metric"] = {"name": "eval_loss", "value": metric, "greater_is_better": False}
    write_manifest(ckpt, info)
    return ckpt


def test_rotate_unit(tmp_path):
    out = tmp_path / "run"
    for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, 2.5)]:
        fake_checkpoint(out, step, loss)
    (out / "checkpoint-0").mkdir()  # an interrupted save the run has moved past
    (out / "checkpoint-9").mkdir()  # newer than every complete one: maybe a save in progress
    assert sorted(p.name for p in rotate(out, keep=2)) == ["checkpoint-0", "checkpoint-1", "checkpoint-3"]
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4", "checkpoint-5", "checkpoint-9"]
    rotate(out, keep=1, keep_best=False, protect={out / "checkpoint-4"})
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-4", "checkpoint-5", "checkpoint-9"]
    # Greater is better: the highest score is the best.
    out2 = tmp_path / "acc"
    for step, acc in [(1, 0.9), (2, 0.5), (3, 0.7)]:
        fake_checkpoint(out2, step, acc)
    rotate(out2, keep=1, greater_is_better=True)
    assert [p.name for p in list_checkpoints(out2)] == ["checkpoint-1", "checkpoint-3"]


def test_latest_checkpoint_skips_incomplete_and_corrupt_ones(tmp_path, caplog):
    out = tmp_path / "run"
    fake_checkpoint(out, 1)
    good = fake_checkpoint(out, 2)
    no_manifest = fake_checkpoint(out, 3)
    (no_manifest / MANIFEST).unlink()
    truncated = fake_checkpoint(out, 4)
    (truncated / "model.safetensors").write_bytes(b"weigh")
    flipped = fake_checkpoint(out, 5)
    (flipped / "model.safetensors").write_bytes(b"Weights" * 10)  # same size, other bytes
    gone = fake_checkpoint(out, 6)
    (gone / "sub" / "state.json").unlink()
    (out / "checkpoint-7").mkdir()  # created, nothing written yet
    (out / "checkpoint-7" / "trainer_state.json").write_text("{}")  # what the old completeness check trusted
    with caplog.at_level(logging.WARNING, logger="tailor"):
        assert latest_checkpoint(out) == good
    text = caplog.text
    for step, why in [(3, "no readable manifest.json"), (4, "model.safetensors has 5 bytes, the manifest says 70"),
                      (5, "model.safetensors does not match its sha256"),
                      (6, "sub/state.json is missing"), (7, "no readable manifest.json")]:
        assert f"checkpoint-{step}: {why}" in text
    assert incomplete_reason(flipped, full=False) is None  # sizes alone cannot see the flip; the resume check does
    assert latest_checkpoint(tmp_path / "empty") is None


def test_a_partial_manifest_does_not_count(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "run", 1)
    text = (ckpt / MANIFEST).read_text()
    (ckpt / MANIFEST).write_text(text[: len(text) // 2])  # what a non-atomic write cut short would leave
    assert "no readable" in incomplete_reason(ckpt)


def test_a_changed_recipe_is_refused_naming_each_key(sealed, tmp_path, capsys):
    out, data = copy_run(sealed, tmp_path)
    yaml_path = tmp_path / "recipe.yaml"
    yaml_path.write_text(yaml.safe_dump(yaml.safe_load((out / "config.yaml").read_text())))
    code = main(["train", str(yaml_path), "train.resume=true", "train.lr=0.01", "train.seed=7", "train.logging_steps=5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot resume checkpoint-4" in err
    assert "train.lr: 0.005 -> 0.01" in err and "train.seed: 42 -> 7" in err
    assert "logging_steps" not in err  # does not change the result
    assert "train.resume_force=true" in err and "manifest.json" in err


def test_safe_settings_resume_and_force_overrides_with_a_warning(sealed, tmp_path, llama_dir, caplog):
    out, data = copy_run(sealed, tmp_path)
    base = overrides(llama_dir, data, out, "train.resume=true", "train.max_steps=5")
    with pytest.raises(TailorError, match=r"train.max_steps: 4 -> 5"):
        run(load_recipe(None, base))
    with caplog.at_level(logging.WARNING, logger="tailor"):
        result = run(load_recipe(None, [*base, "train.resume_force=true", "train.logging_steps=2", "train.save_steps=1",
                                        "train.save_total_limit=3"]))
    assert "train.resume_force" in caplog.text and "train.max_steps: 4 -> 5" in caplog.text
    assert "logging_steps" not in caplog.text
    assert result.metrics["steps"] == 5
    assert read_manifest(out / "checkpoint-5")["recipe"]["train"]["max_steps"] == 5


def test_changed_data_is_refused(sealed, tmp_path, llama_dir):
    out, data = copy_run(sealed, tmp_path)
    rows = [{"messages": c} for c in CONVERSATIONS] * 4
    rows[0] = {"messages": [{"role": "user", "content": "Changed?"}, {"role": "assistant", "content": "Yes."}]}
    write_jsonl(data, rows)  # same path, other content: only the fingerprint can tell
    with pytest.raises(TailorError, match=r"data fingerprint \(train\)|data fingerprint \(eval\)") as exc:
        run(load_recipe(None, overrides(llama_dir, data, out, "train.resume=true")))
    assert "tokenized data or process count differ" in str(exc.value)


def test_changed_settings_rules():
    base = load_recipe(None, []).model_dump(mode="json")
    changed = json.loads(json.dumps(base))
    changed["train"].update(lr=1.0, save_steps=7, eval_steps=3, output_dir="elsewhere", resume=True)
    changed["eval"]["max_new_tokens"] = 5
    changed["adapter"]["r"] = 4
    assert changed_settings(base, changed) == ["adapter.r: 16 -> 4", "train.lr: 0.0002 -> 1.0"]
    # When the validation loss drives training, evaluation and save timing change the result too.
    base["train"]["early_stopping_patience"] = changed["train"]["early_stopping_patience"] = 2
    assert changed_settings(base, changed) == ["adapter.r: 16 -> 4", "train.eval_steps: None -> 3",
                                               "train.lr: 0.0002 -> 1.0", "train.save_steps: 200 -> 7"]
    del changed["train"]["lr"]  # a key the checkpoint's tailor did not know
    assert "train.lr: 0.0002 -> '(absent)'" in changed_settings(base, changed)


def test_check_resume_without_a_manifest_recipe_is_refused(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "run", 1)
    with pytest.raises(TailorError, match="model.path: '\\(absent\\)' -> 'm'"):
        check_resume(ckpt, load_recipe(None, ["model.path=m"]))


def test_another_process_count_is_refused_unless_forced(tmp_path, caplog):
    ckpt = fake_checkpoint(tmp_path / "run", 1)
    manifest = read_manifest(ckpt)
    write_manifest(ckpt, {**{k: v for k, v in manifest.items() if k not in ("files", "format")},
                          "data": {"train": "t", "eval": None}, "processes": 2})
    recipe = load_recipe(None, [])
    check_resume(ckpt, recipe, {"train": "t", "eval": None}, processes=2)
    with pytest.raises(TailorError, match="processes: 2 -> 1"):
        check_resume(ckpt, recipe, {"train": "t", "eval": None}, processes=1)
    with caplog.at_level(logging.WARNING, logger="tailor"):
        check_resume(ckpt, load_recipe(None, ["train.resume_force=true"]), {"train": "t", "eval": None}, processes=1)
    assert "processes: 2 -> 1" in caplog.text


def test_data_fingerprint():
    a = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]], "labels": [[-100, 2, 3], [4, 5]]})
    same = Dataset.from_dict({"input_ids": [[9], [1, 2, 3], [4, 5]], "labels": [[9], [-100, 2, 3], [4, 5]]}).select([1, 2])
    moved = Dataset.from_dict({"input_ids": [[1, 2], [3, 4, 5]], "labels": [[-100, 2], [3, 4, 5]]})  # same tokens, cut elsewhere
    assert data_fingerprint(a) == data_fingerprint(same)
    assert data_fingerprint(a) != data_fingerprint(moved)
    assert data_fingerprint(a) != data_fingerprint(a.select([1, 0]))
    assert data_fingerprint(None) is None
    rows = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}]
    assert data_fingerprint(rows) != data_fingerprint(rows[::-1])


def test_ema_restore_needs_the_saved_state(tmp_path):
    ema = WeightEMA(0.9)
    with pytest.raises(TailorError, match="holds no EMA state"):
        ema.restore(tmp_path)


@pytest.mark.parametrize("keep_best", [True, False])
def test_a_new_best_evaluation_forces_a_save_only_with_keep_best(tmp_path, keep_best):
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from tailor.training.checkpoints import CheckpointManifest

    cb = CheckpointManifest(load_recipe(None, [f"train.keep_best={keep_best}"]), {}, "eval_loss")
    args, state = SimpleNamespace(output_dir=str(tmp_path)), TrainerState()
    state.log_history = [{"eval_loss": 2.0, "step": 1}]  # a resumed run starts from the best seen so far
    cb.on_train_begin(args, state, TrainerControl())
    for loss, saves in [(2.5, False), (1.5, keep_best), (1.7, False)]:
        control = TrainerControl()
        cb.on_evaluate(args, state, control, metrics={"eval_loss": loss})
        assert control.should_save is saves
