"""`python -m tailor.ui.tasks TASK ...`: stage functions whose results the UI reads as JSON.

inspect PREPARED_DIR OUT_DIR   tailor.data.inspect on a prepared dataset (the same function as `tailor data
                               inspect`): OUT_DIR/inspect.json (statistics, checks, samples with their
                               loss-bearing segments) and OUT_DIR/token_lengths.png.
plan RECIPE OUT_JSON           tailor.plan.compare_methods: memory, fit and time of each training method
                               (full, freeze, LoRA, DoRA, QLoRA) for the recipe's model on this machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def inspect(prepared_dir: str, out_dir: str, samples: int = 3) -> Path:
    from tailor.data.inspect import inspect_prepared
    from tailor.data.prepare import open_prepared
    from tailor.models.loading import load_tokenizer

    prepared = open_prepared(prepared_dir)
    tok_path = prepared.manifest.get("tokenizer")
    tokenizer = load_tokenizer(tok_path, chat_template=prepared.manifest.get("chat_template")) if tok_path else None
    result = inspect_prepared(prepared, tokenizer, samples=samples, out_dir=out_dir)
    out = Path(out_dir) / "inspect.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "tokenized": tokenizer is not None, "stats": result.stats,
        "checks": [{"name": c.name, "ok": c.ok, "message": c.message, "severity": c.severity} for c in result.checks],
        "samples": [{"split": s["split"], "source": s["source"], "segments": s["segments"]} for s in result.samples],
        "histogram": str(result.histogram) if result.histogram else None,
    }, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    tmp.replace(out)
    for c in result.checks:
        print(("ok      " if c.ok else f"{c.severity:8}") + c.message)
    return out


def plan(recipe_path: str, out_json: str) -> Path:
    from tailor.config import load_recipe
    from tailor.plan import compare_methods

    recipe = load_recipe(recipe_path)
    rows = []
    for p in compare_methods(recipe):
        rows.append({"method": p.settings.method, "verdict": p.verdict, "recommended": p.recommended,
                     "trainable_parameters": p.trainable_parameters, "peak_gib": round(p.peak_bytes / 2**30, 3),
                     "device": p.device, "device_memory_gib": round(p.device_memory_bytes / 2**30, 1) if p.device_memory_bytes else None,
                     "tokens_per_second": p.tokens_per_second, "epoch_seconds": p.epoch_seconds, "run_seconds": p.run_seconds,
                     "fix": p.fixes[0].change if p.fixes else None})
    out = Path(out_json)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"model": recipe.model.path, "plans": rows}, indent=1, default=str), encoding="utf-8")
    tmp.replace(out)
    for r in rows:
        print(f"{r['method']:8} {r['verdict']:12} peak {r['peak_gib']} GiB" + ("  (recommended)" if r["recommended"] else ""))
    return out


def main(argv: list[str]) -> int:
    from tailor.errors import TailorError

    try:
        if argv[:1] == ["inspect"] and len(argv) == 3:
            print(f"wrote {inspect(argv[1], argv[2])}")
            return 0
        if argv[:1] == ["plan"] and len(argv) == 3:
            print(f"wrote {plan(argv[1], argv[2])}")
            return 0
    except TailorError as exc:
        print(f"error: {exc.message()}", file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
