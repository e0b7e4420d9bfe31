"""Split records into train / eval / test: random, stratified, by group, or by time.

Sizes: `split.eval` and `split.test` are each a share of the rows (< 1, rounded to the nearest row,
at least one) or a row count (>= 1). Train gets the rest and must keep at least one row.

Modes (at most one, see `SplitConfig`):

- plain: a seeded shuffle picks the test rows, then the eval rows.
- `stratify_by`: each class gets eval/test rows in proportion to its size (largest-remainder
  allocation, so totals are exact), and a class with at least two rows keeps one in train and,
  rows permitting, gives one to eval and then one to test; rows inside a class are drawn seeded.
- `group_by`: rows sharing a value stay together. Groups, in a seeded order, fill test and then eval
  while they fit the target row count; a split that no group fits gets the smallest group instead.
- `time_column`: rows are ordered by time (ISO 8601 strings, dates or numbers) and cut so that
  train is strictly before eval, which is strictly before test. Rows tied at a cut all move to the
  later split, so eval/test can be a little larger than asked.

Within a split, rows keep their input order (time order in time mode). Every row ends in a split;
a row without the field a mode needs is an error naming the row, not a silent drop.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import random

from tailor.config import SplitConfig
from tailor.data.records import PrepareReport, field_value
from tailor.errors import TailorError

SPLITS = ("train", "eval", "test")


def split_records(records: list[dict], cfg: SplitConfig, report: PrepareReport) -> dict[str, list[dict]]:
    """{"train": [...], "eval": [...], "test": [...]} by `cfg` (empty lists when a split is not asked for)."""
    step = report.step("split")
    step.n_in = step.n_out = len(records)
    n_eval, n_test = split_sizes(len(records), cfg)
    if not n_eval and not n_test:
        return {"train": list(records), "eval": [], "test": []}
    rng = random.Random(cfg.seed)
    if cfg.time_column:
        assign = _by_time(records, cfg.time_column, n_eval, n_test)
    elif cfg.group_by:
        assign = _by_group(records, cfg.group_by, n_eval, n_test, rng)
    elif cfg.stratify_by:
        assign = _stratified(records, cfg.stratify_by, n_eval, n_test, rng)
    else:
        order = list(range(len(records)))
        rng.shuffle(order)
        assign = {"test": sorted(order[:n_test]), "eval": sorted(order[n_test:n_test + n_eval])}
        taken = set(assign["test"]) | set(assign["eval"])
        assign["train"] = [i for i in range(len(records)) if i not in taken]
    out = {s: [records[i] for i in assign.get(s, [])] for s in SPLITS}
    for s, n in (("eval", n_eval), ("test", n_test)):
        if n and not out[s]:
            raise TailorError(f"the {s} split would be empty", where=f"data.split.{s}",
                              fix=f"raise data.split.{s} or use a split mode with smaller units")
    return out


def split_sizes(n: int, cfg: SplitConfig) -> tuple[int, int]:
    """Rows asked for eval and test out of n, checked so that train keeps at least one row."""
    shares = [v for v in (cfg.eval, cfg.test) if 0 < v < 1]
    if sum(shares) >= 1:
        raise TailorError(f"split shares add up to {sum(shares):g}, leaving nothing to train on", where="data.split",
                          fix="make data.split.eval + data.split.test less than 1 (e.g. 0.1 and 0.1)")
    sizes = []
    for name, v in (("eval", cfg.eval), ("test", cfg.test)):
        if v >= 1 and v != int(v):
            raise TailorError(f"data.split.{name}={v:g} is neither a share (< 1) nor a whole row count",
                              where=f"data.split.{name}", fix=f"use e.g. {name}=0.1 (a share) or {name}={int(v)} (rows)")
        sizes.append(int(v) if v >= 1 else (max(1, int(v * n + 0.5)) if v > 0 else 0))
    if (sizes[0] or sizes[1]) and sum(sizes) >= n:
        raise TailorError(f"eval ({sizes[0]}) + test ({sizes[1]}) rows leave none of the {n} rows to train on",
                          where="data.split", fix="lower data.split.eval / data.split.test or add data")
    return sizes[0], sizes[1]


def _values(records: list[dict], key: str, mode: str) -> list:
    out = []
    for r in records:
        v = field_value(r, key)
        if v is None:
            raise TailorError(f"row has no '{key}' field, which data.split.{mode} needs", where=r.get("where", "?"),
                              fix=f"give every row a '{key}' value (a column of the source), or drop data.split.{mode}")
        out.append(v)
    return out


def _key(v) -> str:
    """A hashable, type-aware class/group key (1 and "1" stay different; lists and dicts work)."""
    return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)


def _stratified(records: list[dict], field: str, n_eval: int, n_test: int, rng: random.Random) -> dict:
    classes: dict[str, list[int]] = {}
    for i, v in enumerate(_values(records, field, "stratify_by")):
        classes.setdefault(_key(v), []).append(i)
    n = len(records)
    left = {c: len(rows) for c, rows in classes.items()}
    wanted = [(s, t) for s, t in (("eval", n_eval), ("test", n_test)) if t]
    alloc: dict[str, dict[str, int]] = {}
    for k, (split, target) in enumerate(wanted):
        # one row in train first, then one per requested split in order: train > eval > test
        minimum = {c: 1 if len(rows) >= k + 2 else 0 for c, rows in classes.items()}
        ideal = {c: len(rows) * target / n for c, rows in classes.items()}
        alloc[split] = _apportion(target, ideal, minimum, left)
        for c in classes:
            left[c] -= alloc[split][c]
    out: dict[str, list[int]] = {"train": [], "eval": [], "test": []}
    for c, rows in classes.items():
        rows = rows[:]
        rng.shuffle(rows)
        a = alloc.get("eval", {}).get(c, 0)
        b = a + alloc.get("test", {}).get(c, 0)
        out["eval"] += rows[:a]
        out["test"] += rows[a:b]
        out["train"] += rows[b:]
    return {s: sorted(v) for s, v in out.items()}


def _apportion(target: int, ideal: dict[str, float], minimum: dict[str, int], left: dict[str, int]) -> dict[str, int]:
    """Exactly `target` rows over classes: minimums first (largest classes first), then the largest shortfall.

    A class keeps one row back (for train) while any other class can still give; ties go to the
    class seen first, so the result depends only on the data.
    """
    order = {c: i for i, c in enumerate(ideal)}
    alloc = {c: 0 for c in ideal}
    spare = {c: max(0, left[c] - 1) for c in ideal}
    total = 0
    for c in sorted(ideal, key=lambda c: (-ideal[c], order[c])):
        if total < target and minimum[c] and spare[c]:
            alloc[c] = 1
            total += 1
    for cap in (spare, left):
        heap = [(-(ideal[c] - alloc[c]), order[c], c) for c in ideal if alloc[c] < cap[c]]
        heapq.heapify(heap)
        while total < target and heap:
            _, _, c = heapq.heappop(heap)
            alloc[c] += 1
            total += 1
            if alloc[c] < cap[c]:
                heapq.heappush(heap, (-(ideal[c] - alloc[c]), order[c], c))
    return alloc


def _by_group(records: list[dict], field: str, n_eval: int, n_test: int, rng: random.Random) -> dict:
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(_values(records, field, "group_by")):
        groups.setdefault(_key(v), []).append(i)
    if len(groups) < 1 + bool(n_eval) + bool(n_test):
        raise TailorError(f"'{field}' has {len(groups)} distinct value(s), too few for train, eval and test groups",
                          where="data.split.group_by", fix="group by a finer field, or ask for fewer splits")
    free = list(groups)
    rng.shuffle(free)
    out: dict[str, list[int]] = {}
    for split, target in (("test", n_test), ("eval", n_eval)):
        if not target:
            continue
        taken, size = [], 0
        for g in free:
            if size + len(groups[g]) <= target:
                taken.append(g)
                size += len(groups[g])
        if not taken:  # every group is larger than the target: the smallest one, if train keeps a group
            smallest = min(free, key=lambda g: len(groups[g]))
            taken = [smallest]
        free = [g for g in free if g not in taken]
        if not free:
            raise TailorError(f"grouping by '{field}' leaves no group for train", where="data.split.group_by",
                              fix="lower data.split.eval / data.split.test, or group by a finer field")
        out[split] = sorted(i for g in taken for i in groups[g])
    out["train"] = sorted(i for g in free for i in groups[g])
    return out


def parse_time(value, where: str, field: str):
    """A comparable time: (0, number) for numbers, (1, datetime) for ISO 8601 strings / dates (naive or UTC-aware)."""
    fix = f"use ISO 8601 (2024-05-01 or 2024-05-01T13:00:00+08:00) or a number (epoch seconds) in '{field}'"
    if isinstance(value, bool):
        raise TailorError(f"'{field}' is a boolean, not a time", where=where, fix=fix)
    if isinstance(value, (int, float)):
        return (0, float(value), None)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise TailorError(f"cannot read '{field}' value {value!r} as a time", where=where, fix=fix) from None
    if not isinstance(value, dt.datetime):
        raise TailorError(f"'{field}' value {value!r} is not a time", where=where, fix=fix)
    aware = value.tzinfo is not None
    return (1, value.astimezone(dt.timezone.utc).replace(tzinfo=None) if aware else value, aware)


def _by_time(records: list[dict], field: str, n_eval: int, n_test: int) -> dict:
    times = [parse_time(v, r.get("where", "?"), field) for r, v in zip(records, _values(records, field, "time_column"))]
    kinds = {(t[0], t[2]) for t in times}
    if len(kinds) > 1:
        first = {k: next(r.get("where", "?") for r, t in zip(records, times) if (t[0], t[2]) == k) for k in kinds}
        names = {(0, None): "numbers", (1, False): "times without a zone", (1, True): "times with a zone"}
        raise TailorError(f"'{field}' mixes {' and '.join(names[k] for k in sorted(kinds, key=str))}, which cannot be ordered",
                          where="; ".join(f"{names[k]} first at {w}" for k, w in sorted(first.items(), key=str)),
                          fix="write every time the same way (all ISO 8601 with the same zone convention, or all numbers)")
    order = sorted(range(len(records)), key=lambda i: (times[i][1], i))
    n = len(order)

    def cut(pos: int) -> int:
        """Move a cut down to the first row of its tie, so the tie goes to the later split."""
        while 0 < pos < n and times[order[pos - 1]][1] == times[order[pos]][1]:
            pos -= 1
        return pos

    b2 = cut(n - n_test) if n_test else n
    b1 = cut(min(n - n_test - n_eval, b2)) if n_eval else b2
    if b1 == 0:
        raise TailorError(f"every row ties with the first {'eval' if n_eval else 'test'} row's time, so train would be empty",
                          where="data.split.time_column", fix="use a finer time, or lower data.split.eval / data.split.test")
    if n_eval and b1 == b2:
        raise TailorError("ties at the test boundary swallow the whole eval split", where="data.split.time_column",
                          fix="use a finer time, or raise data.split.eval")
    return {"train": order[:b1], "eval": order[b1:b2], "test": order[b2:]}
