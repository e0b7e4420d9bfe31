"""`tailor report RUN_DIR`: one self-contained HTML page (plus a Markdown summary) for a run folder.

The folder may be a training output dir (metrics.jsonl, train_summary.json), an evaluation dir
(eval_results.json, examples.jsonl), a comparison dir (compare.json) or the quickstart out_dir; the
report looks up to three levels down for those files and renders one section per folder it finds.
Plots are inline base64 PNGs and the styles inline CSS, so the page opens anywhere with no network.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tailor.errors import TailorError
from tailor.evaluation import report_plots as P
from tailor.evaluation.compare import direction, primary_key, score_keys, text_field

MARKERS = {"quickstart": ("quickstart_results.json",), "compare": ("compare.json",),
           "train": ("metrics.jsonl", "train_summary.json"), "eval": ("eval_results.json", "examples.jsonl")}
_ORDER = ("quickstart", "compare", "train", "eval")
_SKIP_DIRS = ("tensorboard",)  # TensorBoard event folders hold nothing the report reads
MAX_DEPTH = 3
WORST = 10
CELL_CHARS = 600

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c9d1d9;font-size:13px}nav{margin-top:10px}nav a{color:#9ecbff;margin-right:14px;font-size:13px}
main{padding:16px 32px;max-width:1200px}section{background:#fff;border:1px solid #d0d7de;border-radius:6px;
padding:12px 20px;margin:16px 0}h2{font-size:18px;border-bottom:1px solid #d0d7de;padding-bottom:6px}
h3{font-size:15px;margin-top:18px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}td pre,pre{white-space:pre-wrap;word-break:break-word;
margin:0;font-size:12px;max-width:420px}img{max-width:100%;border:1px solid #eee;margin:6px 0}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.note{color:#57606a;font-size:13px}
"""


@dataclass
class Section:
    title: str
    anchor: str
    html: str
    md: str


# ---------------------------------------------------------------------------------------------
# Small helpers


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    if isinstance(v, int):
        return f"{v:,}"
    return "–" if v is None else str(v)


def _signed(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.4g}"


def _cut(text: str, n: int = CELL_CHARS) -> str:
    return text if len(text) <= n else text[:n] + f" … [{len(text) - n} more characters]"


def _html_table(headers: list[str], rows: list[list], text_cols: tuple[int, ...] = ()) -> str:
    """Escaped table; columns in text_cols are free text (whitespace kept, long text cut)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            if i in text_cols:
                cells.append(f"<td><pre>{html.escape(_cut(v if isinstance(v, str) else _fmt(v)))}</pre></td>")
            elif isinstance(v, str):
                cells.append(f"<td>{html.escape(v)}</td>")
            else:
                cells.append(f'<td class="num">{html.escape(_fmt(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _md_cell(v, width: int = 80) -> str:
    text = " ".join((v if isinstance(v, str) else _fmt(v)).split())
    text = text if len(text) <= width else text[:width - 1] + "…"
    # `<` and `&` escaped, so tags in example text stay text where the Markdown is rendered (pull requests)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")


def _md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">' if uri else ""


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TailorError(f"invalid JSON: {exc.msg} (line {exc.lineno})", where=str(path)) from None


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Rows, and the count of unreadable lines (a run killed mid-write leaves a cut last line)."""
    rows: list[dict] = []
    bad = 0
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return root.resolve().name if rel == "." else rel


def _anchor(kind: str, path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return kind + "-" + ("".join(c if c.isalnum() else "-" for c in rel) if rel != "." else "root")


# ---------------------------------------------------------------------------------------------
# Discovery


def discover(run_dir: str | Path) -> list[tuple[str, Path]]:
    """(kind, folder) for every renderable folder at or below run_dir: quickstart, then compare, train, eval."""
    root = Path(run_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if depth < MAX_DEPTH and d not in _SKIP_DIRS
                             and not d.startswith(("checkpoint-", ".")))
        for kind, markers in MARKERS.items():
            if any(m in filenames for m in markers):
                found.append((kind, here))
    return sorted(found, key=lambda kp: (_ORDER.index(kp[0]), len(kp[1].parts), str(kp[1])))


# ---------------------------------------------------------------------------------------------
# Sections


def quickstart_section(path: Path, root: Path) -> Section:
    q = _read_json(path / "quickstart_results.json")
    base, tuned = q.get("base", {}), q.get("tuned", {})
    keys = [k for k in {**base, **tuned} if isinstance(base.get(k, tuned.get(k)), (int, float))]
    headers = ["metric", "stage 1: pretrained base", "stage 2: + LoRA SFT"]
    rows = [[k, base.get(k), tuned.get(k)] for k in keys]
    stages = [[k, float(v)] for k, v in (q.get("seconds") or {}).items()]
    info = [[k, v] for k, v in q.items() if isinstance(v, (int, float, str))]
    body = "<h3>What the customization achieved (held-out question wordings)</h3>" + _html_table(headers, rows)
    md = _md_table(headers, rows)
    if stages:
        body += "<h3>Stages (seconds)</h3>" + _html_table(["stage", "seconds"], stages)
        md += "\n\n" + _md_table(["stage", "seconds"], stages)
    if info:
        body += "<h3>Run</h3>" + _html_table(["item", "value"], info, (1,))
    return Section(f"quickstart: {_name(path, root)}", _anchor("quickstart", path, root), body, md)


def train_section(path: Path, root: Path) -> Section:
    summary = _read_json(path / "train_summary.json") if (path / "train_summary.json").is_file() else {}
    rows, bad = _read_jsonl(path / "metrics.jsonl")
    flat = []
    for k, v in summary.items():
        items = v.items() if isinstance(v, dict) else [(None, v)]
        for k2, v2 in items:
            v2 = json.dumps(v2, ensure_ascii=False) if isinstance(v2, (dict, list)) else v2
            flat.append([f"{k}.{k2}" if k2 is not None else k, v2])
    last = {}
    for r in rows:
        for k in ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second"):
            if isinstance(r.get(k), (int, float)):
                last[k] = [k, r.get("step"), r[k]]
    body, md = "", ""
    if flat:
        body += "<h3>Summary</h3>" + _html_table(["item", "value"], flat)
        md += _md_table(["item", "value"], flat)
    curves = P.training_curves(rows)
    if curves:
        body += "<h3>Training curves</h3>" + _img(curves, "training curves")
    if last:
        body += "<h3>Last logged values</h3>" + _html_table(["metric", "step", "value"], list(last.values()))
        md += "\n\nLast logged values:\n\n" + _md_table(["metric", "step", "value"], list(last.values()))
    note = f"{len(rows)} log rows in metrics.jsonl" + (f"; {bad} unreadable lines skipped" if bad else "")
    body += f'<p class="note">{html.escape(note)}</p>'
    return Section(f"training: {_name(path, root)}", _anchor("train", path, root), body, md + f"\n\n_{note}_")


def _confusion(metrics: dict, path: Path) -> list[str]:
    """Confusion matrix images: PNGs the evaluation saved, else one drawn from a `confusion_matrix` entry."""
    imgs = []
    for p in sorted(path.glob("*confusion*.png")):
        data = p.read_bytes()
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            imgs.append(P.png_uri(data))
    cm = metrics.get("confusion_matrix")
    if not imgs and cm:
        matrix, labels = (cm.get("matrix"), cm.get("labels") or cm.get("classes")) if isinstance(cm, dict) else (cm, None)
        if isinstance(matrix, list) and matrix and all(isinstance(r, list) for r in matrix):
            imgs.append(P.confusion_matrix(matrix, [str(x) for x in (labels or range(len(matrix)))]))
    return imgs


def _metric_tables(metrics: dict) -> tuple[str, str]:
    """The overall metrics, a metric × language table for `metric/lang` keys, and nested entries."""
    plain = [[k, v] for k, v in metrics.items() if "/" not in k and not isinstance(v, (dict, list))]
    groups: dict[str, dict] = {}
    for k, v in metrics.items():
        if "/" in k and not isinstance(v, (dict, list)):
            base, group = k.split("/", 1)
            groups.setdefault(base, {})[group] = v
    body, md = _html_table(["metric", "value"], plain), _md_table(["metric", "value"], plain)
    if groups:
        names = sorted({g for d in groups.values() for g in d})
        rows = [[base, metrics.get(base), *[d.get(g) for g in names]] for base, d in groups.items()]
        body += "<h3>Per language / group</h3>" + _html_table(["metric", "all", *names], rows)
        md += "\n\nPer language / group:\n\n" + _md_table(["metric", "all", *names], rows)
    for k, v in metrics.items():
        if k == "confusion_matrix" or not isinstance(v, (dict, list)):
            continue
        if isinstance(v, dict) and all(not isinstance(x, (dict, list)) for x in v.values()):
            body += f"<h3>{html.escape(k)}</h3>" + _html_table(["key", "value"], [[str(a), b] for a, b in v.items()])
        else:
            body += (f"<h3>{html.escape(k)}</h3><details><summary>JSON</summary><pre>"
                     f"{html.escape(json.dumps(v, indent=1, ensure_ascii=False))}</pre></details>")
    return body, md


def worst_examples(examples: list[dict], n: int = WORST) -> tuple[str | None, list[tuple[int, dict]]]:
    """(the ranking score, the n worst (index, example) pairs); a lower-is-better score ranks reversed."""
    keys = score_keys(examples)
    key = primary_key(keys)
    if key is None:
        return None, []
    sign = 1 if direction(key) >= 0 else -1
    others = [k for k in keys if k != key and direction(k) == 1]

    def value(ex, k, s=1):
        v = ex.get(k)
        ok = isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
        return s * v if ok else math.inf  # examples without the score sort last

    ranked = sorted(enumerate(examples), key=lambda it: (value(it[1], key, sign), *[value(it[1], k) for k in others], it[0]))
    return key, ranked[:n]


def eval_section(path: Path, root: Path) -> Section:
    metrics = _read_json(path / "eval_results.json") if (path / "eval_results.json").is_file() else {}
    examples, bad = _read_jsonl(path / "examples.jsonl")
    body, md = _metric_tables(metrics) if metrics else ("", "")
    for uri in _confusion(metrics, path):
        body += "<h3>Confusion matrix</h3>" + _img(uri, "confusion matrix")
    if examples:
        from tailor.evaluation.metrics import tokens

        outs = [len(tokens(text_field(e, "output"))) for e in examples]
        refs = [len(tokens(text_field(e, "reference"))) for e in examples if text_field(e, "reference")]
        body += "<h3>Answer lengths</h3>" + _img(P.length_histogram(outs, refs, "words; characters for Chinese"),
                                                 "length histogram")
        key, worst = worst_examples(examples)
        if key:
            keys = score_keys(examples)
            headers = ["#", "input", "reference", "output", *keys]
            rows = [[str(i), text_field(e, "input"), text_field(e, "reference"), text_field(e, "output"),
                     *[e.get(k) for k in keys]] for i, e in worst]
            body += f"<h3>Worst examples (lowest {html.escape(key)})</h3>" + _html_table(headers, rows, (1, 2, 3))
            md += f"\n\nWorst examples (lowest {key}):\n\n" + _md_table(headers, rows)
        body += _explanations(path)
        note = f"{len(examples)} examples in examples.jsonl" + (f"; {bad} unreadable lines skipped" if bad else "")
        body += f'<p class="note">{html.escape(note)}</p>'
    return Section(f"evaluation: {_name(path, root)}", _anchor("eval", path, root),
                   body or '<p class="note">no metrics or examples saved</p>', md)


def _explanations(path: Path) -> str:
    """explanations.jsonl (tailor eval --explain) as highlighted texts."""
    rows, _ = _read_jsonl(path / "explanations.jsonl") if (path / "explanations.jsonl").is_file() else ([], 0)
    if not rows:
        return ""
    from tailor.evaluation.explain import highlighted_html

    items = "".join(f'<li><p>{highlighted_html(r)}</p><p class="note">true {html.escape(str(r["label"]))}, predicted '
                    f'{html.escape(str(r["predicted"]))} (p(true) {r["prob_label"]:.3f}); top: '
                    f'{html.escape(", ".join(r["top"]))}</p></li>' for r in rows)
    return ("<h3>Token attributions (integrated gradients)</h3><p class=\"note\">green pushes toward the predicted label, "
            f"red against it</p><ol>{items}</ol>")


def compare_section(path: Path, root: Path) -> Section:
    c = _read_json(path / "compare.json")
    boot = c.get("bootstrap", {})
    conf = int(round(100 * boot.get("confidence", 0.95)))
    src = [["A", c.get("a", {}).get("source", "")], ["B", c.get("b", {}).get("source", "")],
           ["paired examples", c.get("n")], ["pairing", c.get("pairing", "")],
           ["bootstrap", f"{boot.get('resamples')} resamples, seed {boot.get('seed')}"]]
    body, md = _html_table(["", ""], src), _md_table(["", ""], src)
    gate = c.get("gate") or []
    if gate:
        cells = "".join(f"<tr><td>{html.escape(g['requirement'])}</td><td class=\"num\">{html.escape(_fmt(g['value']))}"
                        f"</td><td class=\"{'pass' if g['holds'] else 'fail'}\">{'pass' if g['holds'] else 'FAIL'}</td></tr>"
                        for g in gate)
        body += ("<h3>Gate</h3><table><thead><tr><th>requirement</th><th>measured</th><th>result</th></tr></thead>"
                 f"<tbody>{cells}</tbody></table>")
        md += "\n\nGate:\n\n" + _md_table(["requirement", "measured", "result"],
                                         [[g["requirement"], g["value"], "pass" if g["holds"] else "FAIL"] for g in gate])
    headers = ["metric", "better", "n", "A", "B", "B − A", f"{conf}% CI", "B wins", "ties", "B loses"]
    rows = [[r["name"], r["better"], r["n"], r["mean_a"], r["mean_b"], _signed(r["diff"]),
             f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]", r["wins"], r["ties"], r["losses"]] for r in c.get("scores", [])]
    body += f"<h3>Per-example scores (paired bootstrap {conf}% CI of B − A)</h3>" + _html_table(headers, rows)
    md += "\n\nPer-example scores (paired bootstrap CI of B − A):\n\n" + _md_table(headers, rows)
    body += _img(P.difference_plot([r for r in c.get("scores", []) if "/" not in r["name"]], conf), "difference plot")
    corpus = [[r["name"], r["better"], r["a"], r["b"], _signed(r["diff"])] for r in c.get("corpus", [])]
    if corpus:
        ch = ["metric", "better", "A", "B", "B − A"]
        body += "<h3>Corpus metrics (no per-example values, so no CI)</h3>" + _html_table(ch, corpus)
        md += "\n\nCorpus metrics:\n\n" + _md_table(ch, corpus)
    top = c.get("top_differences") or []
    if top:
        key = c.get("primary") or "score"
        th = ["#", "input", "reference", "output A", "output B", f"Δ {key}"]
        trows = [[str(t["index"]), t["input"], t["reference"], t["output_a"], t["output_b"], _signed(t["score_diff"])] for t in top]
        body += f"<h3>Where they differ most (by |Δ {html.escape(key)}|, then by output)</h3>" + _html_table(th, trows, (1, 2, 3, 4))
        md += "\n\nWhere they differ most:\n\n" + _md_table(th, trows)
    return Section(f"comparison: {_name(path, root)}", _anchor("compare", path, root), body, md)


BUILDERS = {"quickstart": quickstart_section, "compare": compare_section, "train": train_section, "eval": eval_section}


# ---------------------------------------------------------------------------------------------
# The page


def render(sections: list[Section], title: str, run_dir: Path) -> tuple[str, str]:
    """(HTML page, Markdown summary) of the sections."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    main = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.html}</section>' for s in sections)
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(str(run_dir))} · generated {stamp} by tailor report</p><nav>{nav}</nav></header>"
            f"<main>{main}</main></body></html>\n")
    md = f"# {title}\n\n`{run_dir}` · generated {stamp}\n\n" + "\n\n".join(f"## {s.title}\n\n{s.md}" for s in sections) + "\n"
    return page, md


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a self-contained report.html and a report.md beside it; return the HTML path.

    `out` defaults to RUN_DIR/report.html; the Markdown summary takes the same name with `.md`.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise TailorError(f"{root} is not a folder", where="RUN_DIR",
                          fix="pass a training output dir, an eval/compare --out dir or the quickstart out_dir")
    found = discover(root)
    if not found:
        markers = sorted({m for ms in MARKERS.values() for m in ms})
        raise TailorError(f"nothing to report in {root}: no {', '.join(markers)} within {MAX_DEPTH} levels",
                          where=str(root), fix="run `tailor train`, `tailor eval --out DIR` or `tailor compare --out DIR` first")
    sections = [BUILDERS[kind](path, root) for kind, path in found]
    page, md = render(sections, f"tailor report: {root.resolve().name}", root)
    out_path = Path(out) if out else root / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    out_path.with_suffix(".md").write_text(md, encoding="utf-8")
    return out_path
