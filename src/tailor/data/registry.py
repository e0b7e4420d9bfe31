"""LLaMA-Factory's `dataset_info.json`, read as is: a dataset name becomes a `SourceConfig`.

An entry names a local file or folder (`file_name`, relative to the registry's folder), a
`formatting` (alpaca, the default, or sharegpt), `columns` in LLaMA-Factory's names, sharegpt
`tags`, and `ranking: true` for preference pairs. The mapping to tailor's canonical fields follows
LLaMA-Factory's own parser: without `columns` an alpaca entry reads instruction/input/output only,
and with `columns` only the columns listed are read (others stay in each record's meta). An alpaca
entry whose columns name a `prompt` but no `response` (`{prompt: text}`) is pretraining text.
`num_samples` becomes `max_rows` (the first N rows, where LLaMA-Factory samples N at random).
Entries with only a hub or remote address (hf_hub_url, ms_hub_url, om_hub_url, script_url,
cloud_file_name) are refused: tailor does not download. An entry with both reads its local file;
hub-only keys (subset, split, folder, revision, file_sha1) have no meaning for a local file.
An `images` column gives each row its image files (relative to the data file; `tailor.data.images`); videos
and audios columns are refused. A `kto_tag` column makes
the entry KTO rows (a conversation whose last answer is labelled true/false).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from tailor.config import SourceConfig
from tailor.errors import TailorError

REGISTRY_FILE = "dataset_info.json"
ALPACA = {"prompt": "instruction", "query": "input", "response": "output", "history": "history", "system": "system",
          "tools": "tools", "chosen": "chosen", "rejected": "rejected", "kto_tag": "label", "images": "images"}
SHAREGPT = {"messages": "messages", "system": "system", "tools": "tools", "chosen": "chosen", "rejected": "rejected",
            "kto_tag": "label", "images": "images"}
UNSUPPORTED_COLUMNS = {"videos": "videos", "audios": "audio"}
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")


def load_registry(registry: str | Path) -> tuple[dict, Path]:
    """The parsed `dataset_info.json` (given as the file or the folder holding it) and its path."""
    path = Path(registry).expanduser()
    if path.is_dir():
        path = path / REGISTRY_FILE
    if not path.is_file():
        raise TailorError(f"dataset registry not found: {path}",
                          fix=f"point `registry` at a LLaMA-Factory {REGISTRY_FILE} or the folder holding it")
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise TailorError(f"dataset registry is not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}:{exc.colno}",
                          fix="fix the JSON") from None
    if not isinstance(info, dict):
        raise TailorError("a dataset registry must be a JSON object of dataset name -> entry", where=str(path))
    return info, path


def _columns(entry: dict, formatting: str, ranking: bool, where: str) -> tuple[str, dict[str, str]]:
    """tailor's format and canonical column mapping ("" = LLaMA-Factory does not read that field)."""
    cols = entry.get("columns")
    if cols is not None and not isinstance(cols, dict):
        raise TailorError("`columns` must be an object", where=where)
    cols = cols or {}
    known = ALPACA if formatting == "alpaca" else SHAREGPT
    for key, value in cols.items():
        if key in UNSUPPORTED_COLUMNS:
            raise TailorError(f"tailor trains text and image models and cannot use {UNSUPPORTED_COLUMNS[key]} (columns.{key})",
                              where=where, fix=f"remove columns.{key}, or use a dataset without it")
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            raise TailorError(f"unknown column key '{key}' for {formatting} formatting", where=where,
                              fix=(f"did you mean '{near[0]}'? " if near else "") + f"known: {', '.join(known)}")
        if not isinstance(value, str):
            raise TailorError(f"columns.{key} must be a column name (a string)", where=where)
    if formatting == "alpaca" and not ranking and "columns" in entry and "response" not in cols:
        if {"query", "history"} & set(cols):
            raise TailorError("an alpaca entry without a `response` column is pretraining text and reads only `prompt`",
                              where=where, fix="add columns.response, or keep only columns.prompt")
        return "text", {"text": cols.get("prompt", "instruction")}
    # LLaMA-Factory reads prompt/query/response (alpaca) or messages (sharegpt) by default; with
    # `columns`, only the columns listed. The required ones keep their default names as a fallback.
    defaults = {"prompt": "instruction", "response": "output", "messages": "conversations"}
    if "columns" not in entry:
        defaults["query"] = "input"
    if ranking:
        defaults |= {"chosen": "chosen", "rejected": "rejected"}
    mapping = {canon: cols.get(lf, defaults.get(lf, "")) for lf, canon in known.items()}
    if ranking:
        mapping.pop("output", None)
    else:
        mapping.pop("chosen"), mapping.pop("rejected")
    if "kto_tag" in cols and not ranking:
        return "kto", mapping
    mapping.pop("label")
    return ("preference" if ranking else formatting), mapping


def resolve_registry(registry: str | Path, name: str) -> SourceConfig:
    """The `SourceConfig` of dataset `name` in a LLaMA-Factory `dataset_info.json` (file or its folder)."""
    info, path = load_registry(registry)
    if name not in info:
        near = difflib.get_close_matches(name, list(info), n=3, cutoff=0.4)
        raise TailorError(f"no dataset named '{name}' in {path}", where=str(path),
                          fix=(f"closest names: {', '.join(near)}" if near else f"names: {', '.join(list(info)[:20])}"))
    entry, where = info[name], f"{path}, entry '{name}'"
    if not isinstance(entry, dict):
        raise TailorError("a registry entry must be an object", where=where)
    if "file_name" not in entry:
        hub = [k for k in HUB_KEYS if k in entry]
        what = f"{hub[0]}: {entry[hub[0]]}" if hub else "no file_name"
        raise TailorError(f"dataset '{name}' is not a local file ({what}); tailor works offline and does not download",
                          where=where, fix="download the data files next to the registry and set file_name to them")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise TailorError(f"unknown formatting '{formatting}'", where=where, fix="use alpaca or sharegpt")
    ranking = bool(entry.get("ranking", False))
    file = Path(entry["file_name"]).expanduser()
    file = file if file.is_absolute() else path.parent / file
    if not file.exists():
        raise TailorError(f"file of dataset '{name}' not found: {file}", where=where,
                          fix="put the file there, or correct file_name (relative to the registry's folder)")
    fmt, columns = _columns(entry, formatting, ranking, where)
    if file.is_file() and file.suffix.lower() == ".txt":
        fmt, columns = "text", {}  # LLaMA-Factory reads .txt lines as pretraining text
    tags = entry.get("tags") or {}
    if formatting != "sharegpt":
        tags = {}  # LLaMA-Factory applies tags to sharegpt only
    for key in tags:
        if key not in TAGS:
            near = difflib.get_close_matches(key, TAGS, n=1)
            raise TailorError(f"unknown tag '{key}'", where=where,
                              fix=(f"did you mean '{near[0]}'? " if near else "") + f"known: {', '.join(TAGS)}")
    samples = entry.get("num_samples")
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise TailorError("num_samples must be a positive integer", where=where)
    return SourceConfig(path=str(file), name=name, format=fmt, columns=columns, tags=dict(tags), max_rows=samples)
