"""The retrieval/ranking task: the model ranks candidates by how likely it finds each as the answer to a query.

Rows: {"query": str, "candidates": [str, ...], "relevant": [indices]} or {..., "positive": index}.
Each candidate is scored as the assistant's answer to the query (`eval.retrieval_template` as the
user turn) by its mean token log-likelihood (candidate tokens plus end-of-turn), so long candidates
are not penalized for their length. Ties keep the candidates' order. Metrics: Recall@K, MRR and
NDCG@K (binary relevance) for each K in eval.ranking_k, averaged over queries.
"""

from __future__ import annotations

from tailor.config import EvalConfig
from tailor.errors import TailorError
from tailor.evaluation import metrics as M
from tailor.evaluation.scoring import encode_turn, pad_id, sequence_logprobs

_SHAPE = 'write rows like {"query": "...", "candidates": ["a", "b", "c"], "relevant": [0, 2]} (or "positive": 0)'


def load_rows(paths: list[str], max_examples: int | None) -> list[dict]:
    """Validated rows {"query", "candidates", "relevant" (sorted indices), "where"}; a bad row is an error naming file and line."""
    from tailor.data.loading import iter_rows

    rows = []
    for p in paths:
        for row, where in iter_rows(p):
            rows.append(_check(row, where))
    if not rows:
        raise TailorError(f"no retrieval rows in {', '.join(map(str, paths))}", fix=_SHAPE)
    return rows[:max_examples] if max_examples else rows


def _is_index(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check(row, where: str) -> dict:
    reason = getattr(row, "reason", None)  # the loader's stand-in for an unparsable line
    if reason:
        raise TailorError(f"unreadable row: {reason} {getattr(row, 'detail', '')}".strip(), where=where, fix=_SHAPE)
    if not isinstance(row, dict):
        raise TailorError("a retrieval row must be a JSON object", where=where, fix=_SHAPE)
    query, cands = row.get("query"), row.get("candidates")
    if not isinstance(query, str) or not query.strip():
        raise TailorError("missing or empty 'query'", where=where, fix=_SHAPE)
    if not isinstance(cands, list) or not cands or not all(isinstance(c, str) and c.strip() for c in cands):
        raise TailorError("'candidates' must be a non-empty list of non-empty strings", where=where, fix=_SHAPE)
    if "relevant" in row and "positive" in row:
        raise TailorError("give either 'relevant' or 'positive', not both", where=where, fix=_SHAPE)
    if "positive" in row:
        relevant = [row["positive"]]
    elif "relevant" in row:
        relevant = row["relevant"] if isinstance(row["relevant"], list) else [row["relevant"]]
    else:
        raise TailorError("no 'relevant' (list of candidate indices) or 'positive' (one index)", where=where, fix=_SHAPE)
    if not relevant:
        raise TailorError("'relevant' is empty: a query needs at least one relevant candidate", where=where, fix=_SHAPE)
    for i in relevant:
        if not _is_index(i) or not 0 <= i < len(cands):
            raise TailorError(f"relevant index {i!r} is out of range for {len(cands)} candidates (0 to {len(cands) - 1})",
                              where=where, fix="indices count candidates from 0")
    return {"query": query, "candidates": cands, "relevant": sorted(set(relevant)), "where": where}


def ranking_metrics(rankings: list[list[int]], relevant: list[set[int]], ks: list[int]) -> tuple[dict, list[dict]]:
    """Mean Recall@K, MRR and NDCG@K over queries, and the per-query values."""
    per = []
    for ranked, rel in zip(rankings, relevant):
        row = {"reciprocal_rank": M.reciprocal_rank(ranked, rel)}
        for k in ks:
            row[f"recall@{k}"] = M.recall_at_k(ranked, rel, k)
            row[f"ndcg@{k}"] = M.ndcg_at_k(ranked, rel, k)
        per.append(row)
    n = len(per)
    result = {"n": n, "mrr": sum(r["reciprocal_rank"] for r in per) / n if n else float("nan")}
    for k in ks:
        for name in ("recall", "ndcg"):
            result[f"{name}@{k}"] = sum(r[f"{name}@{k}"] for r in per) / n if n else float("nan")
    return result, per


def evaluate(model, tokenizer, rows: list[dict], cfg: EvalConfig) -> tuple[dict, list[dict]]:
    """Metrics and per-query rows (ranking, scores, per-query metrics) for the retrieval task."""
    encoded = [encode_turn(tokenizer, cfg.retrieval_template.replace("{query}", r["query"]), c, cfg.max_length)
               for r in rows for c in r["candidates"]]
    scores = sequence_logprobs(model, encoded, pad_id(tokenizer), cfg.batch_size)
    rankings, mean_scores, pos = [], [], 0
    for r in rows:
        s = [total / n if n else float("-inf") for total, n in scores[pos:pos + len(r["candidates"])]]
        pos += len(r["candidates"])
        mean_scores.append(s)
        rankings.append(sorted(range(len(s)), key=lambda i: (-s[i], i)))
    result, per = ranking_metrics(rankings, [set(r["relevant"]) for r in rows], cfg.ranking_k)
    examples = [{"where": r["where"], "query": r["query"], "candidates": r["candidates"], "relevant": r["relevant"],
                 "ranking": ranked, "scores": s, "top": r["candidates"][ranked[0]], **m}
                for r, ranked, s, m in zip(rows, rankings, mean_scores, per)]
    return {"task": "retrieval", **result, "truncated": sum(e["truncated"] for e in encoded)}, examples


def worst(examples: list[dict], k: int) -> list[dict]:
    """The k queries whose first relevant candidate ranked lowest."""
    order = sorted(range(len(examples)), key=lambda i: (examples[i]["reciprocal_rank"], i))
    keep = ("where", "query", "relevant", "top", "reciprocal_rank")
    return [{"index": i, **{key: examples[i][key] for key in keep}} for i in order[:k]]
