"""The report's caption section: the lowest-scoring image–caption pairs, kept and removed.

One streaming pass over the manifest's ``status``, ``reason`` and ``clip_score`` columns keeps
a bottom-k per group (kept; removed for ``caption_mismatch``), so memory stays at k rows per
group however large the run; only the chosen rows are then read in full (with their caption).
"""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pixsieve.stages.base import reason_code
from pixsieve.stages.captions import ImageTextFilter

GROUPS = ("removed", "kept")
"""``removed``: lowest-scoring pairs the filter removed; ``kept``: lowest-scoring survivors."""


def lowest_pairs(
    dataset: ds.Dataset, columns: list[str], k: int = 12
) -> dict[str, list[dict[str, Any]]]:
    """Up to ``k`` rows per group of :data:`GROUPS` with the lowest ``clip_score``, lowest first.

    ``columns``: the manifest columns to return for each chosen row (``caption`` and
    ``clip_score`` are added). Empty when the run has no ``clip_score`` column.
    """
    kind = ImageTextFilter
    names = set(dataset.schema.names)
    if kind.column not in names:
        return {}
    best: dict[str, list[tuple[float, str, int]]] = {g: [] for g in GROUPS}
    light = ["source", "position", "status", "reason", kind.column]
    for batch in dataset.to_batches(columns=light, filter=pc.field(kind.column).is_valid()):
        t = pa.Table.from_batches([batch])
        status = t["status"].to_numpy(zero_copy_only=False)
        reasons = t["reason"].to_pylist()
        mismatch = np.array([reason_code(r or "") == kind.reason for r in reasons], dtype=bool)
        score = t[kind.column].to_numpy(zero_copy_only=False).astype(np.float64)
        hits = {"removed": (status == "removed") & mismatch, "kept": status == "kept"}
        for group, hit in hits.items():
            idx = np.flatnonzero(hit)
            if len(idx) > k:
                idx = idx[np.argsort(score[idx], kind="stable")[:k]]
            src, pos = t["source"].take(pa.array(idx)), t["position"].take(pa.array(idx))
            found = zip(score[idx].tolist(), src.to_pylist(), pos.to_pylist(), strict=True)
            best[group] = sorted([*best[group], *found])[:k]
    wanted = [c for c in dict.fromkeys([*columns, "caption", kind.column]) if c in names]
    out: dict[str, list[dict[str, Any]]] = {}
    for group, picks in best.items():
        if not picks:
            continue
        keys = {(s, p) for _, s, p in picks}
        where = pc.field("position").isin([p for _, _, p in picks]) & pc.field("source").isin(
            sorted({s for _, s, _ in picks})
        )
        rows = [
            r
            for r in dataset.to_table(columns=wanted, filter=where).to_pylist()
            if (r["source"], r["position"]) in keys
        ]
        out[group] = sorted(rows, key=lambda r: (r[kind.column], r["source"], r["position"]))
    return out


def caption_line(row: dict[str, Any], limit: int = 160) -> str:
    """A card line with the (escaped, shortened) caption, or a note that there is none."""
    text = row.get("caption")
    if not text:
        return '<span class="muted">no caption</span>'
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"<i>“{escape(short)}”</i>"


def section(pairs: dict[str, list[dict[str, Any]]], grid: Any, ran: bool) -> str:
    """HTML of the caption section: a grid per group, captions on the cards."""
    if not ran:
        return '<p class="muted">Caption alignment did not run (--skip caption).</p>'
    if not pairs:
        return '<p class="muted">No sample had both an image and a caption to score.</p>'
    titles = {
        "removed": f"Lowest-scoring pairs removed as {ImageTextFilter.reason}",
        "kept": "Lowest-scoring pairs kept",
    }
    out = []
    for group in GROUPS:
        rows = pairs.get(group) or []
        out.append(f"<h3>{escape(titles[group])} ({len(rows)} shown)</h3>")
        out.append(grid(rows) if rows else '<p class="muted">None.</p>')
    return "".join(out)
