"""`tailor quickstart`: the embedded default job, composed only from the public stages.

Synthetic store-support domain (English + Chinese) -> byte-level BPE tokenizer -> DeepSeek-V3-style
model from a preset -> stage 1 pretraining on the domain documents -> stage 2 LoRA SFT on the
conversations -> evaluation of both stages on questions worded with held-out templates -> merge of
the adapter into a standalone model -> a results table and the commands to use the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tailor.config import QuickstartConfig, load_recipe, parse_preset_overrides


@dataclass
class QuickstartResult:
    out_dir: Path
    merged_dir: Path
    base_metrics: dict
    tuned_metrics: dict
    stages: dict = field(default_factory=dict)  # stage -> seconds
    info: dict = field(default_factory=dict)


def recipe_path(name: str) -> Path:
    """A recipe shipped with the package (configs/quickstart/ links to the same files)."""
    return Path(str(resources.files("tailor.quickstart") / name))


def run(cfg: QuickstartConfig, console=None) -> QuickstartResult:
    from rich.console import Console

    from tailor.adapters.merge import merge
    from tailor.quickstart.store_domain import generate_store_domain, write_domain
    from tailor.evaluation.report import write_report
    from tailor.evaluation.run import run as evaluate
    from tailor.models.loading import count_parameters
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer
    from tailor.training import train

    console = console or Console()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    info: dict = {}
    steps = 7

    def stage(n: int, title: str):
        console.rule(f"[bold cyan][{n}/{steps}] {title}")
        return time.perf_counter()

    t = stage(1, "domain data: store support desk, English + Chinese")
    domain = generate_store_domain(seed=cfg.seed, languages=tuple(cfg.languages), max_facts=cfg.max_facts,
                                   doc_variants=cfg.doc_variants, train_per_fact=cfg.train_per_fact)
    files = write_domain(domain, out / "data")
    info["example_question"] = domain.eval[0]["messages"][0]["content"] if domain.eval else "Hello"
    info["data"] = {"facts": len(domain.facts), "documents": len(domain.documents), "train": len(domain.train),
                    "eval": len(domain.eval)}
    console.print(f"{len(domain.facts)} facts, {len(domain.documents)} documents, {len(domain.train)} training "
                  f"conversations, {len(domain.eval)} held-out questions (templates never seen in training)")
    stages["data"] = time.perf_counter() - t

    t = stage(2, f"tokenizer: byte-level BPE, {cfg.vocab_size} tokens, DeepSeek chat template")
    corpus = list(domain.documents) + [m["content"] for r in domain.train for m in r["messages"]]
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, out / "tokenizer")
    stages["tokenizer"] = time.perf_counter() - t

    t = stage(3, f"model: {cfg.preset} built from its preset")
    model = init_model(cfg.preset, tokenizer, out_dir=out / "model-init", seed=cfg.seed,
                       **parse_preset_overrides(cfg.model_overrides))
    _, total = count_parameters(model)
    info["parameters"] = total
    console.print(f"{total:,} parameters -> {out / 'model-init'}")
    del model
    stages["model"] = time.perf_counter() - t

    def train_stage(n: int, title: str, name: str, base: Path, data: Path, overrides: list[str]):
        t0 = stage(n, title)
        recipe = load_recipe(recipe_path(f"{name}.yaml"), [
            f"model.path={base}", f"data.train=[{data}]", f"train.output_dir={out / name}",
            f"train.seed={cfg.seed}", "train.resume=true", *overrides])
        result = train(recipe)
        info[name] = result.metrics
        stages[name] = time.perf_counter() - t0
        return recipe, result

    _, pre_result = train_stage(4, "stage 1: pretraining from scratch on the domain documents (full training)",
                                "pretrain", out / "model-init", files["documents"], cfg.pretrain_overrides)
    sft, sft_result = train_stage(5, "stage 2: supervised fine-tuning with LoRA (loss on assistant tokens)",
                                  "sft", pre_result.final_dir, files["train"], cfg.sft_overrides)

    t = stage(6, "evaluation on held-out question wordings")
    base_eval = evaluate(pre_result.final_dir, [str(files["eval"])], sft.eval, out_dir=out / "eval" / "base")
    tuned_eval = evaluate(sft_result.final_dir, [str(files["eval"])], sft.eval, out_dir=out / "eval" / "tuned")
    stages["eval"] = time.perf_counter() - t

    t = stage(7, "merge the adapter into a standalone safetensors model")
    merged = merge(sft_result.final_dir, out / "merged")
    info["merge_max_abs_logit_diff"] = _merge_check(sft_result.final_dir, merged, tokenizer)
    stages["merge"] = time.perf_counter() - t

    result = QuickstartResult(out, merged, base_eval.metrics, tuned_eval.metrics, stages, info)
    (out / "quickstart_results.json").write_text(json.dumps({
        "base": base_eval.metrics, "tuned": tuned_eval.metrics, "seconds": stages, **info}, indent=2,
        ensure_ascii=False, default=str), encoding="utf-8")
    result.info["report"] = write_report(out)  # after quickstart_results.json, which the report reads
    print_summary(result, console, files["eval"])
    return result


def _merge_check(adapter_dir: Path, merged_dir: Path, tokenizer) -> float:
    """Max |logit difference| between base+adapter and the merged model loaded by plain transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    from tailor.adapters.loading import load_any

    ids = tokenizer("Return policy / 退货政策", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with_adapter, _ = load_any(adapter_dir)
        device = next(with_adapter.parameters()).device
        a = with_adapter.eval()(ids.to(device)).logits.float().cpu()
        b = AutoModelForCausalLM.from_pretrained(merged_dir).eval()(ids).logits.float()
    return float((a - b).abs().max())


def print_summary(r: QuickstartResult, console, eval_file) -> None:
    from rich.table import Table

    def pct(m: dict, k: str) -> str:
        return f"{100 * m[k]:.1f}%" if k in m else "-"

    table = Table(title="What the customization achieved (held-out question wordings)")
    table.add_column("metric")
    table.add_column("stage 1: pretrained base", justify="right")
    table.add_column("stage 2: + LoRA SFT", justify="right")
    rows = [("fact accuracy", "fact_accuracy"), ("  English", "fact_accuracy/en"), ("  Chinese", "fact_accuracy/zh"),
            ("exact match", "exact_match"), ("token F1", "token_f1")]
    for label, key in rows:
        if key in r.base_metrics or key in r.tuned_metrics:
            table.add_row(label, pct(r.base_metrics, key), pct(r.tuned_metrics, key))
    table.add_row("answer perplexity", f"{r.base_metrics['answer_perplexity']:.2f}", f"{r.tuned_metrics['answer_perplexity']:.2f}")
    table.add_row("questions", str(r.base_metrics["n"]), str(r.tuned_metrics["n"]))
    console.print(table)

    runs = Table(title="Stages")
    runs.add_column("stage")
    runs.add_column("seconds", justify="right")
    runs.add_column("detail")
    details = {
        "model": f"{r.info['parameters']:,} parameters",
        "pretrain": _train_detail(r.info.get("pretrain", {})),
        "sft": _train_detail(r.info.get("sft", {})),
        "merge": f"merged vs base+adapter max |Δlogit| = {r.info['merge_max_abs_logit_diff']:.2e}",
    }
    for name, secs in r.stages.items():
        runs.add_row(name, f"{secs:.1f}", details.get(name, ""))
    runs.add_row("total", f"{sum(r.stages.values()):.1f}", "")
    console.print(runs)
    console.print("[bold]Use the model:[/]")
    console.print(f"  tailor chat {r.merged_dir}")
    console.print(f"  tailor chat {r.merged_dir} --prompt \"{r.info['example_question']}\"")
    console.print(f"  tailor eval {r.merged_dir} --data {eval_file}")
    console.print(f"  python -c \"from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('{r.merged_dir}')\"")
    if "report" in r.info:
        console.print(f"  open {r.info['report']}   # the HTML report: curves, tables, worst examples")


def _train_detail(m: dict) -> str:
    if not m:
        return ""
    return (f"{m['steps']} steps, loss {m['train_loss']:.3f}, {m['trainable_parameters']:,} trainable, "
            f"{m['tokens_per_second']:.0f} tok/s, {m['precision']}")
