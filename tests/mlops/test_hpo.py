"""`tailor hpo`: space validation, a real tiny search, pruning, resume after a crashed worker, worker processes,
and the issue's done-means (HPO beats a deliberately bad learning rate on the quickstart task)."""

import io
import json
import os
import time
from pathlib import Path

import optuna
import pytest
import yaml
from rich.console import Console

from tailor.cli import main
from tailor.config import load_recipe
from tailor.errors import TailorError
from tailor.mlops.hpo import HPOSettings, run
from tailor.mlops.space import parse_space

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tiny_recipe(tmp_path, model_dir, chat_file, **train) -> Path:
    """A LoRA SFT recipe that trains in about a second: 6 steps, validation every 2."""
    t = {"batch_size": 4, "max_steps": 6, "eval_steps": 2, "save_steps": 100, "logging_steps": 2, "warmup_ratio": 0.0,
         "lr": 3.0e-3, **train}
    return write(tmp_path / "recipe.yaml", yaml.safe_dump({
        "model": {"path": str(model_dir)}, "data": {"train": [str(chat_file)], "eval": [str(chat_file)], "max_length": 48},
        "adapter": {"r": 4}, "train": t}))


def quiet():
    return Console(file=io.StringIO(), width=200)


def trials_of(out: Path, study="tailor-hpo"):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{out / 'study.db'}").trials


# ---------------------------------------------------------------------------------------------
# The space and the flags: errors before any trial runs


SPACE_ERRORS = [
    ("train.lr: {type: float, low: 1.0e-5, high: 1.0e-2}\ntrain.epochz: {type: int, low: 1, high: 3}\n",
     ["unknown recipe key 'train.epochz'", "Did you mean 'train.epochs'", "space.yaml:2"]),
    ("train: {type: float, low: 0.1, high: 1.0}\n", ["'train' is a section", "space.yaml:1"]),
    ("train.output_dir: {type: categorical, choices: [a, b]}\n", ["'train.output_dir' cannot be searched"]),
    ("train.lr: {type: normal, low: 0.1, high: 1.0}\n", ["unknown type 'normal'"]),
    ("train.lr: 0.001\n", ["'train.lr' needs a distribution"]),
    ("train.lr: {type: float, low: 1.0e-2, high: 1.0e-5}\n", ["low 0.01 is greater than high 1e-05"]),
    ("train.lr: {type: float, low: 0.0, high: 0.1, log: true}\n", ["a log range needs low > 0"]),
    ("train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, step: 0.1, log: true}\n", ["log and step cannot be combined"]),
    ("train.lr: {type: float, low: 1.0e-5, high: lots}\n", ["`high` must be a number (got 'lots')"]),
    ("adapter.r: {type: float, low: 4, high: 64}\n", ["'adapter.r' is a int setting; a float range does not fit"]),
    ("adapter.r: {type: int, low: 4, high: 64, stride: 4}\n", ["int takes high, log, low, step, type, not stride"]),
    ("train.warmup_ratio: {type: float, low: 0.0, high: 1.5}\n", ["'train.warmup_ratio' = 1.5 is not a valid recipe value",
                                                                  "less than 1"]),
    ("adapter.method: {type: categorical, choices: [lora, lorax]}\n", ["'adapter.method' = 'lorax' is not a valid"]),
    ("adapter.r: {type: categorical, choices: []}\n", ["categorical needs a non-empty list"]),
    ("train.lr: {type: float, low: 1.0e-5, high: 1.0e-2}\ntrain.lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n",
     ["declared twice (lines 1 and 2)"]),
    ("- train.lr\n", ["non-empty mapping"]),
    ("train.lr: {type: float, low: [1.0e-5\n", ["not valid YAML"]),
]


@pytest.mark.parametrize("text,expected", SPACE_ERRORS)
def test_bad_spaces_exit_2_naming_key_and_line(tmp_path, capsys, text, expected):
    recipe = write(tmp_path / "r.yaml", "data: {train: [a.jsonl], eval: [b.jsonl]}\n")
    space = write(tmp_path / "space.yaml", text)
    assert main(["hpo", str(recipe), "--space", str(space), "--out", str(tmp_path / "hpo")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for part in expected:
        assert part in err, (part, err)
    assert not (tmp_path / "hpo").exists()  # nothing ran, nothing written


FLAG_ERRORS = [
    (["--sampler", "grid"], "train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n", "grid search cannot enumerate 'train.lr'"),
    (["--metric", "fact_accuracy", "--pruner", "median"], None, "--pruner median needs intermediate values"),
    (["--metric", "fact_accuracy"], None, "eval.data, which the recipe leaves empty"),
    (["--metric", "weirdness"], None, "cannot tell whether 'weirdness' should go up or down"),
    (["--trials", "0"], None, "--trials 0: must be at least 1"),
    (["--workers", "0"], None, "--workers 0: must be at least 1"),
    (["--storage", "not a url"], None, "--storage is not a database URL"),
    (["--storage", "postgresql+psycopg2://user:secret@localhost/db"], None, "database driver"),
]


@pytest.mark.parametrize("flags,space_text,expected", FLAG_ERRORS)
def test_bad_flags_exit_2(tmp_path, capsys, flags, space_text, expected):
    recipe = write(tmp_path / "r.yaml", "data: {train: [a.jsonl], eval: [b.jsonl]}\n")
    space = write(tmp_path / "space.yaml", space_text or "train.lr: {type: float, low: 1.0e-5, high: 1.0e-2}\n")
    assert main(["hpo", str(recipe), "--space", str(space), "--out", str(tmp_path / "hpo"), *flags]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert "secret" not in err  # a storage password is never printed


def test_eval_loss_needs_validation_data(tmp_path, capsys):
    recipe = write(tmp_path / "r.yaml", "data: {train: [a.jsonl]}\n")
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 1.0e-5, high: 1.0e-2}\n")
    assert main(["hpo", str(recipe), "--space", str(space), "--out", str(tmp_path / "hpo")]) == 2
    assert "needs validation data" in capsys.readouterr().err


def test_shipped_space_parses_against_the_shipped_recipe():
    recipe = load_recipe(ROOT / "configs/examples/sft-lora.yaml")
    space = parse_space(ROOT / "configs/examples/hpo-space.yaml", recipe)
    assert [p.key for p in space] == ["train.lr", "train.warmup_ratio", "train.weight_decay", "adapter.r", "adapter.alpha"]
    assert space[0].log and space[4].grid() == [16, 32, 48, 64]


def test_numbers_written_without_a_dot_are_accepted(tmp_path):
    space = parse_space(write(tmp_path / "s.yaml", "train.lr: {type: float, low: 1e-5, high: 1e-2, log: true}\n"),
                        load_recipe(None))
    assert (space[0].low, space[0].high) == (1e-5, 1e-2)


# ---------------------------------------------------------------------------------------------
# Real searches on a tiny model


def test_tiny_search_writes_table_plots_and_a_best_recipe(tmp_path, capsys, llama_dir, chat_file):
    recipe = tiny_recipe(tmp_path, llama_dir, chat_file)
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
                                           "adapter.r: {type: categorical, choices: [2, 4]}\n")
    out = tmp_path / "hpo"
    assert main(["hpo", str(recipe), "--space", str(space), "--trials", "3", "--sampler", "random", "--seed", "0",
                 "--prune-startup-trials", "3", "--out", str(out)]) == 0  # losses reported at each evaluation, nothing pruned
    text = capsys.readouterr().out
    assert "study 'tailor-hpo': eval_loss (minimize)" in text and "train.lr" in text and "adapter.r" in text
    trials = trials_of(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:  # each trial trained its own values into its own folder
        cfg = load_recipe(out / f"trial-{t.number}" / "config.yaml")
        assert cfg.train.lr == t.params["train.lr"] and cfg.adapter.r == t.params["adapter.r"]
        assert json.loads((out / f"trial-{t.number}" / "train_summary.json").read_text())["eval_loss"] == t.value
    best = min(trials, key=lambda t: t.value)
    saved = json.loads((out / "best.json").read_text())
    assert saved["trial"] == best.number and saved["value"] == best.value and saved["params"] == best.params
    best_recipe = load_recipe(out / "best_recipe.yaml")  # what `tailor train` loads
    assert best_recipe.train.lr == best.params["train.lr"] and best_recipe.adapter.r == best.params["adapter.r"]
    assert best_recipe.train.output_dir == load_recipe(recipe).train.output_dir  # not a trial folder
    for png in ("optimization_history.png", "param_importances.png", "intermediate_values.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png


def test_a_tailor_eval_metric_is_the_objective(tmp_path, capsys, llama_dir, chat_file):
    recipe = tiny_recipe(tmp_path, llama_dir, chat_file, max_steps=2, eval_steps=None)
    data = yaml.safe_load(recipe.read_text())
    data["eval"] = {"data": [str(chat_file)], "max_new_tokens": 4, "max_examples": 4, "efficiency": False}
    write(recipe, yaml.safe_dump(data))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    out = tmp_path / "hpo"
    assert main(["hpo", str(recipe), "--space", str(space), "--trials", "1", "--metric", "answer_perplexity",
                 "--out", str(out)]) == 0
    assert "minimize answer_perplexity" in capsys.readouterr().out.replace("\n", " ")
    evaluated = json.loads((out / "trial-0" / "eval" / "eval_results.json").read_text())
    assert json.loads((out / "best.json").read_text())["value"] == evaluated["answer_perplexity"]

    assert main(["hpo", str(recipe), "--space", str(space), "--trials", "1", "--metric", "answer_perplexiti",
                 "--direction", "minimize", "--out", str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err
    assert "no metric 'answer_perplexiti'. Did you mean 'answer_perplexity'" in err and "token_f1" in err


def test_absurd_learning_rate_is_pruned(tmp_path, llama_dir, chat_file):
    recipe = load_recipe(tiny_recipe(tmp_path, llama_dir, chat_file, eval_steps=1))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 30.0, high: 300.0, log: true}\n")
    res = run(recipe, space, HPOSettings(out_dir=tmp_path / "hpo", trials=2, sampler="random", seed=0, baseline=True,
                                         pruner="median", prune_startup_trials=1), console=quiet())
    first, second = res.trials
    assert first["state"] == "COMPLETE" and first["params"] == {"train.lr": 3e-3}  # the baseline: the recipe's own lr
    assert second["state"] == "PRUNED" and second["note"] == "pruned at step 1", second
    summary = json.loads((tmp_path / "hpo" / "trial-1" / "train_summary.json").read_text())
    assert summary["steps"] == 1  # the Trainer stopped at the first evaluation instead of running 6 steps
    assert res.best["trial"] == 0
    assert not any("importance" in f for f in res.files)  # one completed trial: no importance plot, a note instead
    assert any("no parameter importance plot" in n for n in res.notes)


def test_resume_counts_earlier_trials_and_requeues_a_crashed_workers_trial(tmp_path, llama_dir, chat_file):
    recipe = load_recipe(tiny_recipe(tmp_path, llama_dir, chat_file, max_steps=2, eval_steps=None))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    out = tmp_path / "hpo"
    settings = HPOSettings(out_dir=out, trials=2, sampler="random", seed=0, pruner="none", heartbeat=1)
    run(recipe, space, settings, console=quiet())

    # A worker that died mid-trial: its trial stays RUNNING with a heartbeat that stops.
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}", heartbeat_interval=1)
    study = optuna.load_study(study_name="tailor-hpo", storage=storage)
    lost = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    storage.record_heartbeat(lost._trial_id)
    time.sleep(3.5)  # past the grace period of 2 heartbeats (SQLite timestamps have 1 s resolution)

    res = run(recipe, space, settings.model_copy(update={"trials": 4}), console=quiet())
    states = [(r["trial"], r["state"]) for r in res.trials]
    assert states == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "FAIL"), (3, "COMPLETE"), (4, "COMPLETE")], states
    trials = trials_of(out)
    assert trials[3].params == trials[2].params and trials[3].system_attrs["failed_trial"] == 2  # the same values, re-run
    assert res.trials[3]["note"] == "re-run of trial 2, whose worker stopped"
    assert len({t.params["train.lr"] for t in trials}) == 4  # the resumed sampler drew new values
    assert sorted(p.name for p in out.glob("trial-*")) == ["trial-0", "trial-1", "trial-3", "trial-4"]

    again = run(recipe, space, settings.model_copy(update={"trials": 4}), console=quiet())
    assert again.workers[0]["trials"] == 0 and len(again.trials) == 5  # the study is done: nothing re-runs

    other = write(tmp_path / "other.yaml", "train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n")
    with pytest.raises(TailorError, match="was started with another search space, metric or direction"):
        run(recipe, other, settings.model_copy(update={"trials": 5}), console=quiet())


def test_foreign_trial_folders_are_refused(tmp_path, llama_dir, chat_file):
    recipe = load_recipe(tiny_recipe(tmp_path, llama_dir, chat_file))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n")
    (tmp_path / "hpo" / "trial-0").mkdir(parents=True)  # left by another study; this one would write into it
    with pytest.raises(TailorError, match="trial folders that are not trials of study"):
        run(recipe, space, HPOSettings(out_dir=tmp_path / "hpo", trials=1), console=quiet())


def fake_training(monkeypatch, outcome):
    """Replace the training stage (these tests are about the search's bookkeeping, not training)."""
    import tailor.training as training

    def train(recipe, callbacks=None):
        loss = outcome(recipe.train.batch_size)
        return training.TrainResult(Path(recipe.train.output_dir), Path(recipe.train.output_dir) / "final", None,
                                    {"eval_loss": loss})

    monkeypatch.setattr(training, "train", train)


def test_out_of_memory_and_diverged_trials_fail_and_the_search_goes_on(tmp_path, monkeypatch):
    import torch

    def outcome(batch_size):
        if batch_size == 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return float("nan") if batch_size == 32 else 1.0 / batch_size

    fake_training(monkeypatch, outcome)
    recipe = load_recipe(None, ["data.train=[a.jsonl]", "data.eval=[b.jsonl]"])
    space = write(tmp_path / "space.yaml", "train.batch_size: {type: categorical, choices: [8, 16, 32, 64]}\n")
    res = run(recipe, space, HPOSettings(out_dir=tmp_path / "hpo", sampler="grid", pruner="none"), console=quiet())
    by_size = {r["params"]["train.batch_size"]: r for r in res.trials}
    assert len(res.trials) == 4 and by_size[8]["state"] == by_size[16]["state"] == "COMPLETE"
    assert by_size[64]["state"] == "FAIL" and "OutOfMemoryError" in by_size[64]["note"]
    assert by_size[32]["state"] == "FAIL" and "eval_loss is nan (training diverged)" in by_size[32]["note"]
    assert res.best["params"] == {"train.batch_size": 16}


def always_out_of_memory(monkeypatch):
    """Every trial's (simulated) training runs out of GPU memory; returns a recipe to search over."""
    import torch

    def outcome(batch_size):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    fake_training(monkeypatch, outcome)
    return load_recipe(None, ["data.train=[a.jsonl]", "data.eval=[b.jsonl]"])


def test_a_run_of_failures_stops_the_search(tmp_path, monkeypatch):
    recipe = always_out_of_memory(monkeypatch)
    space = write(tmp_path / "space.yaml", "train.batch_size: {type: int, low: 64, high: 1024}\n")
    with pytest.raises(TailorError, match="5 trials in a row failed .the last: OutOfMemoryError"):
        run(recipe, space, HPOSettings(out_dir=tmp_path / "hpo", trials=20, sampler="random"), console=quiet())
    assert [t.state.name for t in trials_of(tmp_path / "hpo")] == ["FAIL"] * 5


def test_no_completed_trial_is_an_error_after_the_table(tmp_path, monkeypatch):
    recipe = always_out_of_memory(monkeypatch)
    space = write(tmp_path / "space.yaml", "train.batch_size: {type: categorical, choices: [64, 128]}\n")
    console = quiet()
    with pytest.raises(TailorError, match=r"no trial of study 'tailor-hpo' completed \(2 trials: fail\)"):
        run(recipe, space, HPOSettings(out_dir=tmp_path / "hpo", sampler="grid"), console=console)
    assert "OutOfMemoryError" in console.file.getvalue()  # the table with the reasons came first
    assert not (tmp_path / "hpo" / "best_recipe.yaml").exists()


def test_an_interrupted_trial_is_retried_first_when_the_command_runs_again(tmp_path, monkeypatch):
    interrupt = [True]

    def outcome(batch_size):
        if interrupt.pop() if interrupt else False:
            raise KeyboardInterrupt
        return 1.0 / batch_size

    fake_training(monkeypatch, outcome)
    recipe = load_recipe(None, ["data.train=[a.jsonl]", "data.eval=[b.jsonl]"])
    space = write(tmp_path / "space.yaml", "train.batch_size: {type: int, low: 1, high: 64}\n")
    settings = HPOSettings(out_dir=tmp_path / "hpo", trials=2, sampler="random", seed=0)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, space, settings, console=quiet())
    res = run(recipe, space, settings, console=quiet())
    first, retry, new = res.trials
    assert (first["state"], retry["state"], new["state"]) == ("FAIL", "COMPLETE", "COMPLETE")
    assert retry["params"] == first["params"] and retry["note"] == "re-run of interrupted trial 0"


def test_two_worker_processes_share_one_sqlite_study(tmp_path, monkeypatch, llama_dir, chat_file):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = load_recipe(tiny_recipe(tmp_path, llama_dir, chat_file, max_steps=2, eval_steps=None))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    res = run(recipe, space, HPOSettings(out_dir=tmp_path / "hpo", trials=2, workers=2, sampler="random", seed=0,
                                         pruner="none"), console=quiet())
    pids = [w["pid"] for w in res.workers]
    assert len(res.workers) == 2 and len(set(pids)) == 2 and os.getpid() not in pids
    assert sum(w["trials"] for w in res.workers) == 2
    trials = trials_of(tmp_path / "hpo")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert {t.user_attrs["pid"] for t in trials} <= set(pids)
    assert sorted(p.name for p in (tmp_path / "hpo").glob("trial-*")) == ["trial-0", "trial-1"]


# ---------------------------------------------------------------------------------------------
# Done means: HPO finds a learning rate better than a deliberately bad default on the quickstart task


def test_hpo_beats_a_bad_default_learning_rate_on_the_quickstart_task(tmp_path):
    from tailor.quickstart.store_domain import generate_store_domain, write_domain
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer
    from tailor.quickstart import recipe_path

    domain = generate_store_domain(seed=0, languages=("en",), max_facts=2, train_per_fact=8)
    files = write_domain(domain, tmp_path / "data")
    tok = train_tokenizer(list(domain.documents) + [m["content"] for r in domain.train for m in r["messages"]], 400,
                          tmp_path / "tokenizer")
    init_model("deepseek-v3-micro", tok, out_dir=tmp_path / "model", seed=0)
    # The quickstart's own SFT recipe, with a learning rate 3000x too low; validation = the held-out wordings.
    recipe = load_recipe(recipe_path("sft.yaml"), [
        f"model.path={tmp_path / 'model'}", f"data.train=[{files['train']}]", f"data.eval=[{files['eval']}]",
        "train.lr=1e-6", "train.max_steps=30", "train.batch_size=8", "train.save_steps=1000", "adapter.r=16",
        "adapter.alpha=16"])
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n")
    res = run(recipe, space, HPOSettings(out_dir=tmp_path / "hpo", trials=5, sampler="tpe", seed=0, baseline=True,
                                         pruner="none"), console=quiet())
    default = res.trials[0]
    assert default["params"] == {"train.lr": 1e-6} and default["state"] == "COMPLETE"
    print(f"default lr 1e-6: eval_loss {default['value']:.4f}; best lr {res.best['params']['train.lr']:.3g}: "
          f"eval_loss {res.best['value']:.4f}")
    assert res.best["trial"] != 0 and res.best["value"] < default["value"] - 0.3
    assert load_recipe(tmp_path / "hpo" / "best_recipe.yaml").train.lr == res.best["params"]["train.lr"]
