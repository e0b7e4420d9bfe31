"""Visual question answering: a vision-language model's greedy answers about images, scored against references.

`tailor eval MODEL --data rows.jsonl` on a vision-language model (or an adapter on one) reads rows with images (the
data formats of `tailor.data.images`), answers each last user turn greedily in batches, and scores:

- `exact`: the answer equals the reference; `normalized`: equal after lower-casing, dropping punctuation and
  spaces (Chinese and English punctuation); `contains`: the normalized reference occurs in the normalized answer;
- when the references are labels (at most 20 distinct values, each seen at least twice): `label_accuracy` and
  `label_macro_f1` (scikit-learn) of the label each answer names.

It writes eval_results.json, examples.jsonl and report.html: a thumbnail of each image with the question, the
reference and the answer.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import unicodedata
from pathlib import Path

MAX_LABELS = 20


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\s\W_]+", "", text)


def generate_answers(model, processor, rows: list[dict], max_new_tokens: int = 32, batch: int = 32) -> list[str]:
    """Greedy answers to each row's conversation up to its last user turn; prompts left-padded, batched."""
    import torch

    from tailor.data.images import prompt_inputs

    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    answers: list[str] = []
    for i in range(0, len(rows), batch):
        parts = [prompt_inputs(processor, _prompt(r["messages"]), r.get("images") or []) for r in rows[i:i + batch]]
        width = max(p["input_ids"].shape[1] for p in parts)
        ids = torch.full((len(parts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(parts), width), dtype=torch.long)
        for j, p in enumerate(parts):
            n = p["input_ids"].shape[1]
            ids[j, width - n:] = p["input_ids"][0]
            mask[j, width - n:] = 1
        extra = {}
        for key in parts[0]:
            if key not in ("input_ids", "attention_mask", "mm_token_type_ids") and all(key in p for p in parts):
                extra[key] = torch.cat([p[key] for p in parts])
        if "mm_token_type_ids" in parts[0]:
            types = torch.zeros((len(parts), width), dtype=torch.long)
            for j, p in enumerate(parts):
                types[j, width - p["input_ids"].shape[1]:] = p["mm_token_type_ids"][0]
            extra["mm_token_type_ids"] = types
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, **extra)
        answers += tok.batch_decode(out[:, width:], skip_special_tokens=True)
    return [a.strip() for a in answers]


def _prompt(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) the last assistant turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return messages[:last]


def reference(messages: list[dict]) -> str:
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    return answers[-1] if answers else ""


def vqa_metrics(answers: list[str], references: list[str]) -> dict:
    """exact / normalized / contains accuracy, and label metrics when the references are labels."""
    n = max(len(references), 1)
    norm_answers, norm_refs = [normalize(a) for a in answers], [normalize(r) for r in references]
    metrics = {
        "exact": sum(a == r for a, r in zip(answers, references)) / n,
        "normalized": sum(a == r for a, r in zip(norm_answers, norm_refs)) / n,
        "contains": sum(bool(r) and r in a for a, r in zip(norm_answers, norm_refs)) / n,
        "n": len(references),
    }
    labels = sorted(set(references))
    if len(labels) <= MAX_LABELS and all(references.count(x) >= 2 for x in labels) and len(labels) > 1:
        from sklearn.metrics import accuracy_score, f1_score

        norm_labels = {x: normalize(x) for x in labels}
        named = [_named_label(a, norm_labels) for a in norm_answers]
        metrics["label_accuracy"] = accuracy_score(references, named)
        metrics["label_macro_f1"] = f1_score(references, named, labels=labels, average="macro", zero_division=0)
    return metrics


def _named_label(a: str, labels: dict[str, str]) -> str:
    """The label a normalized answer names (labels: label -> its normalized form, in sorted order): an exact match,
    else the longest label it contains, else ''."""
    exact = [x for x, nx in labels.items() if nx == a]
    if exact:
        return exact[0]
    inside = sorted((x for x, nx in labels.items() if nx and nx in a), key=lambda x: -len(labels[x]))
    return inside[0] if inside else ""


def thumbnail(ref: str, size: int = 96) -> str:
    """A PNG data URL of the image, at most size x size (for the report)."""
    from tailor.data.images import load_image

    img = load_image(ref)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(path: Path, examples: list[dict], metrics: dict, title: str = "Visual question answering") -> Path:
    """A self-contained HTML page: the metrics, then each example's thumbnails, question, reference and answers."""
    answer_keys = [k for k in examples[0] if k.startswith("answer")] if examples else []
    head = "".join(f"<th>{html.escape(k)}</th>" for k in answer_keys)
    rows = []
    for ex in examples:
        pics = "".join(f'<img src="{thumbnail(r)}" alt="image">' for r in ex.get("images", []))
        cells = "".join(f"<td>{html.escape(str(ex[k]))}</td>" for k in answer_keys)
        rows.append(f"<tr><td>{pics}</td><td>{html.escape(ex['question'])}</td><td>{html.escape(ex['reference'])}</td>"
                    f"{cells}</tr>")
    body = (f"<h1>{html.escape(title)}</h1><pre>{html.escape(json.dumps(metrics, indent=2, ensure_ascii=False))}</pre>"
            f"<table><tr><th>image</th><th>question</th><th>reference</th>{head}</tr>{''.join(rows)}</table>")
    style = "body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}img{margin:2px}"
    path.write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
                    f"{body}", encoding="utf-8")
    return path


def evaluate(model, processor, rows: list[dict], out_dir: Path | None = None, max_new_tokens: int = 32) -> tuple[dict, list]:
    """(metrics, examples) of a vision-language model on rows with images; with out_dir, the files listed above."""
    answers = generate_answers(model, processor, rows, max_new_tokens)
    refs = [reference(r["messages"]) for r in rows]
    metrics = vqa_metrics(answers, refs)
    examples = [{"question": _prompt(r["messages"])[-1]["content"] if _prompt(r["messages"]) else "", "reference": ref,
                 "answer": a, "images": r.get("images") or [], "where": r.get("where", "")}
                for r, ref, a in zip(rows, refs, answers)]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_results.json").write_text(json.dumps({"task": "vqa", "metrics": metrics}, indent=2), encoding="utf-8")
        (out / "examples.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples),
                                            encoding="utf-8")
        write_report(out / "report.html", examples, metrics)
    return metrics, examples


def is_vision_eval(model_dir, adapter=None) -> bool:
    """True when the model to evaluate (or the adapter's base) is a vision-language model."""
    from tailor.adapters.vision import is_vision_adapter
    from tailor.models.vision import is_vision_model_dir

    return bool(model_dir) and (is_vision_model_dir(model_dir) or is_vision_adapter(adapter or model_dir,
                                                                                    model_dir if adapter else None))


def run(model_dir, paths: list[str], adapter=None, out_dir=None, max_examples: int | None = None,
        max_new_tokens: int = 32) -> tuple[dict, list]:
    """`tailor eval` on a vision-language model: rows with images from `paths` (as training reads them), scored by
    `evaluate`."""
    from tailor.adapters.vision import load_vision_with_adapter
    from tailor.config import SourceConfig
    from tailor.data.loading import iter_source
    from tailor.data.records import StepReport
    from tailor.errors import TailorError
    from tailor.models.vision import load_vision_model

    rows = [r for p in paths for r in iter_source(SourceConfig(path=str(p)), "raise", StepReport("eval"))
            if "messages" in r and any(m["role"] == "assistant" for m in r["messages"])]
    rows = rows[:max_examples] if max_examples else rows
    if not rows:
        raise TailorError("no conversations with a reference answer in the evaluation data", where="--data",
                          fix="give rows with messages (user turn with <image>, assistant reference) and images")
    if adapter or not (Path(model_dir) / "config.json").is_file():
        model, processor = load_vision_with_adapter(adapter or model_dir, base=model_dir if adapter else None)
    else:
        model, processor = load_vision_model(model_dir)
    return evaluate(model.eval(), processor, rows, out_dir, max_new_tokens)
