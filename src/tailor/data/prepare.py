"""`tailor data prepare`: sources -> clean -> de-duplicate -> split -> cross-split de-dup -> augment -> tokenize.

Every input training reads goes through here: `data.sources`, and the raw files of `data.train`
(see `tailor.data.training_data`). The output is a directory that training reads directly
(`data.train: [that dir]`):

    prepared.json          cache key, splits, files, settings that shaped the tokens
    report.json / .txt     every input row accounted for: kept, or dropped with its reason, per step
    <split>.jsonl          canonical records per split (train, eval, test), human-readable
    tokenized/<split>/     Arrow datasets of whole sequences: input_ids, labels, chat, source, where
                           (when the caller passes a tokenizer; `tailor.data.tokenize`)

Loading and cleaning stream; rows are held in memory from de-duplication on (the kept rows, not the
input files). A second run on unchanged inputs, settings and tokenizer returns the cached directory.
The data stage loads no model: the caller passes the tokenizer (and a back-translation translator).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tailor.config import DataConfig, Recipe
from tailor.data.records import PrepareReport, record_kind
from tailor.errors import TailorError

log = logging.getLogger("tailor")

FORMAT_VERSION = 2  # 2: tokenized sequences are whole (cut per objective at training time)
SPLITS = ("train", "eval", "test")
MANIFEST = "prepared.json"


@dataclass
class Prepared:
    """A prepared dataset directory and what it holds."""

    path: Path
    manifest: dict
    cached: bool = False

    @property
    def splits(self) -> dict[str, int]:
        return self.manifest["splits"]

    def records(self, split: str) -> list[dict]:
        """Canonical records of a split (empty list when the split is empty)."""
        f = self.path / f"{split}.jsonl"
        if not f.is_file():
            return []
        with f.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def report(self) -> dict:
        """The accounting written as report.json (rows read, steps, splits, token statistics)."""
        return json.loads((self.path / "report.json").read_text(encoding="utf-8"))

    def tokenized(self, split: str):
        """The split's tokenized `datasets.Dataset` (input_ids, labels), or None when it has none."""
        from datasets import load_from_disk

        d = self.path / "tokenized" / split
        return load_from_disk(str(d)) if d.is_dir() else None


def is_prepared_dir(path: str | Path) -> bool:
    """True for a directory written by `run` (it holds prepared.json)."""
    return (Path(path) / MANIFEST).is_file()


def open_prepared(path: str | Path) -> Prepared:
    """A prepared directory, checked to be one written by this format version."""
    path = Path(path)
    if not is_prepared_dir(path):
        raise TailorError(f"{path} is not a prepared dataset directory (no {MANIFEST})",
                          fix="create it with `tailor data prepare RECIPE.yaml`")
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise TailorError(f"{path} was prepared by another tailor version (format {manifest.get('format_version')})",
                          fix="run `tailor data prepare` again")
    return Prepared(path, manifest)


# ---------------------------------------------------------------------------------------------
# Cache key: everything that decides the output


def _input_files(data: DataConfig, base_dir: Path | None) -> list[Path]:
    """Every file or saved-dataset folder the sources read (what the cache key hashes)."""
    from tailor.data.loading import source_files
    from tailor.data.registry import resolve_registry

    files: list[Path] = []
    for src in data.sources:
        if src.registry:
            registry = Path(src.registry)
            if base_dir and not registry.is_absolute():
                registry = base_dir / registry
            files.append(registry if registry.is_file() else registry / "dataset_info.json")
            src = resolve_registry(registry, src.name)
        files.extend(source_files(src.path, base_dir))
    return files


def _hash_path(h, path: Path) -> None:
    h.update(str(path.resolve()).encode())
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                _hash_path(h, p)
        return
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)


def tokenizer_dir(tokenizer) -> str | None:
    """The resolved directory a tokenizer was loaded from (what a prepared dataset records), or None."""
    if tokenizer is None:
        return None
    name = getattr(tokenizer, "name_or_path", "") or ""
    return str(Path(name).resolve()) if name else None


def cache_key(recipe: Recipe, files: list[Path], tokenizer=None, processor=None) -> str:
    """Hash of the input files' bytes, the data settings and the tokenizer (its files and chat template)."""
    h = hashlib.blake2b(digest_size=16)
    from tailor import __version__

    h.update(f"{FORMAT_VERSION} {__version__}".encode())
    settings = recipe.data.model_dump(mode="json", exclude={"prepared_dir", "num_proc", "train", "eval", "val_ratio", "packing"})
    settings["tokenizer"] = tokenizer_dir(tokenizer)
    settings["chat_template_text"] = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if processor is not None:  # its image processor decides how many tokens each image takes
        settings["processor"] = processor.image_processor.to_json_string()
    h.update(json.dumps(settings, sort_keys=True).encode())
    for f in files:
        _hash_path(h, f)
    tok = settings["tokenizer"]
    if tok:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if (Path(tok) / name).is_file():
                _hash_path(h, Path(tok) / name)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The pipeline


def _stream_sources(data: DataConfig, report: PrepareReport, base_dir: Path | None, tokenizer=None,
                    teacher=None) -> Iterator[dict]:
    from tailor.data.loading import iter_source

    # Reports are created up front so the accounting lists the sources first, in order.
    steps = [report.step(f"load[{i}] {src.name or Path(src.path or '').name or f'source {i}'}")
             for i, src in enumerate(data.sources)]

    def stream() -> Iterator[dict]:
        for src, step in zip(data.sources, steps):
            for rec in iter_source(src, data.on_error, step, base_dir, tokenizer, teacher):
                rec["split"] = src.split
                yield rec

    return stream()


def _cached(out: Path, key: str) -> Prepared | None:
    if not is_prepared_dir(out):
        return None
    try:
        cached = open_prepared(out)
    except TailorError:
        return None
    if cached.manifest.get("cache_key") != key:
        return None
    cached.cached = True
    return cached


def run(recipe: Recipe, tokenizer=None, *, translator=None, teacher=None, base_dir: str | Path | None = None,
        force: bool = False, processor=None) -> Prepared:
    """Prepare `recipe.data.sources` into `recipe.data.prepared_dir` (reusing it when inputs and settings are unchanged).

    `tokenizer` (loaded by the caller from model.tokenizer / model.path, data.chat_template applied)
    tokenizes the splits and serves token bounds of the length cleaning step; without one, only the
    records are written. `translator` serves data.augment.back_translation
    (`tailor.models.translation.translator_for`), `teacher` the document sources' document.teacher
    (`tailor.models.teacher.teacher_for`). Relative source paths are read from `base_dir`.
    `processor` (a vision-language model's) places the image tokens of rows with images (`tailor.data.images`).
    """
    from tailor.data.augment import augment_records
    from tailor.data.clean import clean_records
    from tailor.data.dedup import dedup_records, drop_cross_split_twins, resolved
    from tailor.data.split import split_records

    data = recipe.data
    if not data.sources:
        raise TailorError("no data sources to prepare", where="data.sources",
                          fix="list inputs, e.g. data.sources: [{path: data/train.jsonl}] or [{registry: data/dataset_info.json, name: my_set}]")
    base = Path(base_dir) if base_dir else None
    out = Path(data.prepared_dir)
    files = _input_files(data, base)
    key = cache_key(recipe, files, tokenizer, processor)
    cached = None if force else _cached(out, key)
    if cached is not None:
        return cached

    started = time.perf_counter()
    report = PrepareReport()
    stream = _stream_sources(data, report, base, tokenizer, teacher)
    stream = clean_records(stream, data.clean, report, tokenizer=tokenizer)
    dedup = resolved(data.dedup)
    if dedup.exact or dedup.near:
        stream = dedup_records(stream, dedup, report)

    fixed: dict[str, list[dict]] = {s: [] for s in SPLITS}
    pool: list[dict] = []
    for rec in stream:
        (pool if rec.get("split", "auto") == "auto" else fixed[rec["split"]]).append(rec)
    splits = split_records(pool, data.split, report) if pool else {s: [] for s in SPLITS}
    for s in SPLITS:
        splits[s] = fixed[s] + splits.get(s, [])
    if any(src.document.teacher for src in data.sources) and (splits["eval"] or splits["test"]):
        from tailor.data.documents.teacher import drop_eval_twins

        splits = drop_eval_twins(splits, dedup, report)  # generated questions never twin a held-out one
    if dedup.across_splits and (dedup.exact or dedup.near) and (splits["eval"] or splits["test"]):
        splits = drop_cross_split_twins(splits, dedup, report)
    if splits["train"]:
        splits["train"] = augment_records(splits["train"], data.augment, report, translator=translator, base_dir=base)
    if not any(splits.values()):
        raise TailorError(f"no rows left after preparation:\n{report.to_text()}", where="data.sources",
                          fix="check the sources' format and the cleaning/length/language filters")

    # A folder of this call's own: the processes of one distributed run may prepare the same data at once.
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for s in SPLITS:
        report.splits[s] = len(splits[s])
        if splits[s]:
            _write_jsonl(tmp / f"{s}.jsonl", splits[s])
    report.check()
    token_stats = {}
    if tokenizer is not None:
        from tailor.data.tokenize import tokenize_split

        for s in SPLITS:
            if splits[s]:
                ds, stats = tokenize_split(splits[s], tokenizer, data.max_length, data.system_prompt, num_proc=data.num_proc,
                                           processor=processor)
                if ds is not None:
                    ds.save_to_disk(str(tmp / "tokenized" / s))
                token_stats[s] = stats
    report.extra["tokens"] = token_stats
    report.extra["seconds"] = round(time.perf_counter() - started, 3)
    manifest = {
        "format_version": FORMAT_VERSION,
        "cache_key": key,
        "splits": report.splits,
        "kinds": {s: _kinds(splits[s]) for s in SPLITS if splits[s]},
        "tokenizer": tokenizer_dir(tokenizer),
        "max_length": data.max_length,
        "chat_template": data.chat_template,
        "system_prompt": data.system_prompt,
        "inputs": [str(f) for f in files],
        "token_stats": token_stats,
    }
    (tmp / "report.json").write_text(report.to_json(), encoding="utf-8")
    (tmp / "report.txt").write_text(report.to_text() + "\n", encoding="utf-8")
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    # Replace the old directory only once the new one is complete; if another process finished the
    # same preparation first, its directory is as good as this one.
    done = None if force else _cached(out, key)
    if done is None:
        shutil.rmtree(out, ignore_errors=True)
        try:
            tmp.rename(out)
            return Prepared(out, manifest)
        except OSError:
            done = _cached(out, key)
            if done is None:
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    done.cached = False
    return done


def _kinds(records: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        k = record_kind(r)
        counts[k] = counts.get(k, 0) + 1
    return counts


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({k: v for k, v in r.items() if k != "split"}, ensure_ascii=False) + "\n")
