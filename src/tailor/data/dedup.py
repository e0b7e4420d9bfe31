"""De-duplication: exact (hash of the normalized text) and near (MinHash LSH), within a stream and across splits.

Exact: the 64-bit xxh3 hash of the record kind and its texts, each folded by `normalize_for_hash`
(case, NFKC, whitespace, punctuation), so "Hello, World!" and "hello world" are twins.

Near: datasketch `MinHashLSH` over MinHash signatures of character n-gram shingles
(`dedup.ngram`, so Chinese works without word segmentation) of the same normalized text. The
signatures are computed in numpy for a batch of rows at once, with datasketch's own permutations
and its "affine32" scheme, so they equal `MinHash(num_perm, seed=1).update_batch(...)` of our
shingle hashes, at a fraction of the cost of per-shingle updates. LSH candidates are confirmed by
the estimated Jaccard similarity (share of equal signature slots) >= `dedup.threshold`; rows of
different kinds (chat, text, ...) are never twins.

The first occurrence is kept; every dropped row is counted under a reason with its place and,
where cheap, the place of the row it duplicates.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Iterator

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

from tailor.config import DedupConfig
from tailor.data.records import PrepareReport, StepReport, iter_texts, record_kind

SEED = 1
_BATCH_ROWS = 128          # rows whose signatures are computed together
_BATCH_CHARS = 200_000     # ... or fewer when they are long
_BLOCK = 16_384            # shingles per numpy block (bounds memory for very long documents)
_ROLL = np.uint64(0x9E3779B97F4A7C15)
# Kept by the normalization besides letters and digits, because they change meaning ("C#" is not
# "C", "50%" not "50", "1+1" not "11"): these ASCII characters, a few common symbols and emoji.
_KEPT_ASCII = "#%&@*/\\+=<>^`|~$"
_ASCII_DROP = bytes(c for c in range(128) if not chr(c).isalnum() and chr(c) not in _KEPT_ASCII)
_DROP = re.compile(r"[^\w" + re.escape(_KEPT_ASCII) + "¥€£©®°±×÷\u2600-\u27bf\U0001F000-\U0001FAFF]+")


# Full-width punctuation and spaces that NFKC maps to characters dropped anyway: removing them first
# leaves most Chinese text already NFKC, which saves the normalize call (same result either way).
_FULLWIDTH_DROPPED = re.compile("[" + "".join(
    re.escape(c) for c in map(chr, [*range(0xFF01, 0xFF61), *range(0xFFE0, 0xFFE7), 0x2026, 0x3000])
    if _DROP.fullmatch(unicodedata.normalize("NFKC", c))) + "]+")


def normalize_for_hash(text: str) -> str:
    """Fold a text for duplicate detection: casefold, NFKC, drop whitespace, punctuation and invisible characters.

    Kept: letters, digits, # % & @ * / \\ + = < > ^ ` | ~ $ ¥ € £ © ® ° ± × ÷ and emoji, which change
    meaning; other symbols go with the punctuation. A text made only of dropped characters
    ("???") keeps its casefolded form, so that it does not collide with an empty one.
    """
    if text.isascii():
        folded = text.lower()
        out = folded.encode().translate(None, _ASCII_DROP).decode()
    else:
        folded = text.casefold()
        norm = folded
        if not unicodedata.is_normalized("NFKC", folded):
            reduced = _FULLWIDTH_DROPPED.sub("", folded)
            norm = reduced if unicodedata.is_normalized("NFKC", reduced) else unicodedata.normalize("NFKC", folded)
        out = _DROP.sub("", norm).replace("_", "")
        if not out:
            folded = unicodedata.normalize("NFKC", folded)
    return out if out or not folded.strip() else folded.strip()


def _norms(rec: dict) -> list[str]:
    return [normalize_for_hash(t) for t in iter_texts(rec) if t.__class__ is str]


def exact_key(rec: dict, norms: list[str] | None = None) -> int:
    """The 64-bit exact-duplicate key of a record: its kind and its normalized texts."""
    norms = _norms(rec) if norms is None else norms
    return xxhash.xxh3_64_intdigest((record_kind(rec) + "\x00" + "\x00".join(norms)).encode("utf-8", "surrogatepass"))


def _fmix32(h: np.ndarray) -> np.ndarray:
    # MurmurHash3's finalizer, as datasketch applies it before its affine32 permutations.
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def shingle_hashes(docs: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every character n-gram of each (non-empty) doc, concatenated, and the count per doc.

    A doc shorter than `ngram` is one shingle (itself, padded). Computed as a rolling polynomial
    hash over the code points of all docs at once.
    """
    pad = "\x00" * (ngram - 1)
    cps = np.frombuffer((pad.join(docs) + pad).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    lens = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    starts = np.zeros(len(docs), dtype=np.int64)
    np.cumsum(lens[:-1] + ngram - 1, out=starts[1:])
    counts = np.maximum(lens - ngram + 1, 1)
    m = len(cps) - ngram + 1
    h = cps[:m].copy()
    for j in range(1, ngram):
        h *= _ROLL
        h += cps[j:j + m]
    first = np.cumsum(counts) - counts
    idx = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - first, counts)
    h = h[idx]
    return (h ^ (h >> np.uint64(32))).astype(np.uint32), counts


class _Signer:
    """MinHash signatures of many docs at once, with datasketch's permutations (affine32 scheme)."""

    def __init__(self, num_perm: int, ngram: int):
        self.num_perm, self.ngram = num_perm, ngram
        a, b = MinHash(num_perm=num_perm, seed=SEED).permutations
        self.a, self.b = a.astype(np.uint32), b.astype(np.uint32)

    def __call__(self, docs: list[str]) -> np.ndarray:
        """(len(docs), num_perm) uint32 signatures of non-empty docs."""
        hv, counts = shingle_hashes(docs, self.ngram)
        hv = _fmix32(hv)
        sig = np.full((len(docs), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        doc_of = np.repeat(np.arange(len(docs)), counts)
        b = self.b[:, None]
        for s in range(0, len(hv), _BLOCK):
            # (num_perm, shingles): the min runs along contiguous memory, ~10x faster than the transpose.
            block = np.multiply.outer(self.a, hv[s:s + _BLOCK])
            block += b
            d = doc_of[s:s + _BLOCK]
            seg = np.concatenate(([0], np.flatnonzero(d[1:] != d[:-1]) + 1))
            ids = d[seg]
            sig[ids] = np.minimum(sig[ids], np.minimum.reduceat(block, seg, axis=1).T)
        return sig


class _NearIndex:
    """Signatures kept so far, per record kind, in MinHash LSH; `find` confirms candidates by estimated Jaccard."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.lsh: dict[str, MinHashLSH] = {}
        self.sigs: list[np.ndarray] = []
        self.labels: list[str | None] = []

    def find(self, kind: str, sig: np.ndarray) -> tuple[LeanMinHash, int | None]:
        mh = LeanMinHash(seed=SEED, hashvalues=sig, scheme="affine32")
        lsh = self.lsh.get(kind)
        if lsh is None:
            return mh, None
        need = self.cfg.threshold * len(sig)
        best, best_eq = None, -1
        for key in lsh.query(mh):
            eq = int(np.count_nonzero(self.sigs[key] == sig))
            if eq >= need and eq > best_eq:
                best, best_eq = key, eq
        return mh, best

    def add(self, kind: str, mh: LeanMinHash, label: str | None) -> None:
        lsh = self.lsh.get(kind)
        if lsh is None:
            lsh = self.lsh[kind] = MinHashLSH(threshold=self.cfg.threshold, num_perm=self.cfg.num_perm)
        key = len(self.sigs)
        self.sigs.append(mh.hashvalues)
        self.labels.append(label)
        lsh.insert(key, mh, check_duplication=False)


def _batches(items: Iterable, doc_of) -> Iterator[list]:
    """Groups of items small enough to sign together (by rows and by characters)."""
    batch, chars = [], 0
    for item in items:
        batch.append(item)
        chars += len(doc_of(item))
        if len(batch) >= _BATCH_ROWS or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _twin(where: str | None, twin: str | None) -> str | None:
    if twin is None:
        return where
    return f"{where or '?'} (twin of {twin})"


def resolved(cfg: DedupConfig, default: bool = True) -> DedupConfig:
    """`cfg` with exact/near left unset (None) turned on (default=True: data.sources) or off (data.train files)."""
    return cfg.model_copy(update={"exact": default if cfg.exact is None else cfg.exact,
                                  "near": default if cfg.near is None else cfg.near})


def dedup_records(records: Iterable[dict], cfg: DedupConfig, report: PrepareReport) -> Iterator[dict]:
    """Drop exact (cfg.exact) and near (cfg.near) duplicates from a stream, keeping first occurrences.

    Lazy; reports "dedup.exact" and "dedup.near" (each only when enabled) are created at call time.
    Rows whose normalized text is empty have no shingles and are never near twins.
    """
    cfg = resolved(cfg)
    exact = report.step("dedup.exact") if cfg.exact else None
    near = report.step("dedup.near") if cfg.near else None
    return _dedup(records, cfg, exact, near)


def _dedup(records: Iterable[dict], cfg: DedupConfig, exact: StepReport | None,
           near: StepReport | None) -> Iterator[dict]:
    def exact_pass() -> Iterator[tuple[dict, str, str]]:
        seen: set[int] = set()
        first: dict[int, str | None] | None = {}   # key -> where, until the first drop is recorded
        for rec in records:
            norms = _norms(rec)
            kind = record_kind(rec)
            if exact is not None:
                exact.n_in += 1
                key = xxhash.xxh3_64_intdigest((kind + "\x00" + "\x00".join(norms)).encode("utf-8", "surrogatepass"))
                if key in seen:
                    exact.drop("exact duplicate", _twin(rec.get("where"), first.get(key) if first else None))
                    first = None
                    continue
                seen.add(key)
                if first is not None:
                    first[key] = rec.get("where")
                exact.n_out += 1
            yield rec, kind, "".join(norms)

    if near is None:
        for rec, _, _ in exact_pass():
            yield rec
        return
    signer = _Signer(cfg.num_perm, cfg.ngram)
    index = _NearIndex(cfg)
    reason = f"near duplicate (Jaccard >= {cfg.threshold:g})"
    for batch in _batches(exact_pass(), lambda item: item[2]):
        docs = [doc for _, _, doc in batch if doc]
        sigs = iter(signer(docs)) if docs else iter(())
        for rec, kind, doc in batch:
            near.n_in += 1
            if doc:
                mh, twin = index.find(kind, next(sigs))
                if twin is not None:
                    near.drop(reason, _twin(rec.get("where"), index.labels[twin]))
                    continue
                # The kept row's place is only needed for the first example of the report.
                index.add(kind, mh, None if near.dropped else rec.get("where"))
            near.n_out += 1
            yield rec


_HELD_OUT_ORDER = ("eval", "validation", "valid", "dev", "test")


def drop_cross_split_twins(splits: dict[str, list[dict]], cfg: DedupConfig,
                           report: PrepareReport) -> dict[str, list[dict]]:
    """Drop held-out rows that have an exact or near twin in an earlier split; `train` is never changed.

    Splits are checked in the order train, eval (validation/valid/dev), test, then any others: each
    split's rows are compared with every row of the splits before it (so a test row twinned in
    train *or* eval is dropped) and its surviving rows join the reference. Exact twins are always
    checked, near twins when cfg.near. With cfg.across_splits off the splits come back unchanged.
    Report: "dedup.across_splits" with reasons like "near twin in train".
    """
    cfg = resolved(cfg)
    if not cfg.across_splits:
        return dict(splits)
    rep = report.step("dedup.across_splits")
    names = [n for n in splits if n != "train"]
    names.sort(key=lambda n: (_HELD_OUT_ORDER.index(n) if n in _HELD_OUT_ORDER else len(_HELD_OUT_ORDER),
                              list(splits).index(n)))
    keys: dict[int, str] = {}
    index = _NearIndex(cfg) if cfg.near else None
    signer = _Signer(cfg.num_perm, cfg.ngram) if cfg.near else None
    out = dict(splits)

    def rows_with_sigs(rows: list[dict]) -> Iterator[tuple[dict, int, str, np.ndarray | None]]:
        prepared = ((rec, _norms(rec)) for rec in rows)
        for batch in _batches(prepared, lambda item: item[1]):
            docs = ["".join(norms) for _, norms in batch]
            sigs = iter(signer([d for d in docs if d])) if signer and any(docs) else iter(())
            for (rec, norms), doc in zip(batch, docs):
                yield rec, exact_key(rec, norms), record_kind(rec), (next(sigs) if signer and doc else None)

    def remember(rows_sigs: Iterable, name: str) -> None:
        for rec, key, kind, sig in rows_sigs:
            keys.setdefault(key, name)
            if sig is not None:
                index.add(kind, LeanMinHash(seed=SEED, hashvalues=sig, scheme="affine32"), name)

    remember(rows_with_sigs(splits.get("train") or []), "train")
    for name in names:
        kept = []
        for rec, key, kind, sig in rows_with_sigs(splits[name]):
            rep.n_in += 1
            if key in keys:
                rep.drop(f"exact twin in {keys[key]}", rec.get("where"))
                continue
            if sig is not None:
                _, twin = index.find(kind, sig)
                if twin is not None:
                    rep.drop(f"near twin in {index.labels[twin]}", rec.get("where"))
                    continue
            rep.n_out += 1
            kept.append((rec, key, kind, sig))
        out[name] = [rec for rec, *_ in kept]
        remember(kept, name)
    return out
