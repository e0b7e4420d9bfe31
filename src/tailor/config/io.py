"""Loading recipes, `key=value` overrides and the help text of a schema.

Unknown keys are errors that name the key and the nearest valid one.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tailor.config.paths import absolute_inputs, relative_to_recipe
from tailor.config.recipe import Recipe
from tailor.errors import TailorError


def _nearest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts (sections and leaves)."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        paths.append(dotted)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths.extend(field_paths(ann, dotted + "."))
    return paths


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every leaf setting: the text of `--help`."""
    rows: list[tuple[str, str, str, str]] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        dotted = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_fields(ann, dotted + "."))
            continue
        default = info.default_factory() if info.default_factory else info.default
        shown = "required" if info.is_required() else repr(default) if default is not None else "-"
        rows.append((dotted, _type_name(ann), shown, info.description or ""))
        for item in _list_item_models(ann):
            # Items of a list of sections (sources, cleaning steps) are described too.
            tag = item.model_fields.get("step")
            label = f"[step={get_args(tag.annotation)[0]}]" if tag is not None else "[]"
            rows.extend(r for r in describe_fields(item, f"{dotted}{label}.") if not r[0].endswith(".step"))
            if tag is not None:
                rows.append((f"{dotted}{label}", "step", "-", tag.description or ""))
    return rows


def _list_item_models(ann: Any) -> list[type[BaseModel]]:
    """The section models a `list[...]` annotation holds (one, or each member of a tagged union)."""
    if getattr(get_origin(ann), "__name__", "") != "list":
        return []
    (item,) = get_args(ann)
    if get_origin(item) is Annotated:
        item = get_args(item)[0]
    members = get_args(item) if get_origin(item) is Union else (item,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def _type_name(ann: Any) -> str:
    origin = get_origin(ann)
    if origin is Annotated:
        return _type_name(get_args(ann)[0])
    if origin is Union and all(isinstance(a, type) and issubclass(a, BaseModel) for a in get_args(ann)):
        return "step"
    if origin is Literal:
        return "|".join(str(a) for a in get_args(ann))
    if origin is None:
        return getattr(ann, "__name__", str(ann))
    args = [a for a in get_args(ann) if a is not type(None)]
    inner = "|".join(_type_name(a) for a in args)
    if getattr(origin, "__name__", "") == "list":
        return f"list[{inner}]"
    if getattr(origin, "__name__", "") == "dict":
        return "dict[" + ",".join(_type_name(a) for a in get_args(ann)) + "]"
    return inner


def help_text(model: type[BaseModel]) -> str:
    """The keys table shown by `--help` for commands that take this schema."""
    rows = describe_fields(model)
    width = max(len(r[0]) for r in rows)
    lines = [f"  {k:<{width}}  {d}  [{t}; default {v}]" for k, t, v, d in rows]
    return "\n".join(lines)


def parse_overrides(pairs: list[str], model: type[BaseModel]) -> dict:
    """Turn ['train.lr=1e-4', 'data.train=[a.jsonl,b.jsonl]'] into a nested dict (values parsed as YAML)."""
    out: dict = {}
    valid = field_paths(model)
    for pair in pairs:
        if "=" not in pair:
            raise TailorError(f"override '{pair}' is not of the form key=value", fix="write e.g. train.lr=1e-4")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in valid:
            if model is not Recipe and key in field_paths(Recipe):
                raise TailorError(f"'{key}' is not read by this command; it reads {', '.join(model.model_fields)}",
                                  fix="set it in the recipe for the command that reads it, or drop it")
            raise TailorError(f"unknown setting '{key}' on the command line.{_nearest(key, valid)}",
                              fix="run the command with --help to see every setting")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def parse_preset_overrides(pairs: list[str]) -> dict:
    """['num_hidden_layers=2', ...] -> {'num_hidden_layers': 2} for a model preset's config."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise TailorError(f"model override '{pair}' is not of the form key=value", fix="e.g. num_hidden_layers=2")
        key, raw = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def merge_settings(base: dict, extra: dict) -> dict:
    """Nested dict merge: `extra` wins; sections merge key by key."""
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = merge_settings(merged[k], v)
        else:
            merged[k] = v
    return merged


def _check_unknown(data: Any, model: type[BaseModel], where: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if key not in model.model_fields:
            valid = [f"{prefix}{k}" for k in model.model_fields]
            raise TailorError(f"unknown setting '{prefix}{key}'.{_nearest(prefix + str(key), valid)}", where=where,
                              fix="remove it or correct its name; `--help` lists every setting")
        ann = model.model_fields[key].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _check_unknown(value, ann, where, f"{prefix}{key}.")


def build(model: type[BaseModel], data: dict, where: str) -> Any:
    """Validate a nested dict against a schema, turning pydantic errors into one clear message."""
    _check_unknown(data, model, where)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
        raise TailorError("invalid settings:\n    " + "\n    ".join(problems), where=where,
                          fix="correct the values; `--help` lists each setting with its type") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TailorError(f"recipe file not found: {path}", fix="pass the path of a YAML recipe (examples under configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise TailorError(f"the recipe is not valid YAML: {getattr(exc, 'problem', exc)}", where=where,
                          fix="check indentation and quoting at that line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TailorError("a recipe must be a YAML mapping of sections (model, data, adapter, train, eval)", where=str(path))
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None,
                reads: type[BaseModel] | None = None) -> Recipe:
    """Read a YAML recipe and apply `key=value` overrides.

    Input paths in the file resolve against the file's folder, paths in overrides against the working directory.
    The whole file is validated (it may hold sections other commands read); with `reads` (a command's view,
    e.g. TrainRecipe) overrides may set only the keys that view has.
    """
    data = read_yaml(path) if path else {}
    where = str(path) if path else "command line"
    if path:
        _check_unknown(data, Recipe, where)
        data = relative_to_recipe(data, Recipe, Path(path).parent)
    if overrides:
        data = merge_settings(data, parse_overrides(overrides, reads or Recipe))
        where += " + command-line overrides"
    return build(Recipe, data, where)


def save_recipe(recipe: BaseModel, path: str | Path) -> None:
    """Write the resolved settings (every default filled in, input paths absolute) next to the run's outputs,
    so `tailor train PATH` reproduces the run from any directory (output paths stay as given)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = absolute_inputs(recipe.model_dump(mode="json"), type(recipe))
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
