"""The embedded proof of issue 20: the quickstart's store knowledge base as real documents, back to a model.

    flock /work/notes/bench.lock .venv/bin/python bench/documents_proof.py ingest [--out runs/docproof]
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/documents_proof.py train [--out runs/docproof]
        [--pretrained-from runs/OTHER]   # a control: SFT only, on another run's pretrained model

ingest renders the store domain of `tailor quickstart` (its seed and sizes) as a document set, per
language (en, zh): a PDF manual (headings, a price table, product pages, an FAQ; running header and
footer on every page) printed by headless Chromium, a Word file of policies (python-docx, with page
breaks), an HTML help page, and one scanned page (a screenshot saved as an image-only PDF). It then runs
`tailor data prepare` twice over them: text chunks for pretraining, and QA pairs from the documents'
structure and from templates over the tables' fields (the quickstart's training question wordings, as a
user would write them). It prints the OCR character accuracy of the scans against their known text and
the ingestion speed per source (pages/s), and checks that every fact's value traces to a source page.

train does what the quickstart does with its JSONL files (tokenizer, model from the preset, pretraining,
LoRA SFT, evaluation on the held-out question wordings), with the prepared document data instead.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tailor.quickstart.store_domain import (CATEGORIES, CITIES, POLICIES, PRODUCTS, REGIONS, STORE,  # noqa: E402
                                            generate_store_domain)
from tailor.quickstart.store_templates import FAQ_TITLE, PAGES, TEMPLATES  # noqa: E402

CHROMIUM = os.environ.get("TAILOR_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PRODUCT_TOPICS = ("price", "warranty", "weight", "battery_life", "capacity")
HEAD = {  # table headers per language; their snake_case names are the template fields
    "en": {"product": ["Product", "Price", "Warranty", "Weight", "Battery life", "Capacity"],
           "return_window": ["Category", "Return window"], "policy": ["Policy", "Value"],
           "shipping_time": ["Region", "Delivery time"], "store_hours": ["City", "Opening hours"]},
    "zh": {"product": ["产品", "价格", "保修期", "重量", "续航时间", "容量"],
           "return_window": ["类别", "退货期限"], "policy": ["政策", "内容"],
           "shipping_time": ["地区", "送达时间"], "store_hours": ["城市", "营业时间"]},
}
TITLES = {"en": {"manual": "{store} product manual", "policies": "{store} store policies", "help": "{store} help center",
                 "faq": "Frequently asked questions", "prices": "Price table"},
          "zh": {"manual": "{store}产品手册", "policies": "{store}店铺政策", "help": "{store}帮助中心",
                 "faq": "常见问题", "prices": "价格表"}}
CSS = ("body{font-family:'Noto Sans','Noto Sans CJK SC',sans-serif;font-size:11pt;line-height:1.45;margin:0}"
       "h1{font-size:22pt} h2{font-size:16pt;margin-top:18pt} table{border-collapse:collapse;margin:8pt 0}"
       "td,th{border:1px solid #333;padding:3pt 6pt;text-align:left} .page{break-before:page}")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            have = set(line.split(":", 1)[1].split())
            flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in have)
    return f"{cpu} [{flags}], {os.cpu_count()} cores, load average %.2f %.2f %.2f" % os.getloadavg()


# ---------------------------------------------------------------------------------------------
# the store domain as documents


def _kind(doc: str, lang: str) -> str:
    first = doc.split("\n", 1)[0]
    if first == FAQ_TITLE[lang].format(store=STORE[lang]):
        return "faq"
    for topic, pages in PAGES.items():
        if first == pages[lang][0].format(store=STORE[lang]):
            return topic
    return "product"


def _pages(domain, lang: str) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for doc in domain.documents:
        if bool(re.search("[\u4e00-\u9fff]", doc)) == (lang == "zh"):
            by.setdefault(_kind(doc, lang), []).append(doc)
    return by


def _e(text: str) -> str:
    return html.escape(text, quote=False)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _topic_html(doc: str, level: int = 2) -> str:
    title, *paras = doc.split("\n\n")
    return f"<h{level}>{_e(title)}</h{level}>" + "".join(f"<p>{_e(p)}</p>" for p in paras)


def _product_html(doc: str) -> str:
    title, blurb, *lines = doc.split("\n")
    return f"<h2>{_e(title)}</h2><p>{_e(blurb)}</p>" + "".join(f"<p>{_e(x)}</p>" for x in lines)


def _tables(lang: str) -> dict[str, list[list[str]]]:
    i = 0 if lang == "en" else 1
    products = []
    for en_name, zh_name, _, _, attrs in PRODUCTS.values():
        products.append([(en_name, zh_name)[i]] + [attrs[t][i] if t in attrs else "" for t in PRODUCT_TOPICS])
    return {
        "product": products,
        "return_window": [[names[0] if lang == "en" else zh, en if lang == "en" else zh_v]
                          for names, zh, en, zh_v in CATEGORIES.values()],
        "policy": [[(en_n, zh_n)[i], (en, zh_v)[i]] for en_n, zh_n, en, zh_v in POLICIES.values()],
        "shipping_time": [[(en_n, zh_n)[i], (en, zh_v)[i]] for en_n, zh_n, en, zh_v in REGIONS.values()],
        "store_hours": [[(en_n, zh_n)[i], (en, zh_v)[i]] for en_n, zh_n, en, zh_v in CITIES.values()],
    }


def _html_page(body: str, lang: str) -> str:
    return f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'><style>{CSS}</style></head><body>{body}</body></html>"


def render(domain, out: Path) -> dict:
    """Write the document set; returns {scan file: its known text} for the OCR accuracy."""
    import docx
    from docx.enum.text import WD_BREAK
    from PIL import Image
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        for lang in ("en", "zh"):
            store, pages, tables, head = STORE[lang], _pages(domain, lang), _tables(lang), HEAD[lang]
            t = {k: v.format(store=store) for k, v in TITLES[lang].items()}
            # the PDF manual: price table, the product topics' pages, product pages, the FAQ
            body = [f"<h1>{_e(t['manual'])}</h1><h2>{_e(t['prices'])}</h2>", _table(head["product"], tables["product"])]
            body += [f"<div class='page'>{_topic_html(d)}</div>" for topic in PRODUCT_TOPICS for d in pages.get(topic, [])]
            body += [f"<div class='page'>{_product_html(d)}</div>" for d in pages["product"]]
            body.append(f"<div class='page'><h2>{_e(t['faq'])}</h2>")
            for d in pages["faq"]:
                for pair in d.split("\n\n")[1:]:
                    body += [f"<p>{_e(line)}</p>" for line in pair.split("\n")]
            body.append("</div>")
            page.set_content(_html_page("".join(body), lang))
            page.pdf(path=str(out / f"manual_{lang}.pdf"), format="A4", display_header_footer=True,
                     margin={"top": "22mm", "bottom": "22mm", "left": "18mm", "right": "18mm"},
                     header_template=f"<div style='font-size:8pt;width:100%;text-align:center'>{_e(t['manual'])}</div>",
                     footer_template="<div style='font-size:8pt;width:100%;text-align:center'>"
                                     "<span class='pageNumber'></span> / <span class='totalPages'></span></div>")
            # the Word file of policies: two tables, then the policy and return-window pages, one per page
            d = docx.Document()
            d.add_heading(t["policies"], 1)
            for key in ("policy", "return_window"):
                rows = [head[key]] + tables[key]
                tbl = d.add_table(rows=len(rows), cols=len(rows[0]))
                for r, row in enumerate(rows):
                    for c, cell in enumerate(row):
                        tbl.cell(r, c).text = cell
            for topic in ("policy", "return_window"):
                for doc in pages.get(topic, []):
                    d.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
                    title, *paras = doc.split("\n\n")
                    d.add_heading(title, 2)
                    for para in paras:
                        d.add_paragraph(para)
            d.save(str(out / f"policies_{lang}.docx"))
            # the HTML help page: shipping and store hours
            body = [f"<h1>{_e(t['help'])}</h1>", _table(head["shipping_time"], tables["shipping_time"]),
                    _table(head["store_hours"], tables["store_hours"])]
            body += [f"<section>{_topic_html(doc)}</section>" for topic in ("shipping_time", "store_hours")
                     for doc in pages.get(topic, [])]
            (out / f"help_{lang}.html").write_text(_html_page("".join(body), lang), encoding="utf-8")
            # the scanned page: one store-hours page as a 288 dpi screenshot in an image-only PDF
            scan = pages["store_hours"][0]
            truth[f"scan_{lang}.pdf"] = scan
            shot = out / f"scan_{lang}.png"
            scale = 3
            ctx = browser.new_context(viewport={"width": 800, "height": 600}, device_scale_factor=scale)
            sp = ctx.new_page()
            sp.set_content(_html_page(f"<div style='padding:40px'>{_topic_html(scan, 1)}</div>", lang))
            sp.screenshot(path=str(shot), full_page=True)
            ctx.close()
            Image.open(shot).convert("L").save(out / f"scan_{lang}.pdf", resolution=96 * scale)
            shot.unlink()
        browser.close()
    (out / "scan_truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=2), encoding="utf-8")
    return truth


# ---------------------------------------------------------------------------------------------
# ingestion


def templates() -> list[str]:
    """The quickstart's training question wordings as the user's templates over the tables' fields.

    A table row names a category once, in the singular ("laptop"); the wordings' other forms are what a
    user writes with slot filters: {pl} -> {category|plural}, {Pl} -> {category|plural|capitalize},
    {Sg} -> {category|capitalize}, {one} -> {category|a} (in Chinese the filters leave the name as it is).
    """
    out = []
    for lang in ("en", "zh"):
        names = {k: [re.sub(r"[^\w]+", "_", h.lower()).strip("_") for h in v] for k, v in HEAD[lang].items()}
        slots = {t: (names["product"][0], names["product"][1 + i]) for i, t in enumerate(PRODUCT_TOPICS)}
        slots.update({t: tuple(names[t]) for t in ("return_window", "policy", "shipping_time", "store_hours")})
        for topic, (name, value) in slots.items():
            answers = TEMPLATES[topic][lang]["answer"]
            for i, q in enumerate(TEMPLATES[topic][lang]["train"]):
                a = answers[i % len(answers)]

                def fill(s: str) -> str:  # the table holds the singular: the other forms through slot filters
                    s = s.replace("{store}", STORE[lang]).replace("{v}", "{" + value + "}")
                    forms = {"sg": "", "Sg": "|capitalize", "pl": "|plural", "Pl": "|plural|capitalize", "one": "|a"}
                    return re.sub(r"\{(sg|Sg|pl|Pl|one)\}", lambda m: "{" + name + forms[m.group(1)] + "}", s)

                out.append(json.dumps({"messages": [{"role": "user", "content": fill(q)},
                                                    {"role": "assistant", "content": fill(a)}]}, ensure_ascii=False))
    return out


def sources(docs: Path, emit: str) -> list[dict]:
    doc = {"emit": emit}
    if emit == "qa":
        # Table rows train through the templates (full sentences); their bare-value pairs from structure
        # ("X的送达时间是多少？" -> "4到6个工作日") cost 4 points of held-out accuracy (docs/stages/documents.md).
        doc.update(qa_from=["faq"], templates=templates())
    return [{"path": str(docs / f"{kind}_{lang}.{ext}"), "name": f"{kind}_{lang}.{ext}", "document": doc}
            for kind, ext in (("manual", "pdf"), ("policies", "docx"), ("help", "html"), ("scan", "pdf"))
            for lang in ("en", "zh")]


def prepare(docs: Path, out: Path, emit: str):
    from tailor.config import build, DataRecipe
    from tailor.data.prepare import run

    data = {"sources": sources(docs, emit), "prepared_dir": str(out / f"prepared_{emit}"), "clean": ["nfkc", "whitespace", {"step": "chinese", "convert": "t2s"}]}
    if emit == "qa":
        # Template rows of two facts differ only in the names and values: near-duplicate by character
        # shingles, distinct facts. The quickstart's JSONL path de-duplicates nothing; exact de-dup stays on.
        data["dedup"] = {"near": False}
    # t2s: CJK fonts share glyphs between variant characters, and a PDF's text map may name the traditional
    # one (户 printed, 戶 extracted); OpenCC folds them back.
    recipe = build(DataRecipe, {"data": data}, "documents_proof")
    t0 = time.perf_counter()
    prepared = run(recipe, force=True)
    return prepared, time.perf_counter() - t0


def char_accuracy(ocr: str, truth: str, zh: bool) -> float:
    """1 - character edit distance / truth length, whitespace removed (zh) or collapsed (en)."""
    norm = (lambda s: re.sub(r"\s+", "", s)) if zh else (lambda s: re.sub(r"\s+", " ", s).strip())
    a, b = norm(ocr), norm(truth)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return 1 - prev[-1] / max(1, len(b))


def trace(domain, prepared_qa, prepared_text) -> dict:
    """Per eval fact: the source pages whose rows state its value next to its entity's name."""
    from tailor.quickstart.store_domain import _catalog

    names = {}
    for s in _catalog():
        names[(s.id, "en")] = s.names["en"]["sg"]
        names[(s.id, "zh")] = s.names["zh"]["sg"]
    rows = []
    for prep in (prepared_qa, prepared_text):
        for split in ("train", "eval", "test"):
            for r in prep.records(split):
                text = r.get("text") or "\n".join(m["content"] for m in r.get("messages", []))
                rows.append((text, r["source"], (r.get("meta") or {}).get("page"), (r.get("meta") or {}).get("section")))
    found, missing, example = 0, [], {}
    for f in domain.facts:
        name = names[(f.id, f.lang)]
        hits = sorted({(src, page) for text, src, page, _ in rows if f.answer in text and name in text and page is not None},
                      key=str)
        if hits:
            found += 1
            example.setdefault(f.topic, (f.id, f.lang, f.answer, hits[:3]))
        else:
            missing.append(f"{f.id}/{f.lang}")
    return {"facts": len(domain.facts), "traceable": found, "missing": missing[:10], "examples": example}


def store_domain(doc_variants: int | None = None):
    """The quickstart's domain with its own settings (seed, languages, sizes); `doc_variants` overrides one."""
    from tailor.config import QuickstartConfig

    q = QuickstartConfig()
    return generate_store_domain(seed=q.seed, languages=tuple(q.languages), doc_variants=doc_variants or q.doc_variants,
                                 train_per_fact=q.train_per_fact)


def ingest(args) -> None:
    out = Path(args.out)
    domain = store_domain(args.doc_variants)
    t0 = time.perf_counter()
    truth = render(domain, out / "docs")
    print(f"rendered the document set in {time.perf_counter() - t0:.1f}s -> {out / 'docs'}")
    print(f"machine: {machine()}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    text, t_text = prepare(out / "docs", out, "text")
    qa, t_qa = prepare(out / "docs", out, "qa")
    rep_text, rep_qa = text.report(), qa.report()
    print(f"\nprepare (text chunks for pretraining): {t_text:.1f}s\n" + (text.path / "report.txt").read_text(encoding="utf-8"))
    print(f"prepare (QA pairs for SFT): {t_qa:.1f}s\n" + (qa.path / "report.txt").read_text(encoding="utf-8"))
    speed = {}
    for step in rep_text["steps"]:
        for fmt, s in (step.get("documents") or {}).items():
            if isinstance(s, dict) and "pages" in s:
                speed[step["step"].split(" ", 1)[1]] = (s["pages"], s["seconds"], s["ocr_pages"])
    print("ingestion speed (text pass: read, structure, boilerplate, chunk):")
    for name, (pages, secs, ocr) in speed.items():
        print(f"  {name:22s} {pages:4d} pages {secs:7.2f}s {pages / secs if secs else 0:8.1f} pages/s{' (OCR)' if ocr else ''}")
    from tailor.config import DocumentConfig
    from tailor.data.documents import read_document

    accuracy = {}
    for name, known in truth.items():  # the blocks the loader read, in page order
        got = "\n".join(b.text for b in read_document(out / "docs" / name, DocumentConfig()).blocks)
        accuracy[name] = char_accuracy(got, known, zh=name.endswith("zh.pdf"))
        n = len(re.sub(r"\s+", "", known))
        print(f"OCR character accuracy {name}: {100 * accuracy[name]:.2f}% ({n} characters)")
    tr = trace(domain, qa, text)
    print(f"facts traceable to a source page: {tr['traceable']} / {tr['facts']}" + (f"; missing {tr['missing']}" if tr["missing"] else ""))
    for topic, (fid, lang, value, hits) in tr["examples"].items():
        print(f"  {fid} ({lang}) '{value}': " + ", ".join(f"{s} p.{p}" for s, p in hits))
    (out / "ingest.json").write_text(json.dumps({
        "machine": machine(), "text_report": rep_text, "qa_report": rep_qa, "ocr_accuracy": accuracy, "trace": tr,
        "speed": speed}, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# training, as the quickstart does


def train(args) -> None:
    from tailor.config import load_recipe
    from tailor.evaluation.run import run as evaluate
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer
    from tailor.quickstart.pipeline import recipe_path
    from tailor.quickstart.store_domain import write_domain
    from tailor.training import train as run_train

    out = Path(args.out)
    domain = store_domain()  # the held-out questions do not depend on the document variants
    files = write_domain(domain, out / "quickstart_data")  # the held-out questions (eval.jsonl)
    from tailor.data.prepare import open_prepared

    text, qa = open_prepared(out / "prepared_text"), open_prepared(out / "prepared_qa")
    docs = [r["text"] for s in ("train", "eval", "test") for r in text.records(s)]
    convs = [r for s in ("train", "eval", "test") for r in qa.records(s)]
    for name, rows in (("pretrain.jsonl", [{"text": d} for d in docs]),
                       ("sft.jsonl", [{"messages": r["messages"]} for r in convs])):
        with (out / name).open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{len(docs)} pretraining chunks, {len(convs)} SFT conversations, {len(domain.eval)} held-out questions")
    print(f"machine: {machine()}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    t0 = time.perf_counter()

    # --pretrained-from RUN, a control: this run's SFT data on RUN's pretrained model and tokenizer, written
    # beside this run's own results (sft_on_RUN/, eval_on_RUN/, train_results_on_RUN.json)
    tag = f"_on_{Path(args.pretrained_from).name}" if args.pretrained_from else ""

    def stage(name: str, base: Path, data: Path):
        recipe = load_recipe(recipe_path(f"{name}.yaml"), [
            f"model.path={base}", f"data.train=[{data}]", f"train.output_dir={out / (name + tag)}", "train.seed=0",
            "train.resume=true"])
        return recipe, run_train(recipe)

    pre_metrics = None
    if args.pretrained_from:
        pre_dir = Path(args.pretrained_from) / "pretrain" / "final"
        print(f"SFT only, on {pre_dir}")
    else:
        corpus = docs + [m["content"] for r in convs for m in r["messages"]]
        tokenizer = train_tokenizer(corpus, 4096, out / "tokenizer")
        init_model("deepseek-v3-tiny", tokenizer, out_dir=out / "model-init", seed=0)
        _, pre = stage("pretrain", out / "model-init", out / "pretrain.jsonl")
        pre_dir, pre_metrics = pre.final_dir, pre.metrics
    sft, tuned = stage("sft", pre_dir, out / "sft.jsonl")
    base_eval = evaluate(pre_dir, [str(files["eval"])], sft.eval, out_dir=out / f"eval{tag}" / "base")
    tuned_eval = evaluate(tuned.final_dir, [str(files["eval"])], sft.eval, out_dir=out / f"eval{tag}" / "tuned")
    secs = time.perf_counter() - t0
    result = {"base": base_eval.metrics, "tuned": tuned_eval.metrics, "seconds": secs,
              "pretrain": pre_metrics, "pretrained_from": args.pretrained_from, "sft": tuned.metrics}
    (out / f"train_results{tag}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    print(f"\n{'metric':24s} {'pretrained':>12s} {'+ LoRA SFT':>12s}")
    for key in ("fact_accuracy", "fact_accuracy/en", "fact_accuracy/zh", "exact_match", "token_f1"):
        if key in tuned_eval.metrics:
            print(f"{key:24s} {100 * base_eval.metrics.get(key, 0):11.1f}% {100 * tuned_eval.metrics[key]:11.1f}%")
    print(f"trained and evaluated in {secs / 60:.1f} min; the quickstart's JSONL path: 88.0% fact accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["ingest", "train"])
    ap.add_argument("--out", default="runs/docproof")
    ap.add_argument("--doc-variants", type=int, default=None,
                    help="differently worded copies of each page (default: the quickstart's, 8)")
    ap.add_argument("--pretrained-from", default=None, metavar="RUN",
                    help="train: skip tokenizer and pretraining, run the SFT on RUN's pretrained model (RUN/pretrain/final)")
    args = ap.parse_args()
    ingest(args) if args.what == "ingest" else train(args)


if __name__ == "__main__":
    main()
