"""Inline SVG charts for the report: the removal funnel and binned score histograms.

Plain strings, no plotting library: the charts are a handful of rectangles and labels, and the
report must open offline as a single file.
"""

from __future__ import annotations

from html import escape

import numpy as np

REMAINING = "#3b6fb6"
REMOVED = "#e4572e"
ALL_SCORES = "#a9bfdf"
KEPT_SCORES = "#2e8b57"
THRESHOLD = "#d62728"
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'
_CHAR_WIDTH = 7.0  # a generous average advance of a 12 px sans-serif character, in pixels


def label_width(text: str) -> float:
    """An upper estimate of ``text``'s width in ``_FONT``, to keep labels inside a chart."""
    return _CHAR_WIDTH * len(text)


def _fmt(n: float) -> str:
    return f"{int(n):,}"


def funnel_svg(steps: list[tuple[str, int, int]], total: int, width: int = 760) -> str:
    """A funnel: one row per step ``(label, removed, remaining after)``, bars scaled to ``total``.

    The first step is the input (``removed`` ignored) and the last the kept set.
    """
    row, left, right = 30, 190, 210
    span = width - left - right
    height = row * len(steps) + 10
    parts = [
        f'<svg class="chart funnel" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="removal funnel">'
    ]
    for i, (label, removed, remaining) in enumerate(steps):
        y = 5 + i * row
        w_keep = span * remaining / total if total else 0.0
        w_gone = span * removed / total if total else 0.0
        parts.append(
            f'<text x="{left - 8}" y="{y + 18}" text-anchor="end" {_FONT}>{escape(label)}</text>'
        )
        parts.append(
            f'<rect x="{left}" y="{y + 4}" width="{max(w_keep, 0.5):.1f}" height="{row - 8}" '
            f'fill="{REMAINING}"><title>{_fmt(remaining)} remaining</title></rect>'
        )
        note = _fmt(remaining)
        if 0 < i < len(steps) - 1:
            parts.append(
                f'<rect x="{left + w_keep:.1f}" y="{y + 4}" width="{max(w_gone, 0.5):.1f}" '
                f'height="{row - 8}" fill="{REMOVED}"><title>{_fmt(removed)} removed</title></rect>'
            )
            pct = 100.0 * removed / total if total else 0.0
            note = f"−{_fmt(removed)} ({pct:.1f}%) → {_fmt(remaining)}"
        parts.append(
            f'<text x="{left + w_keep + w_gone + 6:.1f}" y="{y + 18}" {_FONT}>{note}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bin_scores(
    values: np.ndarray, kept: np.ndarray, threshold: float | None, bins: int = 40
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histogram (edges, counts of all, counts of kept) of finite ``values``, with numpy.

    The range covers every value and the threshold, so the threshold line always shows.
    """
    ok = np.isfinite(values)
    values, kept = values[ok], kept[ok]
    lo = float(values.min()) if len(values) else 0.0
    hi = float(values.max()) if len(values) else 1.0
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    all_counts, _ = np.histogram(values, edges)
    kept_counts, _ = np.histogram(values[kept], edges)
    return edges, all_counts, kept_counts


def histogram_svg(
    title: str,
    edges: np.ndarray,
    all_counts: np.ndarray,
    kept_counts: np.ndarray,
    threshold: float | None,
    threshold_label: str,
    width: int = 560,
    height: int = 240,
) -> str:
    """A binned histogram of every scored sample with the kept ones overlaid and the threshold
    drawn as a dashed line."""
    left, right, top, bottom = 52, 16, 26, 40
    pw, ph = width - left - right, height - top - bottom
    lo, hi = float(edges[0]), float(edges[-1])
    peak = max(int(all_counts.max()) if len(all_counts) else 0, 1)

    def x(v: float) -> float:
        return left + pw * (v - lo) / (hi - lo)

    parts = [
        f'<svg class="chart histogram" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" {_FONT} font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#555"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#555"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" {_FONT}>{_fmt(peak)}</text>',
        f'<text x="{left - 6}" y="{top + ph}" text-anchor="end" {_FONT}>0</text>',
    ]
    for counts, colour, what in (
        (all_counts, ALL_SCORES, "scored"),
        (kept_counts, KEPT_SCORES, "kept"),
    ):
        for i, c in enumerate(counts):
            if c <= 0:
                continue
            x0, x1 = x(float(edges[i])), x(float(edges[i + 1]))
            h = ph * float(c) / peak
            parts.append(
                f'<rect x="{x0 + 0.5:.1f}" y="{top + ph - h:.1f}" '
                f'width="{max(x1 - x0 - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{edges[i]:.3g}–{edges[i + 1]:.3g}: '
                f"{_fmt(c)} {what}</title></rect>"
            )
    for v in np.linspace(lo, hi, 6):
        parts.append(
            f'<text x="{x(float(v)):.1f}" y="{top + ph + 16}" text-anchor="middle" {_FONT}>'
            f"{v:.3g}</text>"
        )
    if threshold is not None:
        tx = x(threshold)
        # right of the line if the label fits inside the chart, else ending left of it
        fits = tx + 4 + label_width(threshold_label) <= width - 2
        lx, anchor = (tx + 4, "start") if fits else (tx - 4, "end")
        parts.append(
            f'<line class="threshold" x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{top + ph}" '
            f'stroke="{THRESHOLD}" stroke-width="2" stroke-dasharray="5,3"/>'
            f'<text x="{lx:.1f}" y="{top + 6}" text-anchor="{anchor}" fill="{THRESHOLD}" {_FONT}>'
            f"{escape(threshold_label)}</text>"
        )
    legend_y = height - 8
    parts.append(
        f'<rect x="{left}" y="{legend_y - 9}" width="10" height="10" fill="{ALL_SCORES}"/>'
        f'<text x="{left + 14}" y="{legend_y}" {_FONT}>all scored</text>'
        f'<rect x="{left + 100}" y="{legend_y - 9}" width="10" height="10" fill="{KEPT_SCORES}"/>'
        f'<text x="{left + 114}" y="{legend_y}" {_FONT}>kept</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
