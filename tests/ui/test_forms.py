"""Forms generated from the recipe schema; values validated by it with the message on the field."""

import pytest
import yaml

from tailor.config import TrainRecipe, field_paths
from tailor.ui.forms import BASIC, EXTRA, MANAGED, FormErrors, schema_fields, settings_from_form, split_fields, validate


def test_fields_come_from_the_schema():
    fields = schema_fields()
    keys = {f.key for f in fields}
    schema = set(field_paths(TrainRecipe))
    assert keys <= schema and set(BASIC) <= keys and not keys & set(MANAGED)
    lr = next(f for f in fields if f.key == "train.lr")
    assert lr.kind == "float" and lr.default == TrainRecipe.model_fields["train"].default_factory().lr
    assert lr.description == "Peak learning rate."
    method = next(f for f in fields if f.key == "adapter.method")
    assert method.kind == "choice" and "qlora" in method.choices
    basic, advanced = split_fields(fields)
    assert [f.key for f in basic] == list(BASIC)
    assert "train.weight_decay" in {f.key for f in advanced["train"]}


def test_form_keeps_only_changed_values():
    fields = schema_fields()
    form = {"train.lr": "0.001", "train.batch_size": "8", "adapter.method": "lora", "train.dropout": "",
            "adapter.target_modules": "q_proj, v_proj", "eval.ranking_k": "1, 3"}
    settings = settings_from_form(form, fields)
    assert settings == {"train": {"lr": 0.001}, "adapter": {"target_modules": ["q_proj", "v_proj"]}}
    validate(settings, fields)


@pytest.mark.parametrize("form,key,message", [
    ({"train.lr": "fast"}, "train.lr", "valid number"),
    ({"train.batch_size": "0"}, "train.batch_size", "greater than or equal to 1"),
    ({"adapter.method": "lorra"}, "adapter.method", "lora"),
    ({EXTRA: "train: {lrr: 1}"}, EXTRA, "Did you mean 'train.lr'"),
    ({EXTRA: "train: [1"}, EXTRA, "not valid YAML"),
    ({"adapter.method": "full", "adapter.rslora": "true"}, "adapter", "rslora applies to lora"),
])
def test_bad_values_are_reported_on_their_field(form, key, message):
    fields = schema_fields()
    with pytest.raises(FormErrors) as err:
        validate(settings_from_form(form, fields), fields)
    assert key in err.value.errors
    e = err.value.errors[key]
    assert message in e.what + (e.fix or "") and e.where


def test_extra_yaml_sets_settings_without_a_field():
    fields = schema_fields()
    steps = [{"step": "whitespace"}]
    settings = settings_from_form({EXTRA: yaml.safe_dump({"data": {"clean": steps}})}, fields)
    assert validate(settings, fields).data.clean[0].step == "whitespace"


def test_the_untouched_form_is_the_schema_default():
    """Every field posted as the page shows it (defaults) makes an empty, valid recipe: no field's widget
    mangles its own default."""
    fields = schema_fields()
    form = {f.key: f.shown(f.default) for f in fields}
    assert settings_from_form(form, fields) == {}
    form["adapter.target_modules"] = "q_proj"
    form["train.class_weights"] = "balanced"
    form["train.objective"] = "classification"
    settings = settings_from_form(form, fields)
    assert settings["adapter"] == {"target_modules": ["q_proj"]}
    validate(settings, fields)
