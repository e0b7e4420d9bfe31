"""The annotation round trip with Label Studio, in its documented JSON formats.

Export (`tailor data annotation-export ROWS --out tasks.json`): rows to label, typically `uncertain.jsonl` from
`tailor eval --select-uncertain K`, become Label Studio tasks (`[{"data": {...}, "predictions": [...]}]`, the
import format), the model's suggestion pre-filled as a prediction, with the labeling config (label_config.xml)
that matches them: classification rows (`text`, `label`/`suggested_label`) -> a `Choices` control named `label`
over `$text`; chat rows (`messages` whose last turn is the model's answer) -> an editable `TextArea` named
`answer` over `$prompt`.

Import (`tailor data annotation-import EXPORT.json --out DIR`): Label Studio's JSON export (tasks with
`annotations`, each with `completed_by` and `result` items of type `choices` or `textarea`) becomes training
rows. Cancelled annotations and empty results are counted and skipped. When several annotators labeled a task,
their agreement is measured (Cohen's kappa for two annotators over the tasks both labeled; Fleiss' kappa over
the tasks with the most common number of annotators, when >= 2); a task whose annotators disagree goes to
adjudicate.jsonl with every vote instead of into the training rows. Answers (text) agree when equal after
case/space folding.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import quoteattr

from tailor.errors import TailorError

ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def _read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TailorError(f"invalid JSON: {exc.msg}", where=f"{path}:{i}", fix="one JSON object per line") from None
    return rows


def kind_of(rows: list[dict], where: str) -> str:
    if all("text" in r and ("label" in r or "suggested_label" in r) for r in rows):
        return "classification"
    if all(r.get("messages") and r["messages"][-1].get("role") == "assistant" for r in rows):
        return "chat"
    raise TailorError("rows to annotate must all be classification rows (text + label/suggested_label) or all chat rows "
                      "(messages ending with the model's answer)", where=where,
                      fix="pass uncertain.jsonl from `tailor eval --select-uncertain K` (classification or generation)")


def to_tasks(rows: list[dict], labels: list[str] | None = None, where: str = "rows") -> tuple[list[dict], str]:
    """(Label Studio tasks, labeling config XML) for classification or chat rows."""
    if not rows:
        raise TailorError("no rows to annotate", where=where, fix="check the file (tailor eval writes uncertain.jsonl with --out)")
    kind = kind_of(rows, where)
    tasks = []
    if kind == "classification":
        choices = labels or sorted({str(r[k]) for r in rows for k in ("label", "suggested_label") if r.get(k) is not None})
        for i, r in enumerate(rows):
            suggested = r.get("suggested_label", r.get("label"))
            task = {"data": {"text": r["text"], "tailor": {k: v for k, v in r.items() if k != "text"}, "row": i}}
            if suggested is not None:
                task["predictions"] = [{"model_version": "tailor", "result": [
                    {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [str(suggested)]}}]}]
            tasks.append(task)
        body = "".join(f"\n    <Choice value={quoteattr(c)}/>" for c in choices)
        config = (f'<View>\n  <Text name="text" value="$text"/>\n  <Choices name="label" toName="text" choice="single" '
                  f'showInLine="true">{body}\n  </Choices>\n</View>\n')
        return tasks, config
    for i, r in enumerate(rows):
        context, answer = r["messages"][:-1], r["messages"][-1]["content"]
        prompt = "\n\n".join(f"{ROLE_NAMES.get(m['role'], m['role'])}: {m['content']}" for m in context)
        data = {"prompt": prompt, "reference": r.get("reference", ""), "context": context, "row": i,
                "tailor": {k: v for k, v in r.items() if k != "messages"}}
        tasks.append({"data": data, "predictions": [{"model_version": "tailor", "result": [
            {"from_name": "answer", "to_name": "prompt", "type": "textarea", "value": {"text": [answer]}}]}]})
    config = ('<View>\n  <Text name="prompt" value="$prompt"/>\n  <Header value="Reference"/>\n  <Text name="reference" '
              'value="$reference"/>\n  <TextArea name="answer" toName="prompt" editable="true" maxSubmissions="1" '
              'rows="4" placeholder="The correct answer"/>\n</View>\n')
    return tasks, config


def export_tasks(rows_path: str | Path, out: str | Path, labels: list[str] | None = None) -> dict:
    """Write the Label Studio import file and label_config.xml beside it."""
    rows_path, out = Path(rows_path), Path(out)
    if not rows_path.is_file():
        raise TailorError(f"not found: {rows_path}", where="ROWS", fix="tailor eval MODEL --select-uncertain K --out DIR writes DIR/uncertain.jsonl")
    tasks, config = to_tasks(_read_rows(rows_path), labels, str(rows_path))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    (out.parent / "label_config.xml").write_text(config, encoding="utf-8")
    return {"tasks": len(tasks), "file": str(out), "config": str(out.parent / "label_config.xml")}


# ---------------------------------------------------------------------------------------------
# Import


def _annotator(a: dict) -> str:
    who = a.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id"))
    return str(who if who is not None else a.get("id"))


def _value(result: list[dict]) -> tuple[str, str] | None:
    """(kind, value) of an annotation's result: ('label', choice) or ('answer', text)."""
    for item in result or []:
        v = item.get("value") or {}
        if item.get("type") == "choices" and v.get("choices"):
            return "label", str(v["choices"][0])
        if item.get("type") == "textarea" and v.get("text"):
            text = "\n".join(t for t in v["text"] if t is not None).strip()
            if text:
                return "answer", text
    return None


def _fold(kind: str, value: str) -> str:
    return re.sub(r"\s+", " ", value).strip().lower() if kind == "answer" else value


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two annotators' labels on the same items (1 = perfect, 0 = chance)."""
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def fleiss_kappa(items: list[list[str]]) -> float:
    """Fleiss' kappa for items each rated by the same number of annotators."""
    n = len(items[0])
    cats = sorted({x for it in items for x in it})
    counts = [[it.count(c) for c in cats] for it in items]
    p_i = [(sum(c * c for c in row) - n) / (n * (n - 1)) for row in counts]
    p_j = [sum(row[j] for row in counts) / (len(items) * n) for j in range(len(cats))]
    pe = sum(p * p for p in p_j)
    pbar = sum(p_i) / len(items)
    return 1.0 if pe == 1 else (pbar - pe) / (1 - pe)


def agreement(votes: list[dict[str, str]]) -> dict:
    """Kappas over the tasks' votes ({annotator: folded value} per task)."""
    out: dict = {"tasks_with_several": sum(len(v) >= 2 for v in votes)}
    people = sorted({p for v in votes for p in v})
    if len(people) == 2:
        both = [v for v in votes if len(v) == 2]
        if both:
            out["cohen_kappa"] = cohen_kappa([v[people[0]] for v in both], [v[people[1]] for v in both])
            out["cohen_items"] = len(both)
    sizes = Counter(len(v) for v in votes if len(v) >= 2)
    if sizes:
        n = sizes.most_common(1)[0][0]
        same = [sorted(v.values()) for v in votes if len(v) == n]
        out.update({"fleiss_kappa": fleiss_kappa(same), "fleiss_items": len(same), "fleiss_raters": n})
    pairs = [(x, y) for v in votes for i, x in enumerate(v.values()) for y in list(v.values())[i + 1:]]
    if pairs:
        out["pairwise_agreement"] = sum(x == y for x, y in pairs) / len(pairs)
    return out


def import_export(export_path: str | Path, out_dir: str | Path) -> dict:
    """Label Studio JSON export -> OUT/train.jsonl (agreed rows), OUT/adjudicate.jsonl, OUT/agreement.json."""
    export_path, out = Path(export_path), Path(out_dir)
    try:
        tasks = json.loads(export_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TailorError(f"cannot read the Label Studio export: {exc}", where=str(export_path),
                          fix="export the project as JSON (Export > JSON) and pass that file") from None
    if not isinstance(tasks, list):
        raise TailorError("a Label Studio JSON export is a list of tasks", where=str(export_path), fix="use Export > JSON (not JSON-MIN or CSV)")
    rows, adjudicate, votes, skipped = [], [], [], Counter()
    for t in tasks:
        data = t.get("data") or {}
        cast = {}
        for a in t.get("annotations") or []:
            if a.get("was_cancelled"):
                skipped["cancelled annotation"] += 1
                continue
            v = _value(a.get("result"))
            if v is None:
                skipped["annotation without a choice or text"] += 1
                continue
            cast[_annotator(a)] = v
        if not cast:
            skipped["task without annotations"] += 1
            continue
        kind = next(iter(cast.values()))[0]
        folded = {p: _fold(kind, v) for p, (_, v) in cast.items()}
        votes.append(folded)
        if len(set(folded.values())) > 1:
            adjudicate.append({"task": t.get("id"), "data": data, "votes": {p: v for p, (_, v) in cast.items()}})
            continue
        value = next(iter(cast.values()))[1]
        meta = {"annotators": len(cast), "label_studio_task": t.get("id")}
        if kind == "label":
            rows.append({"text": data.get("text", ""), "label": value, **meta})
        else:
            context = data.get("context") or [{"role": "user", "content": data.get("prompt", "")}]
            rows.append({"messages": [*context, {"role": "assistant", "content": value}], **meta})
    out.mkdir(parents=True, exist_ok=True)
    for name, items in (("train.jsonl", rows), ("adjudicate.jsonl", adjudicate)):
        (out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
    summary = {"tasks": len(tasks), "rows": len(rows), "adjudicate": len(adjudicate), "skipped": dict(skipped),
               **agreement(votes)}
    (out / "agreement.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def cmd_export(a) -> int:
    """`tailor data annotation-export ROWS --out tasks.json [--labels A B]`."""
    r = export_tasks(a.rows, a.out, a.labels or None)
    print(f"wrote {r['tasks']} Label Studio tasks to {r['file']} and the labeling config to {r['config']} "
          "(Label Studio: create a project with that config, then Import the tasks file)")
    return 0


def cmd_import(a) -> int:
    """`tailor data annotation-import EXPORT.json --out DIR`."""
    s = import_export(a.export, a.out)
    kappas = ", ".join(f"{k} {s[k]:.3f} ({s[k.split('_')[0] + '_items']} tasks)" for k in ("cohen_kappa", "fleiss_kappa") if k in s)
    print(f"{s['rows']} training rows -> {Path(a.out) / 'train.jsonl'}; {s['adjudicate']} tasks with disagreeing "
          f"annotators -> {Path(a.out) / 'adjudicate.jsonl'}; skipped {s['skipped'] or 'none'}"
          + (f"; agreement: {kappas}" if kappas else ""))
    return 0
