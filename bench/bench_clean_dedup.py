"""Benchmark: cleaning + exact de-dup (rows/s) and near-duplicate detection (docs/s), against baselines.

Run: .venv/bin/python bench/bench_clean_dedup.py [--rows 200000] [--docs 5000]

Both sides run in this process on the same generated data:
- clean + exact: tailor's `clean_records` (nfkc, strip_control, whitespace, pii) + `dedup_records`
  (exact only) vs a straightforward version: per-text `unicodedata.normalize`, one `re.sub` pass
  per rule and per PII kind, and a Python set of the raw cleaned strings.
- near: tailor's `dedup_records` (near only) vs datasketch used the plain way: one `MinHash.update`
  per shingle, then `MinHashLSH.query` / `insert`, on the same normalized text and shingles.
Targets (single process, 2 cores): 50,000 rows/s and 3,000 docs/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import sys
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from datasketch import MinHash, MinHashLSH  # noqa: E402

from tailor.config import ControlStep, DedupConfig, NfkcStep, PiiStep, WhitespaceStep  # noqa: E402
from tailor.data.clean import clean_records  # noqa: E402
from tailor.data.dedup import dedup_records, normalize_for_hash  # noqa: E402
from tailor.data.records import PrepareReport, iter_texts, map_texts  # noqa: E402

ROWS_TARGET, DOCS_TARGET = 50_000, 3_000

EN = ("order return refund laptop tent shipping days store open close price discount member card warranty "
      "battery screen delivery north south weekend support account password email invoice receipt size color "
      "please thanks question answer today tomorrow week month policy exchange gift coupon").split()
ZH = "订单退货退款笔记本电脑帐篷运输天商店营业关门价格折扣会员卡保修电池屏幕送货北部南部周末客服账户密码发票收据尺寸颜色请谢谢问题回答今天明天政策换货礼品优惠券"
PII = ["联系 13812345678", "email me: li.wei@example.com", "call +1 415-555-0132", "card 4111 1111 1111 1111",
       "server 192.168.10.24", "身份证 11010519491231002X", "座机 010-12345678"]
NOISE = ["  ", "\u200b", "\t", "\u3000", "\r\n", "Ｆｕｌｌ１２", "\x07", "  \n\n\n"]


def _sentence(rng: random.Random, zh: bool) -> str:
    if zh:
        body = "".join(rng.choice(ZH) for _ in range(rng.randint(8, 24)))
        return body + rng.choice("，。！？") + "".join(rng.choice(ZH) for _ in range(rng.randint(3, 10))) + "。"
    words = [rng.choice(EN) for _ in range(rng.randint(5, 14))]
    return " ".join(words).capitalize() + rng.choice(".?!")


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Short bilingual chat rows: ~20% exact duplicates written with other case/spacing, PII and noise sprinkled."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for i in range(n):
        if rows and rng.random() < 0.2:
            src = rows[rng.randrange(len(rows))]
            rec = map_texts(src, lambda t: (t.upper() if rng.random() < 0.5 else t.replace(" ", "  ")) + " ")
        else:
            zh = rng.random() < 0.5
            q, a = _sentence(rng, zh), _sentence(rng, zh)
            if rng.random() < 0.15:
                a = a + " " + rng.choice(PII)
            if rng.random() < 0.2:
                q = rng.choice(NOISE).join([q[: len(q) // 2], q[len(q) // 2:]])
            rec = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        rows.append({**rec, "where": f"gen:{i + 1}"})
    return rows


def make_docs(n: int, seed: int = 1) -> list[dict]:
    """Documents of a few hundred characters; ~25% are near copies (a few words changed) of earlier ones."""
    rng = random.Random(seed)
    docs: list[dict] = []
    for i in range(n):
        if docs and rng.random() < 0.25:
            words = docs[rng.randrange(len(docs))]["text"].split(" ")
            for _ in range(2):
                words[rng.randrange(len(words))] = rng.choice(EN)
            text = " ".join(words)
        elif rng.random() < 0.5:
            text = " ".join(_sentence(rng, False) for _ in range(4))
        else:
            text = "".join(_sentence(rng, True) for _ in range(6))
        docs.append({"text": text, "where": f"doc:{i + 1}"})
    return docs


# --- baselines: what a straightforward implementation looks like -------------------------------

BASE_RULES = [
    (r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", ""), (r"[\u200b-\u200d\u2060\ufeff]", ""), (r"\r\n?", "\n"),
    (r"[\u00a0\u3000]", " "), (r"[ \t]+\n", "\n"), (r"[ \t]{2,}", " "), (r"\n{3,}", "\n\n"),
    (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "<EMAIL>"),
    (r"\+\d{1,3}[ -]?\d{1,4}(?:[ -]?\d{2,4}){1,4}", "<PHONE>"), (r"(?<!\d)1[3-9]\d{9}(?!\d)", "<PHONE>"),
    (r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)", "<PHONE>"), (r"(?<!\d)\d{17}[\dXx](?!\d)", "<ID_CARD>"),
    (r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)", "<BANK_CARD>"), (r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])", "<IP>"),
]


def baseline_clean_exact(rows: list[dict]) -> int:
    seen, kept = set(), 0
    for rec in rows:
        def clean(t: str) -> str:
            t = unicodedata.normalize("NFKC", t)
            for pattern, repl in BASE_RULES:
                t = re.sub(pattern, repl, t)
            return t.strip()
        rec = map_texts(rec, clean)
        key = "\n".join(iter_texts(rec))
        if key not in seen:
            seen.add(key)
            kept += 1
    return kept


def baseline_near(docs: list[dict], cfg: DedupConfig) -> int:
    lsh, kept = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm), 0
    for i, rec in enumerate(docs):
        text = normalize_for_hash(rec["text"])
        m = MinHash(num_perm=cfg.num_perm, seed=1)
        for j in range(max(1, len(text) - cfg.ngram + 1)):
            m.update(text[j:j + cfg.ngram].encode("utf-8"))
        if not lsh.query(m):
            lsh.insert(i, m)
            kept += 1
    return kept


def timed(fn):
    """(result, wall seconds, CPU seconds of this process): on a shared machine the CPU rate is the fairer one."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def rates(n: int, wall: float, cpu: float, unit: str) -> str:
    return f"{n / wall:10,.0f} {unit}/s wall, {n / cpu:10,.0f} {unit}/s CPU ({wall:.2f} s wall)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--docs", type=int, default=5_000)
    args = ap.parse_args()
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")

    rows, docs = make_rows(args.rows), make_docs(args.docs)
    steps = [NfkcStep(step="nfkc"), ControlStep(step="strip_control"), WhitespaceStep(step="whitespace"),
             PiiStep(step="pii")]
    exact_only = DedupConfig(exact=True, near=False)
    near_only = DedupConfig(exact=False, near=True)

    report = PrepareReport()
    kept, wall, cpu = timed(lambda: sum(1 for _ in dedup_records(clean_records(rows, steps, report), exact_only, report)))
    base_kept, base_wall, base_cpu = timed(lambda: baseline_clean_exact(rows))
    print(f"\nclean (nfkc, strip_control, whitespace, pii) + exact de-dup on {len(rows):,} short rows")
    print(f"  tailor:   {rates(len(rows), wall, cpu, 'rows')}; {kept:,} kept, pii masked {report.extra.get('pii_masked')}")
    print(f"  baseline: {rates(len(rows), base_wall, base_cpu, 'rows')}; {base_kept:,} kept "
          "(a raw-string set misses case/space variants)")
    print(f"  ratio vs baseline: {base_cpu / cpu:.2f}x (CPU), {base_wall / wall:.2f}x (wall);  vs target "
          f"{ROWS_TARGET:,} rows/s: {len(rows) / cpu / ROWS_TARGET:.2f}x (CPU), {len(rows) / wall / ROWS_TARGET:.2f}x (wall)")

    report = PrepareReport()
    near_kept, wall, cpu = timed(lambda: sum(1 for _ in dedup_records(docs, near_only, report)))
    base_near_kept, base_wall, base_cpu = timed(lambda: baseline_near(docs, near_only))
    avg = sum(len(d["text"]) for d in docs) / len(docs)
    print(f"\nnear de-dup (MinHash LSH, num_perm={near_only.num_perm}, ngram={near_only.ngram}, "
          f"threshold={near_only.threshold}) on {len(docs):,} docs of {avg:.0f} characters on average")
    print(f"  tailor:   {rates(len(docs), wall, cpu, 'docs')}; {near_kept:,} kept")
    print(f"  baseline: {rates(len(docs), base_wall, base_cpu, 'docs')}; {base_near_kept:,} kept "
          "(per-shingle MinHash.update)")
    print(f"  ratio vs baseline: {base_cpu / cpu:.2f}x (CPU), {base_wall / wall:.2f}x (wall);  vs target "
          f"{DOCS_TARGET:,} docs/s: {len(docs) / cpu / DOCS_TARGET:.2f}x (CPU), {len(docs) / wall / DOCS_TARGET:.2f}x (wall)")


if __name__ == "__main__":
    main()
