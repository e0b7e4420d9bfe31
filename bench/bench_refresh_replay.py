"""Forgetting of unchanged facts in `tailor refresh` after a policy change, with and without replay.

The world of tests/mlops/test_refresh_changed_facts.py: v1 (a LoRA adapter on a micro Llama) knows 6 return
windows; month 2's data changes 3 of them to "75 days". For each refresh.replay value, the same refresh runs from
a copy of the month-1 registry (same production, same new data); reported per run: fact accuracy on the old
held-out rows of the UNCHANGED facts (production vs candidate: the forgetting), on the new held-out rows (the
changed facts: learning), the superseded count and the gate's decision.

    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_refresh_replay.py --replay 0,0.3,0.5,0.7 --seeds 0,1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TAILOR_DEVICE", "cpu")
os.environ.setdefault("TAILOR_PRECISION", "fp32")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model} ({os.cpu_count()} cpus); load {os.getloadavg()[0]:.2f}"


def scenario():
    spec = importlib.util.spec_from_file_location("changed_facts", ROOT / "tests" / "mlops" / "test_refresh_changed_facts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def one(work: Path, replay: float, seed: int) -> dict:
    from tailor.cli import main

    registry = work / f"registry-r{replay}-s{seed}.db"
    shutil.copy(work / "registry.db", registry)
    t = time.time()
    rc = main(["refresh", str(work / "refresh.yaml"), f"refresh.replay={replay}", f"train.seed={seed}",
               f"refresh.registry={registry}", f"refresh.work_dir={work / f'refresh-r{replay}-s{seed}'}"])
    run = next((work / f"refresh-r{replay}-s{seed}" / "bot").iterdir())
    gate = json.loads((run / "steps" / "gate.json").read_text())
    sup = json.loads((run / "steps" / "supersede.json").read_text())
    old, new = gate["sets"]["old"], gate["sets"]["new"]
    return {"replay": replay, "seed": seed, "rc": rc, "passed": gate["passed"], "superseded": sup["superseded"],
            "unchanged_prod": old["production"]["fact_accuracy"], "unchanged_cand": old["candidate"]["fact_accuracy"],
            "new_prod": new["production"]["fact_accuracy"], "new_cand": new["candidate"]["fact_accuracy"],
            "old_ppl_change": old["candidate"]["perplexity"] / old["production"]["perplexity"] - 1,
            "seconds": round(time.time() - t, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replay", default="0,0.3,0.5,0.7")
    ap.add_argument("--seeds", default="0,1", help="training seeds of the refresh (the month-1 world is built once)")
    ap.add_argument("--work", default="runs/bench_refresh_replay")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(args.work).resolve()
    if not (work / "registry.db").is_file():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        os.environ["TAILOR_REGISTRY"] = str(work / "registry.db")
        scenario().world(work)
    rows = [one(work, float(r), int(s)) for r in args.replay.split(",") for s in args.seeds.split(",")]
    print(f"\nmachine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch threads "
          f"{torch.get_num_threads()}; {sys.argv[0]} {' '.join(sys.argv[1:])}")
    import yaml

    tol = yaml.safe_load((work / "refresh.yaml").read_text())["refresh"]["tolerance"]
    print(f"gate: the candidate may lose at most {tol} fact accuracy on the unchanged facts' old held-out rows")
    print("replay  seed  superseded  unchanged facts prod -> cand  changed facts (new) prod -> cand  old ppl  gate")
    for r in rows:
        print(f"{r['replay']:<7} {r['seed']:<5} {r['superseded']:<11} {r['unchanged_prod']:.3f} -> {r['unchanged_cand']:.3f}"
              f"{'':15} {r['new_prod']:.3f} -> {r['new_cand']:.3f}{'':19} {r['old_ppl_change']:+.1%}  "
              f"{'pass' if r['passed'] else 'FAIL'}")
    for replay in sorted({r["replay"] for r in rows}):
        sel = [r for r in rows if r["replay"] == replay]
        print(f"replay {replay}: mean unchanged-fact accuracy {statistics.mean(r['unchanged_cand'] for r in sel):.3f} "
              f"(production {statistics.mean(r['unchanged_prod'] for r in sel):.3f}), new-fact accuracy "
              f"{statistics.mean(r['new_cand'] for r in sel):.3f}, gate passed {sum(r['passed'] for r in sel)}/{len(sel)}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
