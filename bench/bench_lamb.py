"""AdamW vs LAMB at a large batch on the quickstart data: validation loss after the same number of steps.

One model (a llama-micro preset, random init, the quickstart tokenizer), full fine-tuning (SFT) on the quickstart's
training conversations with an effective batch of --batch x --accum sequences, --steps optimizer steps, a learning-rate
grid per optimizer (linear warm-up over 10% of the steps, then cosine). Reported per run: training loss of the last
logged steps, validation loss on the held-out question wordings (eval.jsonl), seconds. The same seed (weights, data
order) for every run, so the optimizer and its learning rate are the only differences.

    flock /work/notes/bench.lock env OMP_NUM_THREADS=2 python bench/bench_lamb.py \\
        --data /work/artifacts/qs14/data --tokenizer /work/artifacts/qs14/tokenizer --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from machine_line import machine  # noqa: E402  (bench/ is the script's folder)

os.environ.setdefault("TAILOR_DEVICE", "cpu")
os.environ.setdefault("TAILOR_PRECISION", "fp32")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def one(work: Path, init: Path, data: Path, optimizer: str, lr: float, a) -> dict:
    from tailor.config import load_recipe
    from tailor.training import train
    from tailor.training.callbacks import read_metrics

    out = work / f"{optimizer}-lr{lr:g}"
    t = time.time()
    res = train(load_recipe(None, [
        f"model.path={init}", f"data.train=[{data / 'train.jsonl'}]", f"data.eval=[{data / 'eval.jsonl'}]",
        "adapter.method=full", f"train.optimizer={optimizer}", f"train.lr={lr}", f"train.max_steps={a.steps}",
        f"train.batch_size={a.batch}", f"train.grad_accum={a.accum}", "train.warmup_ratio=0.1", "train.weight_decay=0.01",
        f"train.output_dir={out}", f"train.logging_steps={max(a.steps // 10, 1)}", f"train.save_steps={a.steps + 1}",
        f"train.eval_steps={a.steps}", "train.keep_best=false", f"data.max_length={a.max_length}", "train.seed=0",
        "train.report_to=[]", "train.preflight=off", "train.mfu_probe_seconds=0"]))
    losses = [m["loss"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
    return {"optimizer": optimizer, "lr": lr, "train_loss_last": losses[-1], "train_loss_first": losses[0],
            "eval_loss": res.metrics["eval_loss"], "seconds": round(time.time() - t, 1), "steps": res.metrics["steps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/artifacts/qs14/data", help="a quickstart data folder (train.jsonl, eval.jsonl)")
    ap.add_argument("--tokenizer", default="/work/artifacts/qs14/tokenizer")
    ap.add_argument("--preset", default="llama-micro")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--adamw-lrs", default="1e-3,3e-3,1e-2")
    ap.add_argument("--lamb-lrs", default="1e-3,3e-3,1e-2")
    ap.add_argument("--work", default="runs/bench_lamb")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import torch

    from tailor.models.presets import init_model
    from tailor.models.loading import load_tokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(a.work).resolve()
    init = work / "init"
    init_model(a.preset, load_tokenizer(a.tokenizer), out_dir=init, seed=0)
    rows = [one(work, init, Path(a.data), opt, float(lr), a)
            for opt, lrs in (("adamw", a.adamw_lrs), ("lamb", a.lamb_lrs)) for lr in lrs.split(",")]
    print(f"\nmachine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch threads "
          f"{torch.get_num_threads()}; {a.preset}, batch {a.batch} x accum {a.accum} = {a.batch * a.accum} sequences "
          f"of <= {a.max_length} tokens, {a.steps} steps")
    print("optimizer  lr       train loss first -> last   eval loss   seconds")
    for r in rows:
        print(f"{r['optimizer']:<10} {r['lr']:<8g} {r['train_loss_first']:.3f} -> {r['train_loss_last']:.3f}"
              f"{'':12} {r['eval_loss']:.3f}       {r['seconds']}")
    for opt in ("adamw", "lamb"):
        best = min((r for r in rows if r["optimizer"] == opt), key=lambda r: r["eval_loss"])
        print(f"best {opt}: lr {best['lr']:g}, eval loss {best['eval_loss']:.3f}")
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
