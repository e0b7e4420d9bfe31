"""Sequence-level distillation (Kim & Rush, 2016): the teacher answers unlabeled prompts and the student trains on them.

A user often has many more questions than answered ones (support tickets, search logs). With `distill.prompts`
the teacher answers each prompt greedily before training; the answers are written to the run folder
(`teacher_answers.jsonl`, with `teacher_answers.json` saying what was kept and why the rest was skipped) and join
data.train, so the student sees them as ordinary chats and the logit-KD term (distill.alpha) applies to them too.

Prompts that appear in the evaluation data are dropped (training on the test questions would inflate every
held-out score), and so are prompts that data.train already answers; both are counted, never dropped silently.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import torch

from tailor.config import Recipe
from tailor.errors import TailorError

log = logging.getLogger("tailor")

ANSWERS_FILE = "teacher_answers.jsonl"
REPORT_FILE = "teacher_answers.json"


def _key(text: str) -> str:
    """Questions compare equal up to case and spacing."""
    return " ".join(text.casefold().split())


def _files(pattern: str) -> list[Path]:
    """The files a path or glob names (the loaders accept both)."""
    return sorted(Path(f) for f in glob.glob(pattern) if Path(f).is_file())


def prompt_of(record: dict) -> list[dict] | None:
    """The conversation up to and including its last user turn, or None when it has no user turn.

    A chat record gives its turns (a trailing assistant answer is dropped: the teacher writes its own); a text
    record (e.g. a .txt file, one question per line) is one user turn.
    """
    if "messages" in record:
        turns = list(record["messages"])
        while turns and turns[-1].get("role") != "user":
            turns.pop()
        return turns or None
    text = str(record.get("text", "")).strip()
    return [{"role": "user", "content": text}] if text else None


_PLACEHOLDER = "(answer to be written by the teacher)"


def _with_answer(row: dict) -> dict:
    """The row plus a placeholder answer, so the training-data converter (which needs one) reads its question."""
    for key in ("messages", "conversations"):
        turns = row.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[-1], dict):
            last = ({"from": "gpt", "value": _PLACEHOLDER} if "from" in turns[-1]
                    else {"role": "assistant", "content": _PLACEHOLDER})
            return {**row, key: [*turns, last]}
    if "instruction" in row and "output" not in row:
        return {**row, "output": _PLACEHOLDER}
    return row


def _prompt_records(paths: list[str], fmt: str, text_field: str, report) -> Iterator[dict]:
    """Canonical records of prompt files: chats (answers optional), alpaca rows, {"prompt": ...} rows, text lines."""
    from tailor.data.loading import iter_rows, to_record

    for pattern in paths:
        for path in _files(pattern):
            for row, where in iter_rows(path):
                report.read += 1
                if isinstance(row, dict) and isinstance(row.get("prompt"), str) and "chosen" not in row:
                    row = {"messages": [{"role": "user", "content": row["prompt"]}]}
                rec = to_record(_with_answer(row) if isinstance(row, dict) else row, fmt, text_field)
                if isinstance(rec, str):
                    report.skip(rec, where)
                else:
                    yield rec


def _user_keys(paths: list[str], fmt: str, text_field: str) -> set[str]:
    from tailor.data.loading import load_records

    keys = set()
    for rec in load_records(paths, fmt, text_field) if paths else []:
        turns = prompt_of(rec)
        if turns:
            keys.add(_key(turns[-1]["content"]))
    return keys


def load_prompts(recipe: Recipe) -> tuple[list[list[dict]], dict]:
    """(prompt conversations, counts) from distill.prompts, minus those in the eval data or already in data.train."""
    from tailor.data.loading import LoadReport

    d, data = recipe.distill, recipe.data
    for p in d.prompts:
        if not _files(p):
            raise TailorError(f"prompts file not found: {p}", where="distill.prompts",
                              fix="list existing files of questions (.jsonl chats or a .txt with one question per line)")
    report = LoadReport()
    records = list(_prompt_records(d.prompts, data.format, data.text_field, report))
    eval_keys = _user_keys([*data.eval, *recipe.eval.data], data.format, data.text_field)
    train_keys = _user_keys(data.train, data.format, data.text_field)
    seen: set[str] = set()
    prompts: list[list[dict]] = []
    for rec in records:
        turns = prompt_of(rec)
        if turns is None:
            report.skip("no user turn", ", ".join(d.prompts))
            continue
        key = _key(turns[-1]["content"])
        if key in eval_keys:
            report.skip("question is in the evaluation data (data.eval / eval.data)", turns[-1]["content"][:60])
        elif key in train_keys:
            report.skip("question already answered in data.train", turns[-1]["content"][:60])
        elif key in seen:
            report.skip("duplicate prompt", turns[-1]["content"][:60])
        else:
            seen.add(key)
            prompts.append(turns)
    report.kept = len(prompts)
    counts = {"read": report.read, "kept": len(prompts), "skipped": dict(report.skipped)}
    overlap = report.skipped.get("question is in the evaluation data (data.eval / eval.data)", 0)
    if overlap:
        log.warning("distill.prompts: %d prompts are evaluation questions and were left out", overlap)
    if not prompts:
        reasons = "; ".join(f"{n}x {r}" for r, n in report.skipped.most_common(3)) or "the files hold no rows"
        raise TailorError(f"no usable prompts in {', '.join(d.prompts)}: {reasons}", where="distill.prompts",
                          fix="give questions the evaluation and training data do not already contain")
    return prompts, counts


def _fingerprint(recipe: Recipe) -> str:
    """What the answers depend on: the teacher's weights, the prompt files, the generation length, the data filters."""
    h = hashlib.sha256()
    d = recipe.distill
    teacher = Path(d.teacher)
    for f in sorted(teacher.glob("*.safetensors")) + sorted(teacher.glob("*.json")):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        h.update(str(f.stat().st_mtime_ns).encode())
    for p in [*d.prompts, *recipe.data.train, *recipe.data.eval, *recipe.eval.data]:
        for f in _files(p):
            h.update(hashlib.sha256(f.read_bytes()).digest())
    h.update(f"{d.generate_max_new_tokens}|{recipe.eval.batch_size}".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int,
                     batch_size: int) -> list[tuple[str, bool]]:
    """(greedy answer, whether it ended with end-of-sequence) per prompt; an unfinished answer was cut off."""
    from tailor.models.generation import decoding_kwargs, generate_rows

    eos = decoding_kwargs(tokenizer, max_new_tokens)["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else [eos])
    results: list[tuple[str, bool]] = []
    for row in generate_rows(model, tokenizer, prompts, max_new_tokens, batch_size):
        finished = any(t in eos for t in row)
        row = row[: next((i for i, t in enumerate(row) if t in eos), len(row))]
        results.append((tokenizer.decode(row, skip_special_tokens=True).strip(), finished))
    return results


def teacher_answer_file(recipe: Recipe, teacher, tokenizer, out: Path) -> Path:
    """Write the teacher's greedy answers to `out`/teacher_answers.jsonl (reused when nothing they depend on changed)."""
    from tailor.models.loading import resolve_device

    d = recipe.distill
    if recipe.train.objective != "sft":
        raise TailorError("distill.prompts makes chats from the teacher's answers; it needs train.objective=sft",
                          where="distill.prompts", fix="distil the pretraining stage without prompts, then SFT with them")
    if recipe.data.sources or not recipe.data.train:
        raise TailorError("distill.prompts adds the teacher's answers to data.train files", where="distill.prompts",
                          fix="give the labeled data as data.train files (not data.sources); an empty labeled file works")
    answers, report_path = out / ANSWERS_FILE, out / REPORT_FILE
    fingerprint = _fingerprint(recipe)
    if answers.is_file() and report_path.is_file():
        old = json.loads(report_path.read_text())
        if old.get("fingerprint") == fingerprint:
            log.info("distill.prompts: reusing %d teacher answers in %s", old["kept"], answers)
            return answers
    prompts, counts = load_prompts(recipe)
    device = resolve_device(recipe.train.device)
    start = time.perf_counter()
    teacher.to(device)
    answered = generate_answers(teacher, tokenizer, prompts, d.generate_max_new_tokens, recipe.eval.batch_size)
    teacher.to("cpu")
    seconds = time.perf_counter() - start
    skipped, rows = Counter(), []
    for turns, (text, finished) in zip(prompts, answered):
        if not finished:
            skipped["teacher's answer reached distill.generate_max_new_tokens (cut off)"] += 1
        elif not text:
            skipped["teacher gave an empty answer"] += 1
        else:
            rows.append({"messages": [*turns, {"role": "assistant", "content": text}], "source": "teacher"})
    out.mkdir(parents=True, exist_ok=True)
    with answers.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {"fingerprint": fingerprint, "teacher": str(d.teacher), "prompt_files": list(d.prompts),
               "prompts_read": counts["read"], "prompts_skipped": counts["skipped"], "answered": len(prompts),
               "kept": len(rows), "answers_skipped": dict(skipped), "max_new_tokens": d.generate_max_new_tokens,
               "seconds": round(seconds, 2)}
    report_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log.info("distill.prompts: the teacher answered %d prompts in %.1fs; %d answers kept -> %s",
             len(prompts), seconds, len(rows), answers)
    if skipped:
        log.warning("distill.prompts: %s", "; ".join(f"{n} skipped: {r}" for r, n in skipped.items()))
    if not rows:
        raise TailorError(f"the teacher gave no usable answer to {len(prompts)} prompts ({dict(skipped)})",
                          where="distill.prompts", fix="raise distill.generate_max_new_tokens, or check the teacher")
    return answers


def summary(out: Path) -> dict:
    """The answer report of a run (for train_summary.json), or {} when the run had no prompts."""
    path = Path(out) / REPORT_FILE
    if not path.is_file():
        return {}
    rep = json.loads(path.read_text())
    return {"teacher_answers": {k: rep[k] for k in ("prompts_read", "prompts_skipped", "kept", "answers_skipped", "seconds")}}
