"""Read the files users have into canonical records (shapes in `tailor.data.records`).

Inputs: .jsonl, .json, .csv, .parquet, .txt files, documents (.pdf, .docx, .html/.htm, .md and images read
by OCR: `tailor.data.documents`, rows of text chunks or QA pairs with `page` and `section`), a folder (its supported files, sorted, not
recursive; a LLaMA-Factory `dataset_info.json` in it is registry metadata and is not read as rows),
a glob (`data/**/*.jsonl`), a saved `datasets` directory (`save_to_disk`), or an entry of a
LLaMA-Factory `dataset_info.json` (see `tailor.data.registry`). JSONL, CSV, Parquet, .txt and saved
datasets stream with bounded memory; a .json file is one JSON document and is parsed whole.

Formats, detected per row when format=auto: OpenAI `messages`; sharegpt `conversations`
(from/value, roles human/gpt/system/function_call/observation: a function call becomes an assistant
turn whose content is the call, an observation becomes a `tool` turn); alpaca
(instruction/input/output, optional system and history [[q, a], ...]); preference pairs
(prompt/chosen/rejected, sharegpt or alpaca ranking shapes); classification (text + label); text.

A `tools` column (sharegpt, or OpenAI `tools`) is added to the system message as
"Tools you can call (JSON):\\n<tools>", so the model sees the tool definitions it is trained to call.

`columns` maps canonical fields to the file's columns ({output: answer}); mapping a field to "" means
"this file has no such field" (a column of that name is then kept in meta, not read). Every row read
is either yielded or, with on_error="skip", counted under a short reason; the row's other columns
are kept in the record's `meta`.
"""

from __future__ import annotations

import csv
import difflib
import glob as _glob
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tailor.config import SourceConfig
from tailor.data.formats import FIELDS, TAG_DEFAULTS, _Bad, _meta, _RowError, convert_row
from tailor.data.images import ImageError, check_images
from tailor.data.records import StepReport
from tailor.errors import TailorError

from tailor.data.documents import SUPPORTED as DOCUMENTS, Unreadable, document_rows, is_document

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet", ".txt") + DOCUMENTS
LEGACY_KEYS = ("answer", "fact_id", "lang", "label")  # kept on chat records by the old `load_records` API
_SKIP_HINT = "fix the row, or set data.on_error=skip to count and skip such rows"


# ---------------------------------------------------------------------------------------------
# Which files a source reads


def _resolve(path: str | Path, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return Path(base_dir) / p if base_dir is not None and not p.is_absolute() else p


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                      and (path / "dataset_info.json").is_file())


def _is_data_file(f: Path) -> bool:
    # dataset_info.json is a LLaMA-Factory registry or a saved dataset's metadata, never rows; a README
    # describes the folder (a data set's card), it is not one of its documents
    return (f.is_file() and f.suffix.lower() in SUPPORTED and not f.name.startswith(".")
            and f.name != "dataset_info.json" and f.stem.upper() != "README" and not is_saved_dataset(f.parent))


def source_files(path: str | Path, base_dir: Path | None = None) -> list[Path]:
    """The files (or saved `datasets` folders) a path, folder or glob names, in reading order."""
    p = _resolve(path, base_dir)
    if any(c in str(p) for c in "*?["):
        found = [Path(m) for m in sorted(_glob.glob(str(p), recursive=True))]
        found = [m for m in found if _is_data_file(m) or is_saved_dataset(m)]
        if not found:
            raise TailorError(f"no data files match {p}", fix=f"check the pattern; readable types: {', '.join(SUPPORTED)}")
        return found
    if p.is_dir():
        if is_saved_dataset(p):
            return [p]
        found = sorted(f for f in p.iterdir() if _is_data_file(f))
        if not found:
            raise TailorError(f"no data files in folder {p}", fix=f"put {', '.join(SUPPORTED)} files in it, or point at the files")
        return found
    if not p.is_file():
        raise TailorError(f"data file not found: {p}", fix="check the path (relative paths resolve against the recipe's folder)")
    if p.suffix.lower() not in SUPPORTED:
        raise TailorError(f"unsupported data file type '{p.suffix}'", where=str(p), fix=f"use one of {', '.join(SUPPORTED)}")
    return [p]


# ---------------------------------------------------------------------------------------------
# Readers: (row, where) pairs; a row is a dict, another JSON value, or _Bad


def _read_jsonl(path: Path) -> Iterator[tuple[object, str]]:
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line), f"{path}:{n}"
            except json.JSONDecodeError as exc:
                yield _Bad("invalid JSON", f"'{exc.msg}' at column {exc.colno}"), f"{path}:{n}"


def _read_json(path: Path, record_keys: set[str]) -> Iterator[tuple[object, str]]:
    """A JSON array of rows, or an object holding one array (parsed whole: JSON has no row boundaries)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise TailorError(f"not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}:{exc.colno}",
                          fix="fix the JSON, or use .jsonl with one record per line") from None
    if isinstance(data, dict) and not record_keys & set(data):
        arrays = [k for k, v in data.items() if isinstance(v, list)]
        if len(arrays) > 1:
            raise TailorError(f"the JSON object holds several arrays ({', '.join(arrays)}); which are the rows is unclear",
                              where=str(path), fix="keep only the array of rows, or save the rows as .jsonl")
        data = data[arrays[0]] if arrays else [data]
    for n, row in enumerate(data if isinstance(data, list) else [data]):
        yield row, f"{path}[{n}]"


def _check_columns(have: list[str], mapped: set[str], where: str) -> None:
    missing = sorted(c for c in mapped if c not in have)
    if missing:
        raise TailorError(f"column {', '.join(repr(c) for c in missing)} named in `columns` is not in the file "
                          f"(it has: {', '.join(have)[:200]})", where=where, fix="correct the column name in the source's `columns`")


def _read_csv(path: Path, mapped: set[str]) -> Iterator[tuple[object, str]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # documents longer than the 128 KiB default exist
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                return
            _check_columns(header, mapped, f"{path}:1")
            start = reader.line_num + 1
            for cells in reader:
                where, start = f"{path}:{start}", reader.line_num + 1
                if not cells:  # a blank line
                    continue
                if len(cells) != len(header):
                    yield _Bad("wrong number of CSV fields", f"{len(cells)} fields, the header {len(header)}"), where
                else:
                    yield dict(zip(header, cells)), where
        except csv.Error as exc:
            raise TailorError(f"malformed CSV: {exc}", where=f"{path}:{reader.line_num}",
                              fix="check the quoting on that line (fields with commas or newlines need double quotes)") from None


def _read_parquet(path: Path, mapped: set[str]) -> Iterator[tuple[object, str]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    _check_columns(pf.schema_arrow.names, mapped, str(path))
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield row, f"{path}[{n}]"
            n += 1


def _read_saved(path: Path, mapped: set[str]) -> Iterator[tuple[object, str]]:
    """Rows of a saved Dataset or DatasetDict (every split in order), read in memory-mapped batches."""
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(str(path))
    parts = loaded.items() if isinstance(loaded, DatasetDict) else [(None, loaded)]
    for split, ds in parts:
        _check_columns(ds.column_names, mapped, str(path))
        prefix = f"{path}[{split}]" if split else str(path)
        n = 0
        for batch in ds.with_format(None).iter(batch_size=512):
            for j in range(len(next(iter(batch.values()), []))):
                yield {k: v[j] for k, v in batch.items()}, f"{prefix}[{n}]"
                n += 1


def _read_txt(path: Path, text_per: str) -> Iterator[tuple[object, str]]:
    if text_per == "file":
        yield {"text": path.read_text(encoding="utf-8-sig")}, str(path)
        return
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield {"text": line.rstrip("\r\n")}, f"{path}:{n}"


def _rows(path: Path, text_per: str = "line", mapped: set[str] = frozenset(),
          record_keys: set[str] = frozenset()) -> Iterator[tuple[object, str]]:
    suffix = path.suffix.lower()
    if path.is_file() and is_document(path):  # data.train files: default document settings (text chunks)
        from tailor.config.documents import DocumentConfig

        yield from document_rows(path, DocumentConfig(), {})
        return
    try:
        if path.is_dir():
            yield from _read_saved(path, mapped)
        elif suffix == ".jsonl":
            yield from _read_jsonl(path)
        elif suffix == ".json":
            yield from _read_json(path, record_keys)
        elif suffix == ".csv":
            yield from _read_csv(path, mapped)
        elif suffix == ".parquet":
            yield from _read_parquet(path, mapped)
        else:
            yield from _read_txt(path, text_per)
    except UnicodeDecodeError as exc:
        raise TailorError(f"{path} is not UTF-8 text (byte {exc.start})", fix="re-save the file as UTF-8") from None


def _validate(src: SourceConfig, on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    for kind, keys, valid in (("columns", src.columns, FIELDS), ("tags", src.tags, tuple(TAG_DEFAULTS))):
        for k in keys:
            if k not in valid:
                near = difflib.get_close_matches(k, valid, n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                raise TailorError(f"unknown {kind} key '{k}'", where=f"data.sources[].{kind}",
                                  fix=f"{hint}valid keys: {', '.join(valid)}")


def iter_source(src: SourceConfig, on_error: str, report: StepReport, base_dir: Path | None = None,
                tokenizer=None, teacher=None) -> Iterator[dict]:
    """Stream canonical records from one source, each with `where`, `source`, `meta` and `origin`.

    report.n_in counts every row read and report.n_out every record yielded. A malformed row raises
    a TailorError naming file, line or row, and field (on_error="raise"), or is counted under a short
    reason in `report` (on_error="skip"). `src.max_rows` caps the rows read. Relative paths resolve
    against `base_dir`. With `src.registry`, the entry is resolved by `tailor.data.registry`; the
    source's own format, columns and tags override the entry's. Documents are read by
    `tailor.data.documents` (chunks measured with `tokenizer` when given; `teacher` writes QA pairs for
    sources with document.teacher); their statistics go to
    `report.extra["documents"]`, and an unreadable one (encrypted, damaged) counts as one dropped row with
    on_error="skip".
    """
    name = src.name
    if src.registry:
        from tailor.data.registry import resolve_registry

        entry = resolve_registry(_resolve(src.registry, base_dir), src.name)
        src = entry.model_copy(update={
            "format": src.format if src.format != "auto" else entry.format, "columns": {**entry.columns, **src.columns},
            "tags": {**entry.tags, **src.tags}, "text_per": src.text_per, "split": src.split, "document": src.document,
            "max_rows": min(filter(None, (src.max_rows, entry.max_rows)), default=None)})
    _validate(src, on_error)
    mapped = {c for c in src.columns.values() if c}
    record_keys = mapped | set(FIELDS) | {"conversations"}
    read = 0
    for path in source_files(src.path, base_dir):
        is_txt = path.is_file() and path.suffix.lower() == ".txt"
        if is_txt and src.format not in ("auto", "text"):
            raise TailorError(f".txt files hold plain text, not '{src.format}' rows", where=str(path),
                              fix="use format: text (or auto) for .txt sources, or convert the file to .jsonl")
        fmt, cols = ("text", {}) if is_txt else (src.format, src.columns)
        short = name or (path.stem if path.is_file() else path.name)
        if path.is_file() and is_document(path):
            fmt, cols, short = "auto", {}, name or path.name
            rows = _document_rows(path, src, on_error, report, tokenizer, teacher)
        else:
            rows = _rows(path, src.text_per, mapped, record_keys)
        for row, where in rows:
            read += 1
            report.n_in += 1
            try:
                rec, used = convert_row(row, fmt, cols, src.tags)
                if "images" in rec:
                    check_images(rec, path.parent if path.is_file() else path)
            except _RowError as e:
                if on_error == "raise":
                    at = f"{where}, field '{e.column}'" if e.column else where
                    fix = f"{e.fix}; {_SKIP_HINT}" if e.fix else _SKIP_HINT
                    raise TailorError(f"unusable row: {e.reason}", where=at, fix=fix) from None
                report.drop(e.reason, where)
            except ImageError as e:  # the file and the row are both named
                if on_error == "raise":
                    raise TailorError(f"unusable row: {e.reason} ({e.image})", where=f"{where}, field 'images'",
                                      fix=f"{e.fix}; {_SKIP_HINT}") from None
                report.drop(e.reason, f"{where} ({e.image})")
            else:
                rec.update(meta=_meta(row, used), where=where, source=short, origin="original")
                report.n_out += 1
                yield rec
            if src.max_rows and read >= src.max_rows:
                return


def _document_rows(path: Path, src: SourceConfig, on_error: str, report: StepReport, tokenizer,
                   teacher) -> Iterator[tuple[object, str]]:
    try:
        yield from document_rows(path, src.document, report.extra.setdefault("documents", {}), tokenizer, teacher)
    except Unreadable as exc:
        if on_error == "raise":
            raise
        report.n_in += 1  # the file stands for one row: it is accounted as dropped
        report.drop(f"unreadable document: {exc.what}", str(path))


# ---------------------------------------------------------------------------------------------
# The older list-based API (training, evaluation)


@dataclass
class LoadReport:
    """What happened to every row: how many were kept and why the others were skipped."""

    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # reason -> first place it happened

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)

    def summary(self) -> str:
        parts = [f"{self.read} rows read, {self.kept} kept"]
        parts += [f"{n} skipped: {r} (first at {self.examples[r]})" for r, n in self.skipped.most_common()]
        return "; ".join(parts)


def iter_rows(path: Path) -> Iterator[tuple[object, str]]:
    """Yield (row, 'file:line' or 'file[row]') from one supported file, folder or saved dataset."""
    for p in source_files(path):
        yield from _rows(p, record_keys=set(FIELDS) | {"conversations"})


def _legacy(rec: dict, meta: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("meta", "where", "source", "origin")}
    if "messages" in out:
        out.update({k: meta[k] for k in LEGACY_KEYS if k in meta})
    return out


def to_record(row: object, fmt: str = "auto", text_field: str = "text") -> dict | str:
    """Canonical record, or a string saying why the row cannot be used."""
    try:
        rec, used = convert_row(row, fmt, {"text": text_field} if text_field != "text" else {})
    except _RowError as e:
        return e.reason
    return _legacy(rec, _meta(row, used))


def iter_files(paths: list[str | Path], fmt: str, text_field: str, report: LoadReport,
               on_error: str = "skip") -> Iterator[dict]:
    """Canonical records (with their "where") of every data file in `paths`; rows that cannot be used are counted
    in `report` under their reason (or stop the run with on_error="raise"). The caller counts what it keeps."""
    for p in paths:
        if Path(p).is_dir():  # in data.train a folder means a prepared dataset, which training opens itself
            raise TailorError(f"{p} is a folder, not a data file", where="data.train / data.eval / eval.data",
                              fix="list its files (a glob works: folder/*.jsonl), or prepare it with `tailor data prepare`")
        src = SourceConfig(path=str(p), format=fmt, columns={"text": text_field} if text_field != "text" else {})
        step = StepReport("load")
        yield from iter_source(src, on_error, step)
        report.read += step.n_in
        for reason, n in step.dropped.items():
            report.skipped[reason] += n
            report.examples.setdefault(reason, step.examples.get(reason, str(p)))


def load_records(paths: list[str | Path], fmt: str = "auto", text_field: str = "text",
                 report: LoadReport | None = None) -> list[dict]:
    """Read every file (or glob); return canonical chat/text records and fill `report` with what was skipped and why.

    Preference pairs are counted and skipped: the trainers behind this API take chat or text.
    """
    report = report if report is not None else LoadReport()
    records: list[dict] = []
    for rec in iter_files(paths, fmt, text_field, report):
        if "prompt" in rec and "chosen" in rec:
            report.skip("preference pair (train/eval take chat or text rows)", rec["where"])
            continue
        records.append(_legacy(rec, rec["meta"]))
        report.kept += 1
    return records


def require_rows(records: list, report: LoadReport, paths: list, what: str) -> None:
    """A dataset with no usable rows is an error that says why the rows were rejected."""
    if records:
        return
    reasons = "; ".join(f"{n}x {r} (e.g. {report.examples[r]})" for r, n in report.skipped.most_common(3)) or "the files are empty"
    raise TailorError(f"no usable {what} rows in {', '.join(map(str, paths)) or '(no files given)'}: {reasons}",
                      fix="check the file format (chat `messages`, alpaca, sharegpt or `text`) and data.format")
