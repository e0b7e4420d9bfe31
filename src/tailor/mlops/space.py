"""Search spaces of `tailor hpo`: SPACE.yaml parsed into distributions over recipe keys, checked by the schema.

A space is a YAML mapping of dotted recipe keys (the keys of `key=value` overrides) to distributions:

    train.lr:          {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
    adapter.r:         {type: int, low: 4, high: 64, step: 4}
    train.batch_size:  {type: categorical, choices: [8, 16]}

Every key, type, range end and choice is validated against `tailor.config.Recipe` before any trial runs,
so a typo or an out-of-range value is an error naming the key and its line, not a failed trial.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import yaml

from tailor.config import Recipe, _nearest, _type_name, build, field_paths
from tailor.errors import TailorError

_SPEC_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
              "categorical": {"type", "choices"}}

@dataclass
class Param:
    """One searched recipe key and its distribution."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: list | None = None
    where: str = ""               # file:line of the declaration, for error messages

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_categorical(self.key, self.choices)

    def grid(self) -> list:
        """The values grid search tries (a float range needs a step; log ranges are not enumerated)."""
        if self.type == "categorical":
            return list(self.choices)
        step = self.step or (1 if self.type == "int" else None)
        if step is None or self.log:
            raise TailorError(f"grid search cannot enumerate '{self.key}': it needs a step and no log scale",
                              where=self.where, fix="add `step: ...`, list the values as {type: categorical, "
                              "choices: [...]}, or use --sampler random|tpe")
        n = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(n)]
        return [int(v) for v in values] if self.type == "int" else [round(v, 12) for v in values]

    def spec(self) -> dict:
        """The distribution as plain data (stored with the study to recognise it when resuming)."""
        return {k: v for k, v in asdict(self).items() if k != "where" and v is not None and v is not False}


def parse_space(path: str | Path, base: Recipe) -> list[Param]:
    """Read SPACE.yaml into Params, each checked against the recipe schema (key, type, range, choices).

    Raises TailorError naming the key and its line for unknown keys, sections, malformed specs, low > high,
    log ranges that reach 0, and values the schema rejects (e.g. train.warmup_ratio >= 1).
    """
    path = Path(path)
    if not path.is_file():
        raise TailorError(f"search space file not found: {path}", where="--space",
                          fix="pass a YAML file mapping recipe keys to {type, low, high} (see configs/examples/hpo-space.yaml)")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TailorError(f"the search space is not valid YAML: {getattr(exc, 'problem', exc)}",
                          where=f"{path}:{mark.line + 1}" if mark else str(path)) from None
    if not isinstance(data, dict) or not data:
        raise TailorError("a search space is a non-empty mapping of recipe keys to distributions", where=str(path),
                          fix="e.g. `train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}`")
    lines: dict[str, int] = {}
    for key_node, _ in root.value:
        line = key_node.start_mark.line + 1
        if key_node.value in lines:
            raise TailorError(f"'{key_node.value}' is declared twice (lines {lines[key_node.value]} and {line})",
                              where=f"{path}:{line}", fix="keep one declaration per key")
        lines[key_node.value] = line
    base_data = base.model_dump(mode="json")
    return [_param(str(key), spec, f"{path}:{lines[str(key)]}", base_data) for key, spec in data.items()]


def _param(key: str, spec: Any, where: str, base_data: dict) -> Param:
    valid = field_paths(Recipe)
    if key not in valid:
        raise TailorError(f"unknown recipe key '{key}' in the search space.{_nearest(key, valid)}", where=where,
                          fix="use a dotted key as in command-line overrides; `tailor train --help` lists them")
    if key == "train.output_dir":
        raise TailorError("'train.output_dir' cannot be searched: each trial trains into OUT/trial-N/", where=where,
                          fix="remove it; --out chooses where the trials go")
    annotation = _annotation(key)
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        raise TailorError(f"'{key}' is a section, not a setting", where=where, fix=f"name a setting inside it, e.g. {key}.<name>")
    if not isinstance(spec, dict) or "type" not in spec:
        raise TailorError(f"'{key}' needs a distribution: a mapping with `type` float, int or categorical", where=where,
                          fix="e.g. {type: float, low: 1.0e-5, high: 1.0e-2, log: true} or {type: categorical, choices: [8, 16]}")
    kind = spec["type"]
    if kind not in _SPEC_KEYS:
        raise TailorError(f"'{key}': unknown type '{kind}'", where=where, fix="use type: float, int or categorical")
    extra = set(spec) - _SPEC_KEYS[kind]
    if extra:
        raise TailorError(f"'{key}': {kind} takes {', '.join(sorted(_SPEC_KEYS[kind]))}, not {', '.join(sorted(extra))}",
                          where=where)
    p = Param(key, kind, where=where)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise TailorError(f"'{key}': categorical needs a non-empty list `choices`", where=where)
        if any(not (c is None or isinstance(c, (bool, int, float, str))) for c in choices):
            raise TailorError(f"'{key}': choices must be single values (numbers, strings, true/false, null)", where=where)
        p.choices = choices
        values = choices
    else:
        for name in ("low", "high") + (("step",) if spec.get("step") is not None else ()):
            spec[name] = _number(spec.get(name), kind, f"'{key}': `{name}`", where)
        p.low, p.high, p.step, p.log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
        if not isinstance(p.log, bool):
            raise TailorError(f"'{key}': `log` must be true or false (got {p.log!r})", where=where)
        if p.low > p.high:
            raise TailorError(f"'{key}': low {p.low} is greater than high {p.high}", where=where, fix="swap them")
        if p.step is not None and p.step <= 0:
            raise TailorError(f"'{key}': step must be positive (got {p.step})", where=where)
        if p.log and p.step is not None:
            raise TailorError(f"'{key}': log and step cannot be combined", where=where, fix="drop one of them")
        if p.log and p.low <= 0:
            raise TailorError(f"'{key}': a log range needs low > 0 (got {p.low})", where=where)
        if not _accepts(annotation, float if kind == "float" else (int, float)):
            raise TailorError(f"'{key}' is a {_type_name(annotation)} setting; a {kind} range does not fit it", where=where,
                              fix="use type: int for integer settings, categorical for the others")
        values = [p.low, p.high]
    for v in values:  # the schema's own constraints (ranges, literals, cross-field rules) decide
        try:
            build(Recipe, _with(base_data, {key: v}), where)
        except TailorError as exc:
            raise TailorError(f"'{key}' = {v!r} is not a valid recipe value: {exc.what.split(':', 1)[-1].strip()}",
                              where=where, fix="keep the range inside what `tailor train --help` allows") from None
    return p


def _annotation(key: str) -> Any:
    model: Any = Recipe
    info = None
    for part in key.split("."):
        info = model.model_fields[part]
        model = info.annotation
    return info.annotation


def _accepts(annotation: Any, kinds: type | tuple) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return any(annotation is k or k in get_args(annotation) for k in kinds)


def _number(v: Any, kind: str, what: str, where: str) -> int | float:
    """An int (type int) or a number; numeric text is accepted because YAML 1.1 reads 1e-5 (no dot) as a string."""
    if isinstance(v, str):
        try:
            v = float(v) if kind == "float" else int(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, int if kind == "int" else (int, float)):
        raise TailorError(f"{what} must be {'an integer' if kind == 'int' else 'a number'} (got {v!r})", where=where)
    return v


def _with(data: dict, params: dict) -> dict:
    """A copy of a recipe dict with dotted keys set."""
    out = json.loads(json.dumps(data))
    for key, value in params.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def trial_recipe(base: Recipe, params: dict, output_dir: str | Path) -> Recipe:
    """The base recipe with a trial's values, training into `output_dir`."""
    data = _with(base.model_dump(mode="json"), {**params, "train.output_dir": str(output_dir)})
    return build(Recipe, data, f"trial values {params}")


def base_value(base: Recipe, key: str) -> Any:
    """The recipe's value of a dotted key."""
    node: Any = base.model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    return node
