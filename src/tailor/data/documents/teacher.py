"""Question-answer pairs written by a local teacher model per text chunk, kept only when grounded.

The data stage loads no model: `tailor data prepare` passes a `Teacher` (`tailor.models.teacher`), a
function (model directory, conversations, max_new_tokens, batch_size) -> replies. Each chunk is sent
as one user turn asking for "Q: ... / A: ..." (问：/答： for Chinese chunks). A reply is kept when

- it parses into a non-empty question and answer;
- the answer is grounded: at least `document.teacher_min_overlap` of its words (Latin words and numbers,
  lowercased; every CJK character one word) occur in the chunk;
- it is not an exact repeat (normalized question and answer) of a pair already kept from the document;

and, after the split, a teacher pair whose question has an exact or near twin (MinHash, data.dedup
threshold) among the eval/test questions is dropped (`drop_eval_twins`), so generated rows never
overlap evaluation. Rejections are counted by reason in the report.
"""

from __future__ import annotations

import re
from typing import Callable

from tailor.errors import TailorError

Teacher = Callable[[str, list[list[dict]], int, int], list[str]]

PROMPT = {
    "en": ("Read the passage and write one question a customer could ask that the passage answers, and the answer, "
           "taken from the passage. Reply exactly as:\nQ: <question>\nA: <answer>\n\nPassage:\n{chunk}"),
    "zh": "阅读下面的段落，写出一个顾客可能会问、且段落能回答的问题，以及取自段落的答案。严格按以下格式回复：\n问：<问题>\n答：<答案>\n\n段落：\n{chunk}",
}
_REPLY = re.compile(r"(?:^|\n)\s*(?:Q|Question|问|问题)\s*[:：]\s*(?P<q>.+?)\s*\n\s*(?:A|Answer|答|回答)\s*[:：]\s*(?P<a>.+)",
                    re.IGNORECASE | re.DOTALL)
_WORDS = re.compile(r"[a-z0-9]+|[\u3400-\u9fff\uf900-\ufaff]")
_HAN = re.compile("[\u3400-\u9fff]")


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def grounded(answer: str, chunk: str, min_overlap: float) -> tuple[bool, float]:
    """(passes, overlap): the share of the answer's words that occur in the chunk."""
    ans = words(answer)
    if not ans:
        return False, 0.0
    have = set(words(chunk))
    share = sum(w in have for w in ans) / len(ans)
    return share >= min_overlap, share


def parse_reply(reply: str) -> tuple[str, str] | None:
    m = _REPLY.search(reply.strip())
    if not m:
        return None
    q, a = m.group("q").strip(), m.group("a").strip().split("\n\n")[0].strip()
    return (q, a) if q and a and q != a else None


def teacher_pairs(chunks: list, cfg, teacher: Teacher | None, counts: dict) -> list[tuple[str, str, object]]:
    """(question, answer, chunk) for every kept pair; `counts` gathers kept and rejected by reason."""
    if teacher is None:
        raise TailorError("document.teacher is set but no teacher model was loaded for this run",
                          where="data.sources[].document.teacher",
                          fix="run `tailor data prepare RECIPE.yaml` (it loads the teacher), then train on the prepared directory")
    convs = [[{"role": "user", "content": PROMPT["zh" if _HAN.search(c.text) else "en"].format(chunk=c.text)}]
             for c in chunks]
    replies = teacher(str(cfg.teacher), convs, cfg.teacher_max_new_tokens, cfg.teacher_batch_size)
    kept, seen = [], set()
    for chunk, reply in zip(chunks, replies):
        pair = parse_reply(reply)
        if pair is None:
            counts["rejected: no 'Q: / A:' in the reply"] = counts.get("rejected: no 'Q: / A:' in the reply", 0) + 1
            continue
        ok, share = grounded(pair[1], chunk.text, cfg.teacher_min_overlap)
        if not ok:
            reason = f"rejected: answer not grounded (< {cfg.teacher_min_overlap:.0%} of its words in the chunk)"
            counts[reason] = counts.get(reason, 0) + 1
            continue
        key = (" ".join(words(pair[0])), " ".join(words(pair[1])))
        if key in seen:
            counts["rejected: repeats a pair of this document"] = counts.get("rejected: repeats a pair of this document", 0) + 1
            continue
        seen.add(key)
        counts["teacher"] = counts.get("teacher", 0) + 1
        kept.append((pair[0], pair[1], chunk))
    return kept


def _question(rec: dict) -> str:
    return next((m["content"] for m in rec.get("messages") or [] if m["role"] == "user"), "")


def drop_eval_twins(splits: dict[str, list[dict]], dedup, report) -> dict[str, list[dict]]:
    """Train rows a teacher wrote whose question is an exact or near twin of an eval/test question, dropped."""
    from datasketch import LeanMinHash

    from tailor.data.dedup import SEED, _NearIndex, _Signer, normalize_for_hash

    generated = [r for r in splits.get("train", []) if (r.get("meta") or {}).get("qa") == "teacher"]
    held = [q for s, rows in splits.items() if s != "train" for q in map(_question, rows) if q]
    if not generated or not held:
        return splits
    rep = report.step("documents.teacher_vs_eval")
    signer, index = _Signer(dedup.num_perm, dedup.ngram), _NearIndex(dedup)
    norms = [normalize_for_hash(q) for q in held]
    exact = set(norms)
    for n, sig in zip(norms, signer(norms)):
        index.add("q", LeanMinHash(seed=SEED, hashvalues=sig, scheme="affine32"), "eval")
    mine = [normalize_for_hash(_question(r)) for r in generated]
    drop = set()
    for rec, n, sig in zip(generated, mine, signer(mine)):
        rep.n_in += 1
        if n in exact:
            rep.drop("teacher question: exact twin of an eval/test question", rec.get("where"))
        elif index.find("q", sig)[1] is not None:
            rep.drop("teacher question: near twin of an eval/test question", rec.get("where"))
        else:
            rep.n_out += 1
            continue
        drop.add(id(rec))
    return {**splits, "train": [r for r in splits["train"] if id(r) not in drop]}
