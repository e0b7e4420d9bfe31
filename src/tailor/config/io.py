"""Loading recipes, `key=value` overrides and the help text of a schema.

Unknown keys are errors that name the key and the nearest valid one.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tailor.config.commands import Recipe
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


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (relative data paths resolve against the recipe's folder) and apply overrides."""
    data = read_yaml(path) if path else {}
    where = str(path) if path else "command line"
    if path:
        _check_unknown(data, Recipe, where)
        data = _resolve_paths(data, Path(path).parent)
    if overrides:
        data = merge_settings(data, parse_overrides(overrides, Recipe))
        where += " + command-line overrides"
    return build(Recipe, data, where)


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make file paths in a recipe relative to the recipe, so recipes can be run from anywhere."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}

    def fix(p: Any) -> Any:
        if isinstance(p, str) and p and not Path(p).is_absolute() and (base / p).exists():
            return str(base / p)
        return p

    data_sec = data.get("data")
    if isinstance(data_sec, dict) and isinstance(data_sec.get("sources"), list):
        # Source paths (files, folders, globs, registries) are relative to the recipe too.
        def fix_source(src: Any) -> Any:
            if not isinstance(src, dict):
                return src
            src = dict(src)
            for key in ("path", "registry"):
                p = src.get(key)
                if isinstance(p, str) and p and not Path(p).is_absolute():
                    src[key] = str((base / p).resolve())
            return src

        data_sec["sources"] = [fix_source(s) for s in data_sec["sources"]]
    aug = data_sec.get("augment") if isinstance(data_sec, dict) else None
    for sub, key in (("eda", "dictionary"), ("back_translation", "model")):
        node = aug.get(sub) if isinstance(aug, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str) and (base / node[key]).exists():
            node[key] = str(base / node[key])
    for section, keys in (("data", ("train", "eval")), ("eval", ("data",)), ("model", ("path", "tokenizer")), ("distill", ("teacher",)),
                          ("train", ("deepspeed_config",)), ("refresh", ("new_data",))):
        sec = data.get(section)
        if not isinstance(sec, dict):
            continue
        for key in keys:
            if isinstance(sec.get(key), list):
                sec[key] = [fix(p) for p in sec[key]]
            elif isinstance(sec.get(key), str):
                if section == "data" or section == "eval":
                    sec[key] = [fix(sec[key])]
                else:
                    sec[key] = fix(sec[key])
    return data


def save_recipe(recipe: BaseModel, path: str | Path) -> None:
    """Write the resolved settings (every default filled in) next to the run's outputs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8")
