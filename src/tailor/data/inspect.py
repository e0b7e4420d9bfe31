"""`tailor data inspect`: see exactly what the model will be trained on, and fail loudly on the usual traps.

Checks that fail (exit non-zero): the template ends assistant turns with a token that is not the
tokenizer's EOS, or EOS never receives loss (the model would never learn to stop); empty assistant
turns. Reported as warnings: samples truncated by data.max_length (count and share).

Loss-bearing text is highlighted in the terminal and wrapped in ⟪ ⟫ in the plain-text form.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tailor.data.tokenize import length_summary

LOSS_OPEN, LOSS_CLOSE = "⟪", "⟫"


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    severity: str = "error"  # error = fails the command; warning = reported only


@dataclass
class InspectResult:
    stats: dict                       # split -> {"all": {...}, "sources": {source: {...}}}
    checks: list[Check]
    samples: list[dict] = field(default_factory=list)   # {"split", "source", "text" (marked), "segments"}
    histogram: Path | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.severity == "error"]


def loss_segments(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The decoded text cut into (text, carries_loss) runs, token boundaries respected."""
    segs: list[tuple[str, bool]] = []
    run: list[int] = []
    state = None
    for tok, lab in zip(input_ids, labels):
        on = lab != -100
        if state is not None and on != state:
            segs.append((tokenizer.decode(run, skip_special_tokens=False), state))
            run = []
        run.append(tok)
        state = on
    if run:
        segs.append((tokenizer.decode(run, skip_special_tokens=False), bool(state)))
    return segs


def marked_text(segments: list[tuple[str, bool]]) -> str:
    return "".join(f"{LOSS_OPEN}{t}{LOSS_CLOSE}" if on else t for t, on in segments)


def _eos_checks(tokenizer, rows, max_length: int | None = None) -> list[Check]:
    eos = tokenizer.eos_token_id
    ends: dict[int, int] = defaultdict(int)
    eos_trained = False
    chat_rows = 0
    for ids, labels in rows:
        if all(lab != -100 for lab in labels):
            continue  # pretraining text: every token carries loss; turn ends do not apply
        chat_rows += 1
        for i, lab in enumerate(labels):
            if lab == -100:
                continue
            eos_trained |= lab == eos
            if i + 1 == len(labels) or labels[i + 1] == -100:
                if i + 1 == len(labels) and max_length and len(labels) >= max_length:
                    continue  # cut by truncation: reported by the truncation check, not a template problem
                ends[ids[i]] += 1
    if not chat_rows:
        return []
    checks = []
    name = tokenizer.convert_ids_to_tokens(eos) if eos is not None else None
    if eos is None:
        checks.append(Check("eos", False, "the tokenizer has no EOS token: generation cannot stop"))
    elif not eos_trained:
        checks.append(Check("eos", False, f"the EOS token {name!r} never receives loss: the model will not learn to stop "
                                          "(the chat template's end-of-turn is not EOS, or truncation cut it off)"))
    else:
        checks.append(Check("eos", True, f"EOS {name!r} receives loss"))
    wrong = {tokenizer.convert_ids_to_tokens(t): n for t, n in ends.items() if t != eos}
    if wrong and eos is not None:
        total = sum(ends.values())
        top = ", ".join(f"{t!r} ({n})" for t, n in sorted(wrong.items(), key=lambda kv: -kv[1])[:3])
        checks.append(Check("template_eos", False,
                            f"{sum(wrong.values())} of {total} assistant turns end on a token other than EOS {name!r}: {top} "
                            "(the chat template's end-of-turn is not the tokenizer's EOS)"))
    else:
        checks.append(Check("template_eos", True, "every assistant turn ends with EOS"))
    return checks


def _empty_turns(records: list[dict]) -> int:
    return sum(1 for r in records for m in r.get("messages") or [] if m["role"] == "assistant" and not m["content"].strip())


def inspect_prepared(prepared, tokenizer, samples: int = 3, out_dir: str | Path | None = None,
                     max_length: int | None = None) -> InspectResult:
    """Statistics, checks, rendered samples and a token-length histogram of a prepared dataset."""
    stats: dict = {}
    checks: list[Check] = []
    shown: list[dict] = []
    lengths_by_split: dict[str, list[int]] = {}
    all_rows = []
    empty = truncated = total = 0
    max_length = max_length or prepared.manifest.get("max_length")
    for split, n in prepared.splits.items():
        if not n:
            continue
        records = prepared.records(split)
        empty += _empty_turns(records)
        per_source: dict[str, dict] = defaultdict(lambda: {"rows": 0})
        for r in records:
            per_source[r.get("source") or "?"]["rows"] += 1
        ds = prepared.tokenized(split)
        entry = {"rows": n, "kinds": prepared.manifest.get("kinds", {}).get(split, {})}
        if ds is not None:
            ids_col, lab_col = ds["input_ids"], ds["labels"]
            sources = ds["source"] if "source" in ds.column_names else ["?"] * len(ds)
            wheres = ds["where"] if "where" in ds.column_names else [""] * len(ds)
            lengths = [len(x) for x in ids_col]
            lengths_by_split[split] = lengths
            by_src: dict[str, list[int]] = defaultdict(list)
            loss_by_src: dict[str, int] = defaultdict(int)
            for src, ids, labels in zip(sources, ids_col, lab_col):
                by_src[src or "?"].append(len(ids))
                loss_by_src[src or "?"] += sum(1 for x in labels if x != -100)
            for src, ls in by_src.items():
                per_source[src].update({"tokenized": len(ls), "tokens": sum(ls), "loss_tokens": loss_by_src[src], **length_summary(ls)})
            loss = sum(loss_by_src.values())
            entry.update({"tokenized": len(ds), "tokens": sum(lengths), "loss_tokens": loss,
                          "loss_share": round(loss / max(sum(lengths), 1), 4), **length_summary(lengths)})
            tstats = prepared.manifest.get("token_stats", {}).get(split) or {}
            n_trunc = tstats.get("truncated")
            if n_trunc is None and max_length:
                n_trunc = sum(1 for x in lengths if x >= max_length)
            truncated += n_trunc or 0
            total += len(ds)
            all_rows.extend(zip(ids_col, lab_col))
            for i in range(min(samples, len(ds))):
                segs = loss_segments(tokenizer, ids_col[i], lab_col[i])
                shown.append({"split": split, "source": sources[i], "where": wheres[i], "section": _section(records, wheres[i]),
                              "segments": segs, "text": marked_text(segs)})
        entry["sources"] = dict(per_source)
        stats[split] = entry
    if tokenizer is not None and all_rows:
        checks.extend(_eos_checks(tokenizer, all_rows, max_length))
    checks.append(Check("empty_assistant", empty == 0, f"{empty} empty assistant turns" if empty else "no empty assistant turns"))
    if total:
        share = truncated / total
        checks.append(Check("truncated", truncated == 0,
                            f"{truncated} of {total} samples ({share:.1%}) truncated by data.max_length={max_length}"
                            + ("; raise data.max_length or drop long rows with a length step" if truncated else ""),
                            severity="warning"))
    hist = None
    if out_dir is not None and lengths_by_split:
        hist = save_histogram(lengths_by_split, Path(out_dir) / "token_lengths.png", max_length)
    return InspectResult(stats, checks, shown, hist)


def _section(records: list[dict], where: str) -> str:
    """The document section (provenance of rows read from documents) of the record at `where`, or ""."""
    for r in records:
        if r.get("where") == where:
            return str((r.get("meta") or {}).get("section") or "")
    return ""


def save_histogram(lengths_by_split: dict[str, list[int]], path: Path, max_length: int | None = None) -> Path:
    """A PNG histogram of token lengths per split (the max_length cut drawn as a line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, lengths in lengths_by_split.items():
        ax.hist(lengths, bins=min(50, max(5, len(set(lengths)))), alpha=0.6, label=f"{split} ({len(lengths)})")
    if max_length:
        ax.axvline(max_length, color="red", linestyle="--", label=f"max_length {max_length}")
    ax.set_xlabel("tokens per sample")
    ax.set_ylabel("samples")
    ax.set_title("Token lengths")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_result(result: InspectResult, console) -> None:
    """Tables of statistics, the checks, and samples with loss-bearing text highlighted."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="dataset")
    for col in ("split", "source", "rows", "tokenized", "tokens", "loss tokens", "mean len", "p95", "max"):
        table.add_column(col, justify="right" if col not in ("split", "source") else "left")
    for split, e in result.stats.items():
        table.add_row(split, "(all)", str(e["rows"]), str(e.get("tokenized", "-")), str(e.get("tokens", "-")),
                      str(e.get("loss_tokens", "-")), str(e.get("length_mean", "-")), str(e.get("length_p95", "-")),
                      str(e.get("length_max", "-")))
        for src, s in e["sources"].items():
            table.add_row("", src, str(s["rows"]), str(s.get("tokenized", "-")), str(s.get("tokens", "-")),
                          str(s.get("loss_tokens", "-")), str(s.get("length_mean", "-")), str(s.get("length_p95", "-")),
                          str(s.get("length_max", "-")))
    console.print(table)
    for c in result.checks:
        mark = "[green]ok[/]" if c.ok else ("[bold red]FAIL[/]" if c.severity == "error" else "[yellow]warn[/]")
        console.print(f"{mark}  {c.name}: {c.message}")
    for s in result.samples:
        origin = ", ".join(x for x in (s["source"], s.get("where"), s.get("section") and f"section: {s['section']}") if x)
        console.print(f"\n[bold]{s['split']} sample[/] ({origin}); [reverse green]highlighted[/] = carries loss:")
        text = Text()
        for chunk, on in s["segments"]:
            text.append(chunk, style="reverse green" if on else "dim")
        console.print(text)
    if result.histogram:
        console.print(f"\ntoken-length histogram: {result.histogram}")
