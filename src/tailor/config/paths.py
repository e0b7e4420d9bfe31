"""Where a recipe's paths point, found from the schema (every path field is annotated with a PathRole).

Input paths in a recipe file are relative to the file's folder; output paths (run directories, registry files)
to the working directory; `key=value` overrides to the working directory. A saved recipe holds absolute input
paths, so it reproduces its run from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Callable, get_args, get_origin

from pydantic import BaseModel

from tailor.config.sections import PathRole


def path_role(annotation: Any, metadata: list | None = None) -> PathRole | None:
    """The PathRole of a field's type (found inside Optional, list and dict values), or None for non-paths."""
    for m in metadata or ():
        if isinstance(m, PathRole):
            return m
    if get_origin(annotation) is Annotated:
        found = [m for m in get_args(annotation)[1:] if isinstance(m, PathRole)]
        return found[0] if found else path_role(get_args(annotation)[0])
    for arg in get_args(annotation):
        role = path_role(arg)
        if role:
            return role
    return None


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The section models a field holds: itself, or the items of a list (members of a tagged union too)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        if get_origin(annotation) is Annotated and arg is not get_args(annotation)[0]:
            continue
        out.extend(_sections(arg))
    return out


def map_paths(data: Any, model: type[BaseModel], fn: Callable[[str, str], str]) -> Any:
    """A copy of the nested dict `data` (shaped like `model`) with fn(role, path) applied to every path in it."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key, value in data.items():
        info = model.model_fields.get(key)
        if info is None or value is None:
            continue
        sections = _sections(info.annotation)
        if sections:
            if isinstance(value, list):
                out[key] = [map_paths(v, _item_model(v, sections), fn) for v in value]
            else:
                out[key] = map_paths(value, sections[0], fn)
            continue
        role = path_role(info.annotation, info.metadata)
        if role is None:
            continue

        def one(v: Any) -> Any:
            return fn(role.role, v) if isinstance(v, str) and role.applies(v) else v

        if isinstance(value, list):
            out[key] = [one(v) for v in value]
        elif isinstance(value, dict):
            out[key] = {k: one(v) for k, v in value.items()}
        else:
            out[key] = one(value)
    return out


def _item_model(item: Any, sections: list[type[BaseModel]]) -> type[BaseModel]:
    """The member of a tagged union (cleaning steps: `step`) an item is, else the one section."""
    if len(sections) > 1 and isinstance(item, dict):
        for s in sections:
            tag = s.model_fields.get("step")
            if tag is not None and item.get("step") in get_args(tag.annotation):
                return s
    return sections[0]


def _is_url(p: str) -> bool:
    return "://" in p


def relative_to_recipe(data: dict, model: type[BaseModel], recipe_dir: Path) -> dict:
    """Input paths of a recipe file joined to the file's folder (absolute ones and URLs kept)."""
    def fix(role: str, p: str) -> str:
        if role != "input" or not p or _is_url(p) or Path(p).expanduser().is_absolute():
            return p
        return os.path.abspath(recipe_dir / p)

    return map_paths(data, model, fix)


def absolute_inputs(data: dict, model: type[BaseModel]) -> dict:
    """Every input path made absolute against the working directory (URLs kept). Output paths stay as they are:
    relative ones mean the working directory of whoever runs the recipe next."""
    def fix(role: str, p: str) -> str:
        return p if role != "input" or not p or _is_url(p) else os.path.abspath(Path(p).expanduser())

    return map_paths(data, model, fix)
