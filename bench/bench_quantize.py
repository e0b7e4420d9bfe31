"""Quantization on the quickstart model, CPU: size, perplexity and decode speed against float32, as ratios.

    python bench/bench_quantize.py --model runs/quickstart/merged --eval-data runs/quickstart/data/eval.jsonl
    python bench/bench_quantize.py            # builds a quickstart-like deepseek-v3-tiny (about 2 minutes)
    python bench/bench_quantize.py --size-sweep 256x4 512x8 1024x8   # int8-dynamic decode vs model size

The size sweep builds dense Llama models (random weights: speed only, no quality) of hidden size x layers
with the quickstart-sized tokenizer and reports int8-dynamic decode against float32, interleaved in one
process: the int8 gain grows with the share of decoding time spent in weight reads.

Targets (issue 6): int8 linear weights <= 30% of their float32 bytes, perplexity rise <= 2%, decode
>= 1.3x faster than float32. Every model is measured by `tailor.evaluation.measure` in its own fresh
process, float32 baseline first, in this one run; --threads fixes torch's thread count (default 1:
on a shared machine more threads mostly measure the neighbours).

The decode ratio to trust is the interleaved one: all models timed in turns in one process, through the
same `model.generate` loop `tailor eval` uses (eager, no compilation), each model with the speed-ups of
`tailor.runtime.enable` as `tailor eval` installs them. The quantized models run their MoE experts through
tailor's decode path (`runtime.quantized.Int8Experts`); float32 is timed twice, with the same expert path on
float weights (`runtime.experts.use_decode_experts`, installed by enable) and with transformers' grouped
experts: `decode_speedup_same_runtime` is int8 against the former.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def build_model(work: Path, steps: int) -> tuple[Path, Path]:
    """A deepseek-v3-tiny with a domain tokenizer, pretrained for `steps` steps on the store documents."""
    from tailor.config import Recipe, build
    from tailor.quickstart.store_domain import generate_store_domain, write_domain
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer
    from tailor.training import train

    domain = generate_store_domain(seed=0)
    files = write_domain(domain, work / "data")
    corpus = list(domain.documents) + [m["content"] for r in domain.train for m in r["messages"]]
    tokenizer = train_tokenizer(corpus, 4096, work / "tokenizer")
    init_model("deepseek-v3-tiny", tokenizer, out_dir=work / "init")
    recipe = build(Recipe, {"model": {"path": str(work / "init")}, "data": {"train": [str(files["documents"])],
                                                                             "max_length": 128},
                            "adapter": {"method": "full"},
                            "train": {"objective": "pretrain", "max_steps": steps, "batch_size": 16, "lr": 3e-3,
                                      "output_dir": str(work / "pretrain"), "save_steps": steps}}, "bench")
    return train(recipe).final_dir, files["eval"]


def interleaved_decode(model_dirs: list, new_tokens: int, rounds: int, float_decode_experts: Path | None = None,
                       per_round: dict | None = None) -> dict[str, float]:
    """Median decode tokens/s of each model, timed in turns within one process (keys: the directories);
    with `per_round` (a dict), every round's rates are stored in it too.

    Every model loads as `tailor eval` loads it, so MoE experts run tailor's decode path
    (`runtime.experts.experts_forward`) in float and quantized models alike. With `float_decode_experts` (a float
    model directory), that model is timed a second time (key "<dir>+transformers-experts") with
    transformers' own grouped experts, to show what the decode path alone is worth."""
    import statistics

    from tailor import runtime
    from tailor.adapters.loading import load_any
    from tailor.evaluation.measure import decode_speed
    from tailor.runtime.experts import use_transformers_experts

    def load(path):
        model, tokenizer = load_any(path)
        runtime.enable(model)  # as `tailor eval` loads it
        return model, tokenizer

    loaded = {str(d): load(d) for d in model_dirs}
    if float_decode_experts is not None:
        model, tokenizer = load(float_decode_experts)
        if use_transformers_experts(model):
            loaded[f"{float_decode_experts}+transformers-experts"] = (model, tokenizer)
    rates: dict[str, list[float]] = {k: [] for k in loaded}
    for _ in range(rounds):
        for key, (model, tokenizer) in loaded.items():
            rates[key].append(decode_speed(model, tokenizer, new_tokens=new_tokens, repeats=1)["decode_tokens_per_s"])
    if per_round is not None:
        per_round.update(rates)
    return {k: statistics.median(v) for k, v in rates.items()}


def paired_ratio(per_round: dict, key: str, base: str) -> float:
    """Median over rounds of key's rate / base's rate in the same round: load that drifts between rounds
    moves both members of a pair, so this is steadier than a ratio of medians on a shared machine."""
    import statistics

    return statistics.median(a / b for a, b in zip(per_round[key], per_round[base]))


def size_sweep(shapes: list[str], work: Path, tokenizer_dir: str | None, new_tokens: int, rounds: int) -> dict:
    """int8-dynamic vs float32 decode tokens/s on dense Llama models of each `HIDDENxLAYERS` shape."""
    from tailor.compression.quantize import quantize
    from tailor.models.loading import count_parameters, load_tokenizer
    from tailor.models.presets import init_model
    from tailor.models.tokenizer import train_tokenizer

    if tokenizer_dir:
        tokenizer = load_tokenizer(tokenizer_dir)
    else:
        from tailor.quickstart.store_domain import generate_store_domain

        domain = generate_store_domain(seed=0)
        tokenizer = train_tokenizer(list(domain.documents), 4096, work / "tokenizer")
    out = {}
    for shape in shapes:
        hidden, layers = (int(x) for x in shape.lower().split("x"))
        fp32, int8 = work / f"llama-{shape}", work / f"llama-{shape}-int8-dynamic"
        model = init_model("llama-tiny", tokenizer, out_dir=fp32, hidden_size=hidden, intermediate_size=hidden * 43 // 16,
                           num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                           num_key_value_heads=max(1, hidden // 128))
        params = count_parameters(model)[1]
        del model
        quantize(fp32, "int8-dynamic", int8)
        rates = interleaved_decode([fp32, int8], new_tokens, rounds)
        ratio = rates[str(int8)] / rates[str(fp32)]
        out[shape] = {"parameters": params, "float32_tokens_per_s": rates[str(fp32)],
                      "int8_dynamic_tokens_per_s": rates[str(int8)], "ratio": ratio}
        print(f"llama {shape} ({params / 1e6:.1f}M parameters): float32 {rates[str(fp32)]:.1f} tok/s, "
              f"int8-dynamic {rates[str(int8)]:.1f} tok/s: x{ratio:.2f} (target >= 1.3)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="float model directory (default: build one)")
    ap.add_argument("--eval-data", help="held-out chat records or text (default: the built domain's eval.jsonl)")
    ap.add_argument("--methods", nargs="+", default=["int8-dynamic", "int8-weight", "int4-weight"])
    ap.add_argument("--max-examples", type=int, default=64)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15, help="interleaved decode timing rounds")
    ap.add_argument("--train-steps", type=int, default=120, help="pretraining steps when building the model")
    ap.add_argument("--out", help="keep the quantized models and bench_quantize.json here")
    ap.add_argument("--size-sweep", nargs="+", metavar="HIDDENxLAYERS",
                    help="instead: int8-dynamic decode speed on dense Llama models of these shapes (random weights)")
    ap.add_argument("--tokenizer", help="tokenizer for --size-sweep (default: train one on the synthetic domain)")
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # inherited by the measuring processes

    import torch

    torch.set_num_threads(a.threads)
    from tailor.evaluation.measure import before_after_table, measure_isolated
    from tailor.compression.quantize import quantize

    work = Path(a.out or tempfile.mkdtemp(prefix="bench_quantize_"))
    work.mkdir(parents=True, exist_ok=True)
    if a.size_sweep:
        sweep = size_sweep(a.size_sweep, work, a.tokenizer, a.decode_tokens, a.rounds)
        (work / "bench_quantize_sweep.json").write_text(json.dumps(sweep, indent=2), encoding="utf-8")
        return
    if a.model:
        model_dir, eval_data = Path(a.model), a.eval_data
    else:
        t = time.perf_counter()
        model_dir, built_eval = build_model(work, a.train_steps)
        eval_data = a.eval_data or str(built_eval)
        print(f"built and pretrained deepseek-v3-tiny in {time.perf_counter() - t:.0f}s -> {model_dir}")
    if not eval_data:
        sys.exit("pass --eval-data with --model")
    kw = dict(max_examples=a.max_examples, decode_tokens=a.decode_tokens)
    base = measure_isolated(model_dir, [eval_data], **kw)
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                          f"torch {torch.__version__}, {a.threads} thread(s)",
               "model": str(model_dir), "eval_data": eval_data, "float32": base, "methods": {},
               "load_average_start": os.getloadavg()}
    print(results["machine"])
    for method in a.methods:
        out = work / method
        manifest = quantize(model_dir, method, out, group_size=32)
        after = measure_isolated(out, [eval_data], **kw)
        ratios = {"linear_weight_bytes": manifest["linear_weight_bytes"]["ratio"],
                  "size_on_disk": after["size_on_disk_mb"] / base["size_on_disk_mb"],
                  "perplexity": after["perplexity"] / base["perplexity"],
                  "decode_speedup": after["decode_tokens_per_s"] / base["decode_tokens_per_s"],
                  "ttft": after["ttft_ms"] / base["ttft_ms"]}
        results["methods"][method] = {"ratios": ratios, "after": after,
                                      "quantized_layers": len(manifest["quantized"]),
                                      "not_quantized": manifest["not_quantized"]}
        before_after_table(base, after, f"{method} vs float32 ({results['machine']})")
        print(f"{method}: linear weights {ratios['linear_weight_bytes']:.1%} of fp32 (target <= 30%), "
              f"perplexity x{ratios['perplexity']:.4f} (target <= 1.02), decode in separate processes "
              f"x{ratios['decode_speedup']:.2f} (the interleaved ratio below is the one to trust; target >= 1.3 for int8), "
              f"whole weight file x{ratios['size_on_disk']:.2f}")
    # Decode speed again, interleaved in this one process (float32, method, float32, method, ...), median of
    # the rounds: on a shared machine, load that changes between two processes shifts their ratio.
    # All models run their MoE experts through tailor's decode path (runtime.experts.experts_forward), as `tailor eval`
    # loads them: the ratios compare int8 with float32 in one runtime, apples to apples. float32 is timed once
    # more with transformers' grouped experts, to show what that path alone is worth.
    t = time.perf_counter()
    per_round: dict = {}
    rates = interleaved_decode([model_dir] + [work / m for m in a.methods], a.decode_tokens, a.rounds,
                               float_decode_experts=model_dir, per_round=per_round)
    results["interleaved_decode"], results["interleaved_rounds"] = rates, per_round
    results["interleaved_seconds"] = time.perf_counter() - t
    grouped = f"{model_dir}+transformers-experts"
    if grouped in rates:
        results["float32_decode_experts_speedup"] = paired_ratio(per_round, str(model_dir), grouped)
        print(f"float32 with tailor's decode-experts path: x{results['float32_decode_experts_speedup']:.2f} of float32 "
              f"with transformers' grouped experts")
    for method in a.methods:
        key = str(work / method)
        ratios = results["methods"][method]["ratios"]
        ratios["decode_speedup_same_runtime"] = ratios["decode_speedup_interleaved"] = \
            paired_ratio(per_round, key, str(model_dir))
        line = (f"{method}: interleaved decode (median of {a.rounds} paired rounds) "
                f"x{ratios['decode_speedup_same_runtime']:.2f} of float32 in the same runtime (target >= 1.3 for int8)")
        if grouped in rates:
            ratios["decode_speedup_vs_transformers_experts"] = paired_ratio(per_round, key, grouped)
            line += f", x{ratios['decode_speedup_vs_transformers_experts']:.2f} of float32 with transformers' experts"
        print(line)
    # The float32 model once more, last: how far two measurements of the same model differ here.
    again = measure_isolated(model_dir, [eval_data], **kw)
    results["float32_again"] = again
    results["noise_decode_ratio"] = again["decode_tokens_per_s"] / base["decode_tokens_per_s"]
    print(f"noise: float32 measured again decodes x{results['noise_decode_ratio']:.2f} of the first measurement")
    results["load_average_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {results['load_average_start']}, at end {results['load_average_end']}")
    (work / "bench_quantize.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"results -> {work / 'bench_quantize.json'}")


if __name__ == "__main__":
    main()
