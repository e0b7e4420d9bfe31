"""Plans as rich tables (what `tailor plan` prints) and as one line (what the training pre-flight logs)."""

from __future__ import annotations

from tailor.plan.memory import GIB
from tailor.plan.planner import Plan

_COLOURS = {"fits": "green", "tight": "yellow", "does not fit": "red", "unknown": "dim"}


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def one_line(plan: Plan) -> str:
    """e.g. 'peak 11.2 GiB of 24.0 GiB (tight): weights 6.1, activations 3.0, ...; 1,850 tokens/s'."""
    parts = ", ".join(f"{k} {gib(v)}" for k, v in plan.memory.to_dict().items() if k != "peak" and v)
    speed = f"; {plan.tokens_per_second:,.0f} tokens/s" if plan.tokens_per_second else ""
    of = f" of {gib(plan.device_memory_bytes)} GiB" if plan.device_memory_bytes else ""
    return f"peak {gib(plan.peak_bytes)} GiB{of} ({plan.verdict}): {parts} GiB{speed}"


def print_plan(plan: Plan, console) -> None:
    """The recipe's plan: settings, memory breakdown, speed and duration, what is not modelled."""
    from rich.table import Table

    s = plan.settings
    title = (f"{plan.model} ({plan.model_type}, {plan.parameters / 1e9:.2f}B parameters): {s.method}, {s.precision}, "
             f"seq {s.seq_len} x micro-batch {s.batch_size} x accumulation {s.grad_accum}"
             + (", gradient checkpointing" if s.gradient_checkpointing else "")
             + (f", {'tensor parallel' if s.tensor_parallel > 1 else s.distributed} x {s.nproc}" if s.nproc > 1 else "") + f" on {plan.device}")
    console.print(f"[bold]{title}[/]")
    table = Table(show_header=True)
    table.add_column("memory per process")
    table.add_column("GiB", justify="right")
    for key, value in plan.memory.to_dict().items():
        if key != "peak":
            table.add_row(key, gib(value))
    colour = _COLOURS.get(plan.verdict, "white")
    table.add_row("[bold]peak[/]", f"[bold]{gib(plan.peak_bytes)}[/]")
    table.add_row("device memory", gib(plan.device_memory_bytes))
    table.add_row("verdict", f"[bold {colour}]{plan.verdict}[/]")
    console.print(table)
    console.print(f"trainable parameters {plan.trainable_parameters:,} of {plan.parameters:,}; "
                  f"{plan.flops_per_token / 1e9:.2f} GFLOPs per token")
    if plan.step_seconds is not None:
        sp = plan.speed
        console.print(f"speed: {plan.tokens_per_second:,.0f} tokens/s, {duration(plan.step_seconds)} per optimizer step "
                      f"(matmul peak {sp.matmul_flops / 1e12:.2f} TFLOP/s {sp.dtype} x efficiency {sp.efficiency:.0%}"
                      f"{', calibrated' if sp.calibrated else ''})")
        if sp.anchor:
            console.print(f"calibration: this run's own micro-batch ({sp.anchor['batch']} x {sp.anchor['seq']} tokens) "
                          f"timed at {sp.anchor['seconds']:.3f} s, the fit of the small shapes said "
                          f"{sp.anchor['fitted']:.3f} s: steps scaled by the measured one")
        elif sp.calibrated and sp.anchor_skipped:
            console.print(f"[dim]calibration: this run's own micro-batch not timed ({sp.anchor_skipped})[/]")
        if plan.settings.head_share < 1:
            console.print(f"output layer at {plan.settings.head_share:.0%} of the positions (train.logits: loss, "
                          "from the prepared data's loss tokens)")
        console.print(f"epoch {duration(plan.epoch_seconds)}; run {duration(plan.run_seconds)}"
                      + (f" ({plan.steps:,} steps)" if plan.steps else ""))
    for fix in plan.fixes:
        console.print(f"[bold]fix[/]: {fix.change}: {' '.join(fix.overrides)} -> peak {gib(fix.peak_bytes)} GiB")
    for note in plan.not_modelled:
        console.print(f"[dim]not modelled: {note}[/]")


def print_comparison(plans: list[Plan], console) -> None:
    """Every method side by side, the recommended one marked, and the smallest fix of those that do not fit."""
    from rich.table import Table

    table = Table(title="methods side by side (per process)")
    for col, just in (("method", "left"), ("trainable", "right"), ("weights", "right"), ("grads+optim", "right"),
                      ("activations", "right"), ("peak GiB", "right"), ("verdict", "left"), ("tokens/s", "right"),
                      ("run", "right"), ("smallest fix", "left")):
        table.add_column(col, justify=just)
    for p in plans:
        m = p.memory
        name = p.settings.method + (f" (last {p.settings.freeze_last_n})" if p.settings.method == "freeze" else "")
        colour = _COLOURS.get(p.verdict, "white")
        fix = p.fixes[0] if p.fixes else None
        table.add_row(("[bold]* " if p.recommended else "") + name + ("[/]" if p.recommended else ""),
                      f"{p.trainable_parameters / 1e6:,.1f}M", gib(m.weights + m.adapter), gib(m.gradients + m.optimizer),
                      gib(m.activations + m.temporary), gib(p.peak_bytes), f"[{colour}]{p.verdict}[/]",
                      f"{p.tokens_per_second:,.0f}" if p.tokens_per_second else "-", duration(p.run_seconds),
                      fix.change if fix else "")
    console.print(table)
    best = next((p for p in plans if p.recommended), None)
    console.print(f"recommended: [bold]{best.settings.method}[/] (the first that fits of full, dora, lora, freeze, qlora)" if best
                  else "[red]no method fits as configured[/]: see the fixes")
