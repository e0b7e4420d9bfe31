"""The training stage's shape: recipes per objective, one TrainingArguments builder, a Trainer subclass instead of
patched instance methods, and the version guard around the one write into accelerate's private state."""

import ast
import typing
from pathlib import Path

import pytest

from tailor.config import TrainConfig, load_recipe
from tailor.errors import TailorError
from tailor.training import train
from tailor.training.trainer import TailorTrainer

SRC = Path(__file__).resolve().parents[2] / "src"


def _constructs(path: Path, name: str) -> list[int]:
    """Lines of `path` that call `name(...)` or `something.name(...)`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if called == name:
                lines.append(node.lineno)
    return lines


# TrainingArguments and TRL's configs, its subclasses (DPOConfig, ...): built by args.py's one call of `config_class`.
CONFIGS = ("TrainingArguments", "DPOConfig", "KTOConfig", "ORPOConfig", "CPOConfig", "GRPOConfig", "SFTConfig",
           "config_class")


def test_training_arguments_are_built_in_one_module():
    builders = {str(p.relative_to(SRC)): lines for p in sorted(SRC.rglob("*.py"))
                if (lines := [n for name in CONFIGS for n in _constructs(p, name)])}
    assert list(builders) == ["tailor/training/args.py"], builders
    assert len(builders["tailor/training/args.py"]) == 1


@pytest.mark.parametrize("objective,config", [("sft", "TrainingArguments"), ("dpo", "DPOConfig"), ("kto", "KTOConfig"),
                                              ("orpo", "ORPOConfig"), ("simpo", "CPOConfig"), ("grpo", "GRPOConfig")])
def test_the_one_builder_makes_each_objectives_config(tmp_path, objective, config):
    import torch

    from tailor.config import Recipe
    from tailor.training.args import objective_arguments, training_arguments

    recipe = Recipe.model_validate({"train": {"objective": objective, "lr": 1e-3, "batch_size": 4, "seed": 5},
                                    "preference": {"beta": 0.3}})
    args = training_arguments(recipe.train, tmp_path, torch.device("cpu"), "fp32", False, objective_arguments(recipe))
    assert type(args).__name__ == config
    assert (args.learning_rate, args.per_device_train_batch_size, args.seed) == (1e-3, 4, 5)
    assert not args.gradient_checkpointing and not args.bf16  # TRL's defaults (True) do not leak through
    if objective in ("dpo", "kto", "orpo", "simpo"):
        assert args.beta == 0.3


def test_rpo_alpha_adds_the_sft_loss_with_its_weight(tmp_path):
    import torch

    from tailor.config import Recipe
    from tailor.training.args import objective_arguments, training_arguments

    recipe = Recipe.model_validate({"train": {"objective": "dpo"}, "preference": {"loss_type": "ipo", "rpo_alpha": 0.5}})
    args = training_arguments(recipe.train, tmp_path, torch.device("cpu"), "fp32", False, objective_arguments(recipe))
    assert (args.loss_type, args.loss_weights) == (["ipo", "sft"], [1.0, 0.5])


def test_the_checker_sees_both_call_forms(tmp_path):
    p = tmp_path / "x.py"
    p.write_text("import transformers\nfrom transformers import TrainingArguments\n"
                 "a = TrainingArguments(output_dir='o')\nb = transformers.TrainingArguments(output_dir='o')\n")
    assert _constructs(p, "TrainingArguments") == [3, 4]


def test_every_objective_has_a_recipe():
    from tailor.training.recipes import RECIPES

    objectives = typing.get_args(TrainConfig.model_fields["objective"].annotation)
    assert set(RECIPES) == set(objectives)


class Spy:
    """Keeps the trainer a recipe built (TailorTrainer.train is wrapped for the test only)."""

    def __init__(self, monkeypatch):
        self.trainers = []
        real = TailorTrainer.train
        spy = self

        def train(self, *args, **kwargs):
            spy.trainers.append(self)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(TailorTrainer, "train", train)


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_adversarial_runs_use_the_subclass_step_not_a_patched_instance(tmp_path, llama_dir, chat_file, monkeypatch,
                                                                       method):
    spy = Spy(monkeypatch)
    calls = []
    from tailor.training import trainer as trainer_module

    real_step = trainer_module.adversarial_step
    monkeypatch.setattr(trainer_module, "adversarial_step", lambda *a, **k: calls.append(a[-1]) or real_step(*a, **k))
    result = train(load_recipe(None, [f"model.path={llama_dir}", f"data.train=[{chat_file}]",
                                      f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.batch_size=4",
                                      "data.max_length=48", "adapter.method=lora", "adapter.r=4",
                                      f"train.adversarial={method}", "train.adversarial_steps=2"]))
    (trainer,) = spy.trainers
    assert type(trainer).training_step is TailorTrainer.training_step
    assert type(trainer).get_batch_samples is TailorTrainer.get_batch_samples
    assert not {"training_step", "get_batch_samples", "compute_loss"} & set(vars(trainer))
    assert calls and all(c.method == method and c.steps == 2 for c in calls)  # one adversarial step per micro-batch
    assert len(calls) == 2 and result.metrics["loss_bearing_tokens"] > 0  # the batch observer counted tokens


def test_plain_runs_take_the_plain_step(tmp_path, llama_dir, chat_file, monkeypatch):
    from tailor.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "adversarial_step", lambda *a, **k: pytest.fail("adversarial step in a plain run"))
    train(load_recipe(None, [f"model.path={llama_dir}", f"data.train=[{chat_file}]", f"train.output_dir={tmp_path / 'run'}",
                             "train.max_steps=1", "train.batch_size=4", "data.max_length=48", "adapter.method=lora"]))


def test_fsdp_on_cpu_refuses_an_untested_accelerate(monkeypatch):
    import accelerate

    from tailor.training.distributed import fsdp_on_cpu

    monkeypatch.setattr(accelerate, "__version__", "9.9.0")
    with pytest.raises(TailorError, match="needs accelerate 1.15.x") as e:
        fsdp_on_cpu(object(), {})
    assert "train.distributed=ddp" in e.value.fix


def test_distill_refuses_a_classification_objective(tmp_path):
    from tailor.training.recipes.distill import distill

    recipe = load_recipe(None, ["train.objective=classification", "distill.teacher=somewhere", "distill.student_layers=1",
                                f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(TailorError, match="distillation trains a causal LM"):
        distill(recipe)
    assert not (tmp_path / "run").exists()


def test_sft_recipe_back_translates_through_the_translator_it_loads(llama_dir, chat_file, tmp_path):
    """data.augment.back_translation reaches the data stage from `tailor train`: the recipe loads the translator
    (the data stage loads no model) and the augmented rows are counted in the run's data report."""
    recipe = load_recipe(None, [f"model.path={llama_dir}", f"data.train=[{chat_file}]", "adapter.method=lora",
                                "train.max_steps=1", "train.batch_size=2", f"train.output_dir={tmp_path / 'run'}",
                                f"data.augment.back_translation.model={llama_dir}",
                                "data.augment.back_translation.rate=1.0",
                                "data.augment.back_translation.max_new_tokens=4"])
    result = train(recipe)
    report = result.metrics["data_report"]
    assert report["kept"] > 0
    prepared = tmp_path / "run" / "data" / "report.json"
    text = prepared.read_text(encoding="utf-8") if prepared.is_file() else ""
    assert "augment.back_translation" in text, "the back-translation step did not run"
