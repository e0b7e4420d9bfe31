"""Forms generated from the recipe schema (tailor.config), and form values validated by it.

Every leaf setting of the sections a command reads becomes a field with the schema's type, default and
description; BASIC lists the few most people change, the rest go under "advanced". Settings a form cannot show
as one field (lists of sections such as cleaning steps) are set in the advanced "more settings (YAML)" box,
validated with the rest. Validation is the schema's own (`Recipe`); each message is put beside its field in the
CLI's what / where / fix form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tailor.config import Recipe, TrainRecipe, merge_settings
from tailor.errors import TailorError

# The settings most runs change, in the order shown; everything else is under "advanced".
BASIC = ("adapter.method", "adapter.r", "train.objective", "train.epochs", "train.max_steps", "train.lr",
         "train.batch_size", "data.max_length", "train.eval_steps", "train.logging_steps", "train.save_steps")
# Set by the page itself (the chosen model, the project's data, the run's folder), not typed in.
MANAGED = ("model.path", "model.preset", "model.tokenizer", "data.train", "data.eval", "data.prepared_dir",
           "train.output_dir", "train.resume", "train.resume_force")
EXTRA = "extra_yaml"


@dataclass
class FormField:
    key: str                    # dotted recipe key, also the form input's name
    kind: str                   # "bool", "choice", "int", "float", "text", "list"
    default: Any
    description: str
    choices: tuple = ()
    optional: bool = False

    def shown(self, value: Any) -> str:
        """The value as the input shows it."""
        if value is None:
            return ""
        if self.kind == "list":
            return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)


def _plain(ann: Any) -> tuple[Any, bool]:
    if get_origin(ann) is Union or type(ann).__name__ == "UnionType":
        args = [a for a in get_args(ann) if a is not type(None)]
        optional = len(args) < len(get_args(ann))
        if len(args) == 1:
            inner, _ = _plain(args[0])
            return inner, optional
        return ann, optional
    if hasattr(ann, "__metadata__"):
        return _plain(get_args(ann)[0])
    return ann, False


def _field(key: str, info) -> FormField | None:
    ann, optional = _plain(info.annotation)
    default = info.default_factory() if info.default_factory else info.default
    desc = info.description or ""
    origin = get_origin(ann)
    if ann is bool:
        return FormField(key, "bool", default, desc, ("true", "false"), optional)
    if origin is Literal:
        return FormField(key, "choice", default, desc, tuple(str(a) for a in get_args(ann)), optional)
    if ann is int:
        return FormField(key, "int", default, desc, optional=optional)
    if ann is float:
        return FormField(key, "float", default, desc, optional=optional)
    if ann is str:
        return FormField(key, "text", default, desc, optional=optional)
    if getattr(origin, "__name__", "") == "list":
        item, _ = _plain(get_args(ann)[0])
        if item in (str, int, float) or get_origin(item) is Literal:
            return FormField(key, "list", default, desc, optional=optional)
    if origin is Union:  # e.g. target_modules: list[str] | "all-linear": one of the words, or a list
        words = tuple(str(w) for a in get_args(ann) if get_origin(a) is Literal for w in get_args(a))
        return FormField(key, "list", default, desc, words, optional)
    return None  # lists of sections, dicts: set through the YAML box


def schema_fields(model: type[BaseModel] = TrainRecipe) -> list[FormField]:
    """Every setting of `model` a form can show, as fields (managed keys left out)."""
    out: list[FormField] = []
    for section, sinfo in model.model_fields.items():
        sub = sinfo.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            continue
        for name, info in sub.model_fields.items():
            key = f"{section}.{name}"
            if key in MANAGED:
                continue
            f = _field(key, info)
            if f is not None:
                out.append(f)
    return out


def split_fields(fields: list[FormField]) -> tuple[list[FormField], dict[str, list[FormField]]]:
    """(basic fields in BASIC order, advanced fields grouped by section)."""
    by_key = {f.key: f for f in fields}
    basic = [by_key[k] for k in BASIC if k in by_key]
    advanced: dict[str, list[FormField]] = {}
    for f in fields:
        if f.key not in BASIC:
            advanced.setdefault(f.key.split(".")[0], []).append(f)
    return basic, advanced


def _value(f: FormField, raw: str) -> Any:
    raw = raw.strip()
    if raw == "":
        return None if f.optional or f.default is None else f.default
    if f.kind in ("text", "choice"):
        return raw
    if f.kind == "list":
        if raw.startswith("["):
            return yaml.safe_load(raw)
        if raw in f.choices:
            return raw
        items = [s.strip() for s in raw.replace("\n", ",").split(",") if s.strip()]
        numeric = isinstance(f.default, list) and f.default and not isinstance(f.default[0], str)
        return [yaml.safe_load(s) for s in items] if numeric else items
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # the schema names it: "Input should be a valid number"


def settings_from_form(form: dict[str, str], fields: list[FormField]) -> dict:
    """Nested settings from posted form values: only values that differ from the schema's default, so the
    recipe a user downloads says what they chose."""
    out: dict = {}
    for f in fields:
        if f.key not in form:
            continue
        value = _value(f, form[f.key])
        if value == f.default:
            continue
        section, name = f.key.split(".", 1)
        out.setdefault(section, {})[name] = value
    extra = (form.get(EXTRA) or "").strip()
    if extra:
        try:
            more = yaml.safe_load(extra)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark else ""
            raise FormErrors({EXTRA: TailorError(f"not valid YAML{at}: {getattr(exc, 'problem', exc)}",
                                                 where="more settings (YAML)", fix="check indentation and quoting")})
        if more is not None and not isinstance(more, dict):
            raise FormErrors({EXTRA: TailorError("expected a mapping of sections, e.g. `train: {seed: 1}`",
                                                 where="more settings (YAML)")})
        out = merge_settings(out, more or {})
    return out


class FormErrors(Exception):
    """Validation failed: field key -> TailorError (what / where / fix)."""

    def __init__(self, errors: dict[str, TailorError]):
        super().__init__("; ".join(f"{k}: {e.what}" for k, e in errors.items()))
        self.errors = errors


def validate(settings: dict, fields: list[FormField] | None = None) -> Recipe:
    """The recipe these settings make, validated by the schema; FormErrors maps each problem to its field."""
    from tailor.config import field_paths

    known = set(field_paths(Recipe))
    errors: dict[str, TailorError] = {}
    for section, values in settings.items():
        for name in (values or {}) if isinstance(values, dict) else [None]:
            key = f"{section}.{name}" if name else section
            if key not in known:
                from tailor.config import _nearest

                errors[EXTRA] = TailorError(f"unknown setting '{key}'.{_nearest(key, sorted(known))}",
                                            where="more settings (YAML)", fix="correct its name; the fields above list every setting")
    if errors:
        raise FormErrors(errors)
    try:
        return Recipe.model_validate(settings)
    except ValidationError as exc:
        by_key = {f.key: f for f in fields or []}
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            key = ".".join(loc[:2])
            target = key if key in by_key else (loc[0] if loc else EXTRA)
            f = by_key.get(key)
            fix = f"{f.description} (default {f.default!r})" if f else "see the setting's description"
            msg = err["msg"].removeprefix("Value error, ")
            errors.setdefault(target, TailorError(f"{msg} (got {err.get('input')!r})",
                                                  where=f"{'.'.join(loc) or 'recipe'} (form field and recipe key)", fix=fix))
        raise FormErrors(errors) from None


def recipe_yaml(settings: dict) -> str:
    """The recipe file these settings make (what `tailor train RECIPE` reads)."""
    return yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)


def train_command(recipe_path: str) -> str:
    return f"tailor train {recipe_path}"
