"""`tailor data prepare`: sources -> clean -> de-duplicate -> split -> cross-split de-dup -> augment -> tokenize.

The output is a directory that training reads directly (`data.train: [that dir]`):

    prepared.json          cache key, splits, files, settings that shaped the tokens
    report.json / .txt     every input row accounted for: kept, or dropped with its reason, per step
    <split>.jsonl          canonical records per split (train, eval, test), human-readable
    tokenized/<split>/     Arrow datasets with input_ids and labels (when a tokenizer is configured)

Loading and cleaning stream; rows are held in memory from de-duplication on (the kept rows, not the
input files). A second run on unchanged inputs and recipe returns the cached directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tailor.config import DataConfig, Recipe
from tailor.data.records import PrepareReport, record_kind
from tailor.errors import TailorError

log = logging.getLogger("tailor")

FORMAT_VERSION = 1
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

    def tokenized(self, split: str):
        """The split's tokenized `datasets.Dataset` (input_ids, labels), or None when it has none."""
        from datasets import load_from_disk

        d = self.path / "tokenized" / split
        return load_from_disk(str(d)) if d.is_dir() else None


def is_prepared_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def open_prepared(path: str | Path) -> Prepared:
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


def cache_key(recipe: Recipe, files: list[Path]) -> str:
    """Hash of the input files' bytes, the data settings and the tokenizer (files and chat template)."""
    h = hashlib.blake2b(digest_size=16)
    from tailor import __version__

    h.update(f"{FORMAT_VERSION} {__version__}".encode())
    settings = recipe.data.model_dump(mode="json", exclude={"prepared_dir", "num_proc", "train", "eval", "val_ratio", "packing"})
    settings["tokenizer"] = recipe.model.tokenizer or recipe.model.path
    h.update(json.dumps(settings, sort_keys=True).encode())
    for f in files:
        _hash_path(h, f)
    tok = recipe.model.tokenizer or recipe.model.path
    if tok:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if (Path(tok) / name).is_file():
                _hash_path(h, Path(tok) / name)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The pipeline


def _stream_sources(data: DataConfig, report: PrepareReport, base_dir: Path | None) -> Iterator[dict]:
    from tailor.data.loading import iter_source

    # Reports are created up front so the accounting lists the sources first, in order.
    steps = [report.step(f"load[{i}] {src.name or Path(src.path or '').name or f'source {i}'}")
             for i, src in enumerate(data.sources)]

    def stream() -> Iterator[dict]:
        for src, step in zip(data.sources, steps):
            for rec in iter_source(src, data.on_error, step, base_dir):
                rec["split"] = src.split
                yield rec

    return stream()


def _load_tokenizer(recipe: Recipe):
    from tailor.models.loading import load_tokenizer

    path = recipe.model.tokenizer or recipe.model.path
    if not path:
        return None
    return load_tokenizer(path, trust_remote_code=recipe.model.trust_remote_code, chat_template=recipe.data.chat_template)


def run(recipe: Recipe, base_dir: str | Path | None = None, force: bool = False) -> Prepared:
    """Prepare `recipe.data.sources` into `recipe.data.prepared_dir` (reusing it when inputs and settings are unchanged)."""
    from tailor.data.augment import augment_records
    from tailor.data.clean import clean_records
    from tailor.data.dedup import dedup_records, drop_cross_split_twins
    from tailor.data.split import split_records

    data = recipe.data
    if not data.sources:
        raise TailorError("no data sources to prepare", where="data.sources",
                          fix="list inputs, e.g. data.sources: [{path: data/train.jsonl}] or [{registry: data/dataset_info.json, name: my_set}]")
    base = Path(base_dir) if base_dir else None
    out = Path(data.prepared_dir)
    files = _input_files(data, base)
    key = cache_key(recipe, files)
    if not force and is_prepared_dir(out):
        try:
            cached = open_prepared(out)
        except TailorError:
            cached = None
        if cached and cached.manifest.get("cache_key") == key:
            cached.cached = True
            return cached

    started = time.perf_counter()
    report = PrepareReport()
    tokenizer = _load_tokenizer(recipe)
    stream = _stream_sources(data, report, base)
    stream = clean_records(stream, data.clean, report, tokenizer=tokenizer)
    if data.dedup.exact or data.dedup.near:
        stream = dedup_records(stream, data.dedup, report)

    fixed: dict[str, list[dict]] = {s: [] for s in SPLITS}
    pool: list[dict] = []
    for rec in stream:
        (pool if rec.get("split", "auto") == "auto" else fixed[rec["split"]]).append(rec)
    splits = split_records(pool, data.split, report) if pool else {s: [] for s in SPLITS}
    for s in SPLITS:
        splits[s] = fixed[s] + splits.get(s, [])
    if data.dedup.across_splits and (data.dedup.exact or data.dedup.near) and (splits["eval"] or splits["test"]):
        splits = drop_cross_split_twins(splits, data.dedup, report)
    if splits["train"]:
        splits["train"] = augment_records(splits["train"], data.augment, report, base_dir=base)
    if not any(splits.values()):
        raise TailorError(f"no rows left after preparation:\n{report.to_text()}", where="data.sources",
                          fix="check the sources' format and the cleaning/length/language filters")

    tmp = out.with_name(out.name + ".tmp")
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
                ds, stats = tokenize_split(splits[s], tokenizer, data, num_proc=data.num_proc)
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
        "tokenizer": str(Path(recipe.model.tokenizer or recipe.model.path).resolve()) if tokenizer is not None else None,
        "max_length": data.max_length,
        "chat_template": data.chat_template,
        "system_prompt": data.system_prompt,
        "inputs": [str(f) for f in files],
        "token_stats": token_stats,
    }
    (tmp / "report.json").write_text(report.to_json(), encoding="utf-8")
    (tmp / "report.txt").write_text(report.to_text() + "\n", encoding="utf-8")
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    # Replace the old directory only once the new one is complete.
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return Prepared(out, manifest)


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


def training_datasets(recipe: Recipe, base_dir: str | Path | None = None):
    """(train, validation, LoadReport) token datasets for `tailor train` from prepared data, or None.

    Used when data.sources is set (prepared on the fly, cached) or data.train names one prepared
    directory. sft keeps conversations (rows with masked tokens); pretrain uses every row's tokens.
    """
    from datasets import Dataset

    from tailor.data.loading import LoadReport

    d = recipe.data
    if d.sources and not d.train:
        prepared = run(recipe, base_dir=base_dir)
    elif len(d.train) == 1 and is_prepared_dir(d.train[0]):
        prepared = open_prepared(d.train[0])
    else:
        return None
    where = str(prepared.path)
    tok = recipe.model.tokenizer or recipe.model.path
    if prepared.manifest.get("tokenizer") is None:
        raise TailorError("the prepared dataset was not tokenized (no tokenizer was configured)", where=where,
                          fix="prepare it again with model.tokenizer (or model.path) set")
    if tok and Path(tok).resolve() != Path(prepared.manifest["tokenizer"]):
        raise TailorError(f"the dataset was tokenized with {prepared.manifest['tokenizer']}, but this run uses {Path(tok).resolve()}",
                          where=where, fix="prepare the data with the same tokenizer (model.tokenizer / model.path)")
    if prepared.manifest.get("max_length") != d.max_length:
        raise TailorError(f"the dataset was prepared with data.max_length={prepared.manifest.get('max_length')}, this run uses {d.max_length}",
                          where=where, fix="use the same data.max_length, or prepare again with the new value")
    report = LoadReport()

    def pick(split: str):
        ds = prepared.tokenized(split)
        if ds is None:
            return None
        ds = ds.remove_columns([c for c in ds.column_names if c not in ("input_ids", "labels")])
        report.read += len(ds)
        if recipe.train.objective == "sft":
            keep = [i for i, labels in enumerate(ds["labels"]) if -100 in labels]
            for _ in range(len(ds) - len(keep)):
                report.skip("raw text row in an sft run (needs a conversation)", f"{where} {split}")
            ds = ds.select(keep)
        else:
            blocks = _blocks(ds["input_ids"], d.max_length, d.packing is not False)
            ds = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
        report.kept += len(ds)
        return ds if len(ds) else None

    train = pick("train")
    if train is None:
        raise TailorError(f"the prepared dataset has no usable {recipe.train.objective} rows in its train split", where=where,
                          fix="check `tailor data inspect` on it; sft needs conversations, pretrain any text")
    val = pick("eval")
    return train, val, report


def _blocks(docs: list[list[int]], size: int, concatenate: bool) -> list[list[int]]:
    """Pretraining blocks: documents concatenated and cut into `size` tokens, or each document cut alone."""
    if concatenate:
        stream = [t for ids in docs for t in ids]
        return [stream[i:i + size] for i in range(0, len(stream) - size + 1, size)] or [stream]
    return [ids[i:i + size] for ids in docs for i in range(0, len(ids), size)]
