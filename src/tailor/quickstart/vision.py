"""`tailor quickstart domain=vision`: product inspection with a tiny DeepSeek-VL-style model, built only from the stages.

Synthetic inspection images (tailor.quickstart.inspection_domain) -> byte-level BPE tokenizer -> deepseek-vl-tiny
built from its preset -> stage 1: contrastive alignment of the vision tower and projector on image-caption pairs
(train.objective=contrastive) -> stage 2: full SFT with rotation and colour-jitter augmentation of the training images
(the language model starts untrained, so LoRA on its frozen random embeddings would learn little; LoRA SFT on a
pretrained VLM is `adapter.method=lora`) -> evaluation on held-out
images with held-out question wordings (greedy answers, batched) -> a results table. final/ loads with plain
AutoModelForImageTextToText.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tailor.config import QuickstartConfig, load_recipe

YES = ("Defective", "不合格")
NO = ("Good", "合格")


def run(cfg: QuickstartConfig, console=None) -> dict:
    from rich.console import Console

    from tailor.evaluation.vision import write_report
    from tailor.models.tokenizer import train_tokenizer
    from tailor.models.vision import init_vision_model
    from tailor.quickstart.inspection_domain import generate, write
    from tailor.training import train

    console = console or Console()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    info: dict = {}

    def stage(n: int, title: str) -> float:
        console.rule(f"[bold cyan][{n}/5] {title}")
        return time.perf_counter()

    t = stage(1, "domain data: product inspection images, English + Chinese questions")
    dom = generate(out / "data", seed=cfg.seed, train_images=cfg.vision_train_images, eval_images=cfg.vision_eval_images)
    files = write(dom, out / "data")
    info["data"] = {"train_images": cfg.vision_train_images, "train_rows": len(dom.train), "captions": len(dom.captions),
                    "eval_images": cfg.vision_eval_images, "eval_questions": len(dom.eval)}
    console.print(f"{len(dom.train)} training conversations (2 questions each) on {cfg.vision_train_images} images, {len(dom.eval)} held-out "
                  f"questions on {cfg.vision_eval_images} unseen images (wordings never seen in training)")
    stages["data"] = time.perf_counter() - t

    t = stage(2, "tokenizer and model: deepseek-vl-tiny (SigLIP tower + aligner + Llama LM) from its preset")
    texts = [m["content"].replace("<image>", "") for r in dom.train + dom.eval for m in r["messages"]]
    tokenizer = train_tokenizer(texts, 600, out / "tokenizer")
    model, _ = init_vision_model(cfg.vision_preset, tokenizer, out_dir=out / "model-init", seed=cfg.seed)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    del model
    stages["model"] = time.perf_counter() - t

    def train_stage(name: str, base: Path, data: Path, overrides: list[str]):
        recipe = load_recipe(None, [f"model.path={base}", f"data.train=[{data}]", f"train.output_dir={out / name}",
                                    f"train.seed={cfg.seed}", "train.resume=true", "data.max_length=160",
                                    "train.precision=fp32", "train.save_steps=100000", "train.logging_steps=20",
                                    *overrides])
        result = train(recipe)
        info[name] = result.metrics
        return result

    t = stage(3, "stage 1: contrastive alignment of the vision tower + projector on image-caption pairs (CLIP loss)")
    aligned = train_stage("contrastive", out / "model-init", files["captions"], [
        "train.objective=contrastive", "adapter.method=full", "adapter.vision_tower=train", "adapter.projector=train",
        f"train.epochs={cfg.vision_contrastive_epochs}", "train.batch_size=32", "train.lr=2e-3", "train.warmup_ratio=0.05",
        *cfg.pretrain_overrides])
    stages["contrastive"] = time.perf_counter() - t

    t = stage(4, "stage 2: SFT of the whole model (language model, projector, vision tower)")
    tuned = train_stage("sft", aligned.final_dir, files["train"], [
        "train.objective=sft", "adapter.method=full", "adapter.vision_tower=train", "adapter.projector=train",
        f"train.epochs={cfg.vision_sft_epochs}", "train.batch_size=16", "train.lr=1e-3", "train.warmup_ratio=0.05",
        # train-only image augmentation: defect type 89.5% -> 94.0% on the held-out images (docs/stages/vision.md)
        "data.augment.image.rotation=20", "data.augment.image.color_jitter=0.15", *cfg.sft_overrides])
    stages["sft"] = time.perf_counter() - t

    t = stage(5, "evaluation on held-out images and wordings")
    base_eval = evaluate_dir(aligned.final_dir, dom.eval, out / "data")
    tuned_eval = evaluate_dir(tuned.final_dir, dom.eval, out / "data")
    stages["eval"] = time.perf_counter() - t

    results = {"base": base_eval["metrics"], "tuned": tuned_eval["metrics"], "seconds": stages, **info}
    (out / "quickstart_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str),
                                                  encoding="utf-8")
    examples = [{**t, "answer_base": b["answer"], "answer_tuned": t["answer"]}
                for b, t in zip(base_eval["rows"], tuned_eval["rows"])]
    (out / "eval_answers.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples),
                                            encoding="utf-8")
    report = write_report(out / "report.html", [{k: v for k, v in e.items() if k != "answer"} for e in examples[:80]],
                          {"base": base_eval["metrics"], "tuned": tuned_eval["metrics"]}, "Product inspection: held-out images")
    console.print(f"report with thumbnails: {report}")
    print_table(results, console, tuned.final_dir)
    return results


def score(rows: list[dict], answers: list[str]) -> dict:
    """Defect/no-defect accuracy (defect questions), defect-type accuracy (type questions), per language."""
    from tailor.quickstart.inspection_domain import TYPE_ANSWER

    hits: dict[str, list[bool]] = {}
    for r, a in zip(rows, answers):
        a = a.strip()
        if r["kind"] == "defect":
            said_yes = a.startswith(YES)
            said_no = a.startswith(NO) and not said_yes
            ok = said_no if r["defect"] == "none" else said_yes
            key = "defect_accuracy"
        else:
            names = TYPE_ANSWER[r["lang"]]
            ok = names[r["defect"]] in a and not any(n in a for d, n in names.items() if d != r["defect"] and n not in names[r["defect"]])
            key = "type_accuracy"
        hits.setdefault(key, []).append(ok)
        hits.setdefault(f"{key}/{r['lang']}", []).append(ok)
    metrics = {k: sum(v) / len(v) for k, v in hits.items()}
    metrics["n"] = len(rows)
    return metrics


def evaluate_dir(model_dir: Path, rows: list[dict], root: Path) -> dict:
    """Greedy answers of the model in `model_dir` to the held-out rows (tailor.evaluation.vision), scored."""
    from tailor.evaluation.vision import generate_answers
    from tailor.models.vision import load_vision_model

    model, processor = load_vision_model(model_dir, dtype="float32")
    rows = [{**r, "images": [str(root / p) for p in r["images"]]} for r in rows]
    answers = generate_answers(model.eval(), processor, rows, max_new_tokens=12, batch=50)
    scored = [{"images": r["images"], "question": r["messages"][0]["content"], "reference": r["messages"][1]["content"],
               "answer": a} for r, a in zip(rows, answers)]
    return {"metrics": score(rows, answers), "rows": scored}


def print_table(r: dict, console, final: Path) -> None:
    from rich.table import Table

    table = Table(title="Product inspection: held-out images, held-out question wordings")
    table.add_column("metric")
    table.add_column("stage 1: aligned base", justify="right")
    table.add_column("stage 2: + SFT", justify="right")
    for label, key in (("defect / no defect", "defect_accuracy"), ("  English", "defect_accuracy/en"),
                       ("  Chinese", "defect_accuracy/zh"), ("defect type", "type_accuracy"),
                       ("  English", "type_accuracy/en"), ("  Chinese", "type_accuracy/zh")):
        table.add_row(label, f"{100 * r['base'].get(key, 0):.1f}%", f"{100 * r['tuned'].get(key, 0):.1f}%")
    table.add_row("questions", str(r["base"]["n"]), str(r["tuned"]["n"]))
    console.print(table)
    runs = Table(title="Stages")
    runs.add_column("stage")
    runs.add_column("seconds", justify="right")
    runs.add_column("detail")
    detail = {"model": f"{r['parameters']:,} parameters",
              "contrastive": _detail(r.get("contrastive", {})), "sft": _detail(r.get("sft", {}))}
    for name, secs in r["seconds"].items():
        runs.add_row(name, f"{secs:.1f}", detail.get(name, ""))
    runs.add_row("total", f"{sum(r['seconds'].values()):.1f}", "")
    console.print(runs)
    console.print(f"[bold]Use the model:[/] python -c \"from transformers import AutoModelForImageTextToText; "
                  f"AutoModelForImageTextToText.from_pretrained('{final}')\"")
    console.print(f"  tailor chat {final} --image {Path(final).parents[1] / 'data' / 'images' / 'eval-0001.png'} "
                  "--prompt \"Is this part defective?\"")


def _detail(m: dict) -> str:
    if not m:
        return ""
    return f"{m['steps']} steps, loss {m['train_loss']:.3f}, {m['trainable_parameters']:,} trainable"
