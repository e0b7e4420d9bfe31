"""argparse arguments generated from a command's settings class, and the parsed values validated by it.

Every field of a CommandSettings class is an argument: `--field-name` (or the `flag` named in its flag()
extra), a positional when marked positional. A section (e.g. ServeConfig) contributes only the fields it marks
with flag(); their values come back as that section's settings. Literal fields are validated by the schema, so
a wrong choice is a TailorError that names the flag and the valid values.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from tailor.config.commands import CommandSettings
from tailor.errors import TailorError


def _cli(info) -> dict:
    return (info.json_schema_extra or {}).get("cli", {}) if isinstance(info.json_schema_extra, dict) else {}


def _plain(annotation: Any) -> Any:
    """The type without None, and without Annotated metadata."""
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _plain(args[0])
    if getattr(get_origin(annotation), "__name__", "") == "Annotated" or hasattr(annotation, "__metadata__"):
        return _plain(get_args(annotation)[0])
    return annotation


def flag_name(name: str, info) -> str:
    """The flag a field is set by (--max-examples), or its positional's metavar (MODEL)."""
    cli = _cli(info)
    if cli.get("positional"):
        return cli.get("metavar") or name.upper()
    return cli.get("flag") or "--" + (info.alias or name).replace("_", "-")


def _default_text(info) -> str:
    if info.is_required():
        return ""
    default = info.default_factory() if info.default_factory else info.default
    if default in (None, False, [], "", {}):
        return ""
    return f" (default {default})"


def arguments(model: type[BaseModel]) -> list[tuple[str, Any, dict]]:
    """(field name, field info, add_argument keywords) of every argument `model` declares, positionals first."""
    whole = issubclass(model, CommandSettings)
    out = []
    for name, info in model.model_fields.items():
        cli = _cli(info)
        if cli.get("skip") or not (whole or cli.get("arg")):
            continue
        ann = _plain(info.annotation)
        kw: dict[str, Any] = {"help": (info.description or "").rstrip(".") + _default_text(info),
                              "default": argparse.SUPPRESS}
        is_list = getattr(get_origin(ann), "__name__", "") == "list"
        item = _plain(get_args(ann)[0]) if is_list else ann
        if get_origin(item) is Literal:
            kw["metavar"] = "{" + ",".join(map(str, get_args(item))) + "}"  # checked by the schema: a TailorError
            item = type(get_args(item)[0])
        if item is bool and not is_list:
            kw["action"] = "store_true"
        else:
            kw["type"] = item if item in (int, float) else str
        if "metavar" in cli:
            kw["metavar"] = cli["metavar"]
        elif "metavar" not in kw and kw.get("action") != "store_true":
            kw["metavar"] = name.upper()  # not the dest, which may carry a section prefix
        if cli.get("positional"):
            kw["default"] = None  # argparse would convert a SUPPRESS default with `type`; None means not given
            kw["metavar"] = kw.get("metavar") or name.upper()
            if is_list:
                kw["nargs"] = "+" if info.is_required() else "*"
            elif not info.is_required():
                kw["nargs"] = "?"
        else:
            if cli.get("action"):
                kw["action"] = cli["action"]
            elif is_list:
                kw["nargs"] = "+"
            if info.is_required():
                kw["required"] = True
        out.append((name, info, kw))
    return sorted(out, key=lambda a: not _cli(a[1]).get("positional"))


def add_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str = "") -> None:
    """Add `model`'s arguments to `parser`; values land in the namespace as PREFIX + field name."""
    groups: dict[str, Any] = {}
    for name, info, kw in arguments(model):
        cli = _cli(info)
        target = parser
        if cli.get("group"):
            target = groups.setdefault(cli["group"], parser.add_argument_group(cli["group"]))
        if cli.get("positional"):
            target.add_argument(prefix + name, **kw)
        else:
            target.add_argument(flag_name(name, info), dest=prefix + name, **kw)


def values_given(ns: argparse.Namespace, model: type[BaseModel], prefix: str = "") -> dict:
    """The values the command line gave for `model`'s arguments (defaults are the schema's)."""
    values = vars(ns)
    return {(model.model_fields[n].alias or n): values[prefix + n] for n in model.model_fields
            if values.get(prefix + n) is not None}


def parse_settings(model: type[BaseModel], values: dict) -> Any:
    """Validate command-line values against a command's settings; a TailorError names each bad flag."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            info = model.model_fields.get(name) or next((i for i in model.model_fields.values() if i.alias == name), None)
            where = flag_name(name, info) if info else name
            problems.append(f"{where}: {_message(err, info)}")
        raise TailorError("invalid arguments:\n    " + "\n    ".join(problems),
                          fix="see the command's --help for each flag's values") from None


def _message(err: dict, info) -> str:
    if err["type"] == "literal_error" and info is not None:
        # "unknown export format 'tflite'. Did you mean ...?": the wording of the stages' own checks
        choices = [str(c) for c in get_args(_literal(info.annotation))]
        value = err.get("input")
        near = difflib.get_close_matches(str(value), choices, n=1)
        label = _cli(info).get("choice", "value")
        return (f"unknown {label} '{value}'." + (f" Did you mean '{near[0]}'?" if near else "")
                + f" Use one of: {', '.join(choices)}")
    return f"{err['msg']} (got {err.get('input')!r})"


def _literal(annotation: Any) -> Any:
    ann = _plain(annotation)
    if getattr(get_origin(ann), "__name__", "") == "list":
        ann = _plain(get_args(ann)[0])
    return ann
