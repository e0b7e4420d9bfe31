from pathlib import Path

import pytest
import yaml

from tailor.config import QuickstartConfig, Recipe, describe_fields, help_text, load_recipe, parse_overrides, save_recipe
from tailor.errors import TailorError

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_recipe_validates():
    recipes = sorted(set((ROOT / "configs").rglob("*.yaml")) | set((ROOT / "src" / "tailor" / "recipes").rglob("*.yaml")))
    assert len(recipes) >= 2
    for path in recipes:
        if path.name.endswith("-space.yaml"):
            continue  # a `tailor hpo` search space, validated against a recipe in tests/mlops/test_hpo.py
        load_recipe(path)


def test_overrides_apply_and_parse_types():
    r = load_recipe(None, ["train.lr=1e-3", "adapter.target_modules=[q_proj,v_proj]", "data.train=a.jsonl", "train.resume=true"])
    assert r.train.lr == 1e-3 and r.adapter.target_modules == ["q_proj", "v_proj"]
    assert r.data.train == ["a.jsonl"] and r.train.resume is True


def test_unknown_key_names_the_nearest(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  learning_rat: 0.1\n")
    with pytest.raises(TailorError) as e:
        load_recipe(p)
    assert "train.learning_rat" in str(e.value) and str(p) in str(e.value)
    with pytest.raises(TailorError, match="Did you mean 'train.lr'"):
        load_recipe(None, ["train.lrr=1"])
    with pytest.raises(TailorError, match="Did you mean 'adapter.r'"):
        load_recipe(None, ["adaptor.r=2"])


def test_bad_values_are_reported_with_their_keys(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  epochs: -1\n  objective: finetune\n")
    with pytest.raises(TailorError) as e:
        load_recipe(p)
    assert "train.epochs" in str(e.value) and "train.objective" in str(e.value)


def test_yaml_syntax_error_gives_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(TailorError, match=r"r\.yaml:\d+"):
        load_recipe(p)


def test_missing_recipe_and_bad_override_form():
    with pytest.raises(TailorError, match="not found"):
        load_recipe("/nonexistent/recipe.yaml")
    with pytest.raises(TailorError, match="key=value"):
        parse_overrides(["train.lr"], Recipe)


def test_model_path_and_preset_are_exclusive():
    with pytest.raises(TailorError, match="not both"):
        load_recipe(None, ["model.path=/x", "model.preset=llama-tiny", "model.tokenizer=/t"])
    with pytest.raises(TailorError, match="model.tokenizer"):
        load_recipe(None, ["model.preset=llama-tiny"])


def test_relative_paths_resolve_against_the_recipe(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    p = tmp_path / "r.yaml"
    p.write_text("data:\n  train: d.jsonl\n")
    assert load_recipe(p).data.train == [str(tmp_path / "d.jsonl")]


def test_saved_recipe_round_trips(tmp_path):
    r = load_recipe(None, ["train.lr=3e-4", "adapter.method=freeze"])
    save_recipe(r, tmp_path / "c.yaml")
    again = load_recipe(tmp_path / "c.yaml")
    assert again == r
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["train"]["lr"] == 3e-4


def test_help_lists_every_leaf_with_a_description():
    rows = describe_fields(Recipe)
    assert all(desc for _, _, _, desc in rows)
    text = help_text(Recipe)
    for key, *_ in rows:
        assert key in text
    assert "out_dir" in help_text(QuickstartConfig)
