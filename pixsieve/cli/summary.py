"""The summary ``pixsieve curate`` prints at the end of a run: totals, stages, shard errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from pixsieve.pipeline import RunResult


def print_summary(result: RunResult, console: Console) -> None:
    """Print totals, per-stage counters and shard errors as tables."""
    rec = result.record
    totals = rec["totals"]
    unreadable = (rec.get("inputs") or {}).get("unreadable", 0)
    rows = f"[bold]{totals['input']:,}[/] samples"
    if unreadable:  # the manifest's rows: samples read, plus one row per unreadable part
        samples = totals["input"] - unreadable
        files = f"{unreadable:,} unreadable part" + ("s" if unreadable > 1 else "")
        rows = f"[bold]{totals['input']:,}[/] rows ({samples:,} samples, {files})"
    console.print(
        f"{rows}: [green]{totals['kept']:,} kept[/], "
        f"[yellow]{totals['removed']:,} removed[/], [red]{totals['error']:,} errors[/] "
        f"in {rec['seconds']:.1f}s → {result.output}"
    )
    table = Table(title="stages", show_lines=False)
    for col in ("stage", "in", "kept", "dropped / errors", "seconds"):
        table.add_column(col, justify="left" if col in ("stage", "dropped / errors") else "right")
    for name, stats in rec["counters"].items():
        counts = stats["counts"]
        drops = ", ".join(
            f"{k.split('_', 1)[1]}={v:,}"
            for k, v in sorted(counts.items())
            if k.startswith(("dropped_", "errors_"))
        )
        notes = [  # what a stage noticed without dropping (e.g. no_caption_missing)
            f"{k}={v:,}"
            for k, v in sorted(counts.items())
            if k not in ("in", "kept") and not k.startswith(("dropped_", "errors_"))
        ]
        drops = "; ".join(filter(None, [drops, ", ".join(notes)]))
        table.add_row(
            name,
            f"{counts.get('in', 0):,}",
            f"{counts.get('kept', 0):,}",
            drops or "-",
            f"{stats.get('seconds', 0):.2f}",
        )
    console.print(table)
    if result.shard_errors:
        errs = Table(title="shard errors")
        for col in ("pass", "task", "error"):
            errs.add_column(col)
        for e in result.shard_errors:
            errs.add_row(e["pass"], e["task"], e["error"])
        console.print(errs)
