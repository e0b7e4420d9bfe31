"""The tables `tailor refresh` prints: drift, the superseded old held-out rows, the A/B gate and the decision."""

from __future__ import annotations

from tailor.mlops.refresh import RefreshResult

SHOWN = 20  # superseded rows listed on the console (all of them are in the run's data/superseded.jsonl)


def print_summary(r: RefreshResult, console) -> None:
    """The drift numbers, the gate's numbers and the decision, as tables."""
    from rich.table import Table

    if r.drift:
        d = r.drift
        t = Table(title=f"drift: {r.name} v{d['version']} on the new data ({d.get('n_new')} examples)")
        for col in ("measure", f"baseline ({d.get('baseline_source', 'recorded')})", "new data", "change", "threshold"):
            t.add_column(col, justify="left" if col == "measure" else "right")
        t.add_row("perplexity", f"{d['perplexity_baseline']:.3f}", f"{d['perplexity_new']:.3f}", f"{d['rise']:+.1%}",
                  f"+{d['threshold']:.0%}")
        if "task_metric" in d:
            t.add_row(d["task_metric"], f"{d['task_baseline']:.3f}", f"{d['task_new']:.3f}", f"{-d['task_drop']:+.3f}",
                      f"-{d.get('task_threshold', 0):.3f}")
        console.print(t)
        if d.get("note"):
            console.print(f"note: {d['note']}", highlight=False)
    sup = (r.gate or {}).get("superseded") or {}
    if sup.get("superseded"):
        t = Table(title=f"changed facts: {sup['superseded']} old held-out rows superseded by the new data "
                        f"({sup['kept']} kept for the gate's old set)")
        for col in ("question", "fact", "old -> new answer"):
            t.add_column(col, overflow="fold")
        for row in sup["listed"][:SHOWN]:
            t.add_row(row["question"], str(row["fact"] or ""), row["why"])
        console.print(t)
        more = f"{len(sup['listed']) - SHOWN} more; " if len(sup["listed"]) > SHOWN else ""
        console.print(f"superseded rows ({more}all with reasons): {sup['path']}", highlight=False)
    if r.gate:
        t = Table(title="A/B gate: production (A) vs candidate (B)")
        for col in ("held-out set", "metric", "A", "B", "change", "allowed", "result"):
            t.add_column(col, justify="right" if col in ("A", "B", "change", "allowed") else "left", no_wrap=True)
        for c in r.gate["checks"]:
            ppl = "perplexity" in c["metric"]
            change = f"{c['b'] / c['a'] - 1:+.1%}" if ppl and c["a"] else f"{c['b'] - c['a']:+.3f}"
            t.add_row(f"{c['set']} ({r.gate['sets'][c['set']]['n']})", "perplexity" if ppl else c["metric"], f"{c['a']:.4g}",
                      f"{c['b']:.4g}", change, c.get("bound", ""), "[green]pass[/]" if c["holds"] else "[red]FAIL[/]")
        console.print(t)
        if r.gate.get("note"):
            console.print(f"note: {r.gate['note']}", highlight=False)
    colour = {"promoted": "bold green", "rejected": "bold red"}.get(r.decision, "bold")
    what = {"promoted": f"promoted v{r.candidate} to production", "rejected": f"rejected v{r.candidate}; production stays "
            f"v{r.production}", "no-drift": f"no drift; production stays v{r.production}",
            "already-done": f"already done; production is v{r.production}"}[r.decision]
    console.print(f"[{colour}]{what}[/]: {r.reason}", highlight=False)
    if r.work_dir is not None:
        console.print(f"log: {r.work_dir / 'refresh.jsonl'}", highlight=False)
