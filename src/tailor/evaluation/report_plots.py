"""Plots for `tailor report`, each returned as a `data:image/png;base64,...` URI for a self-contained page.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot global state, no display).
"""

from __future__ import annotations

import base64
import io
import math

# (metrics.jsonl key, panel title): loss and eval loss share the first panel.
CURVES = (("learning_rate", "learning rate"), ("grad_norm", "gradient norm"), ("tokens_per_second", "tokens / s"))


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _render(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return png_uri(buf.getvalue())


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """Step-sorted values of one key; a resumed run logs some steps twice, and the later value wins."""
    by_step = {}
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and "step" in r:
            by_step[r["step"]] = v
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def training_curves(rows: list[dict]) -> str | None:
    """Loss (and eval loss), learning rate, grad norm and throughput against step; None when nothing is logged."""
    panels = []
    loss, eval_loss = _series(rows, "loss"), _series(rows, "eval_loss")
    if loss[0] or eval_loss[0]:
        panels.append(("loss", [("train loss", loss), ("eval loss", eval_loss)]))
    for key, title in CURVES:
        s = _series(rows, key)
        if s[0]:
            panels.append((title, [(title, s)]))
    if not panels:
        return None
    cols = min(2, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = _figure(5.2 * cols, 3.0 * nrows)
    for i, (title, series) in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for label, (x, y) in series:
            if x:
                ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
    fig.tight_layout()
    return _render(fig)


def length_histogram(outputs: list[int], references: list[int], unit: str = "tokens") -> str | None:
    """Overlaid histograms of answer and reference lengths."""
    if not outputs and not references:
        return None
    fig = _figure(6, 3)
    ax = fig.add_subplot(1, 1, 1)
    top = max(outputs + references + [1])
    bins = min(40, top + 1)
    for values, label in ((references, "reference"), (outputs, "model answer")):
        if values:
            ax.hist(values, bins=bins, range=(0, top + 1), alpha=0.55, label=f"{label} (mean {sum(values) / len(values):.1f})")
    ax.set_xlabel(f"length ({unit})")
    ax.set_ylabel("examples")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _render(fig)


def confusion_matrix(matrix: list[list[float]], labels: list[str]) -> str:
    """Counts as a heat map with the numbers written in (rows: true class, columns: predicted)."""
    n = len(matrix)
    size = min(12, 2.5 + 0.6 * n)
    fig = _figure(size, size * 0.85)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(r) for r in matrix if r), default=0) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:g}", ha="center", va="center", color="white" if v > peak / 2 else "black", fontsize=8)
    fig.tight_layout()
    return _render(fig)


def difference_plot(rows: list[dict], confidence: int = 95) -> str | None:
    """B−A with its CI per score, one strip per score with its own scale (BLEU and accuracy differ 100×).

    Green where B is better with confidence, red where it is worse, gray where the interval holds zero.
    """
    rows = [r for r in rows if r.get("diff") is not None and r.get("ci_low") is not None and math.isfinite(r["diff"])]
    if not rows:
        return None
    fig = _figure(7, 0.5 + 0.55 * len(rows))
    for i, r in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        sign = {"higher": 1, "lower": -1}.get(r.get("better"), 0)
        up, down = r["ci_low"] > 0, r["ci_high"] < 0  # the interval excludes zero
        color = "tab:gray" if not sign or not (up or down) else "tab:green" if (up if sign > 0 else down) else "tab:red"
        ax.errorbar(r["diff"], 0, xerr=[[r["diff"] - r["ci_low"]], [r["ci_high"] - r["diff"]]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        span = max(abs(r["ci_low"]), abs(r["ci_high"]), abs(r["diff"])) or 1.0
        ax.set_xlim(-1.15 * span, 1.15 * span)
        ax.set_yticks([0], [r["name"]])
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3, axis="x")
    ax.set_xlabel(f"B − A ({confidence}% paired bootstrap CI; each row on its own scale)")
    fig.tight_layout(h_pad=0.2)
    return _render(fig)
