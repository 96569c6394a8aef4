"""``OUT/report.html``: one self-contained page that shows what a run removed and why.

Sections: summary, funnel, reasons, score histograms, sampled thumbnails per removal reason and
from the kept set, the lowest-scoring image–caption pairs, duplicate groups, per-shard errors
and the run's settings. Charts are inline
SVG, thumbnails inline base64 JPEGs; the page loads nothing from anywhere and opens offline.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any

import numpy as np

from pixsieve.report import captions
from pixsieve.report.collect import DETAIL_COLUMNS, ManifestStats, collect
from pixsieve.report.svg import bin_scores, funnel_svg, histogram_svg
from pixsieve.report.thumbs import fetch_thumbnails
from pixsieve.run.fates import known_filters
from pixsieve.run.finished import FinishedRun
from pixsieve.stages.base import reason_code
from pixsieve.stages.scoring import NSFWFilter

SECTIONS = {
    "summary": "Summary",
    "funnel": "Funnel",
    "reasons": "Reasons",
    "scores": "Scores",
    "samples": "Samples by reason",
    "kept": "Kept samples",
    "captions": "Captions",
    "duplicates": "Duplicate groups",
    "errors": "Errors per shard",
    "settings": "Settings",
}
_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:0 16px 40px;
color:#222;background:#fff}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;border-bottom:1px solid #ddd;
padding-bottom:4px;margin-top:30px}h3{font-size:15px;margin:18px 0 6px}
nav a{margin-right:12px;color:#3b6fb6;text-decoration:none;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:8px}.card{width:164px;margin:0;font-size:11px;
border:1px solid #ddd;border-radius:4px;padding:2px;overflow:hidden;word-break:break-all}
.card img,.card .ph{display:block;width:160px;height:160px;object-fit:contain;background:#f3f3f3}
.card .ph{display:flex;align-items:center;justify-content:center;color:#999;text-align:center}
.group{border:1px solid #ccc;border-radius:6px;padding:6px;margin:8px 0}
.kept{outline:3px solid #2e8b57}.badge{display:inline-block;padding:0 5px;border-radius:3px;
background:#eee;margin-right:3px}.warn{background:#fde2c6;color:#8a4b00}
.charts{display:flex;flex-wrap:wrap;gap:18px}
"""


def _num(n: int) -> str:
    return f"{n:,}"


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "-"


def funnel_steps(stats: ManifestStats, run: FinishedRun) -> list[tuple[str, int, int]]:
    """Funnel rows ``(label, removed, remaining)``: input, errors, exact duplicates, other
    filters, the score filters (aesthetic, NSFW, then any other the run ran), semantic
    duplicates, kept. Counts come from the manifest."""
    total = stats.samples
    steps = [("input", 0, total)]
    remaining = total
    ran = set(run.stage_order())
    scored = known_filters(run)
    fixed = {"exact_duplicate", "semantic_duplicate", *(k.reason for k in scored)}

    def step(label: str, n: int) -> None:
        nonlocal remaining
        remaining -= n
        steps.append((label, n, remaining))

    step("errors", stats.status_count("error"))
    step("exact duplicates", stats.removed("exact_duplicate"))
    others = {c: n for (s, c), n in stats.counts.items() if s == "removed" and c not in fixed}
    for code in sorted(others, key=lambda c: (-others[c], c)):
        step(code.replace("_", " "), others[code])
    for kind in scored:
        step(kind.label + ("" if kind.name in ran else " (not run)"), stats.removed(kind.reason))
    label = "semantic duplicates" + ("" if run.semantic_ran else " (not run)")
    step(label, stats.removed("semantic_duplicate"))
    steps.append(("kept", 0, stats.status_count("kept")))
    return steps


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        cells = (f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(row))
        out += ["<tr>", *cells, "</tr>"]
    out.append("</table>")
    return "".join(out)


def _card(row: dict[str, Any], extra: str = "") -> str:
    thumb = row.get("thumb")
    img = (
        f'<img src="{thumb}" alt="{escape(str(row.get("key")))}" width="160" height="160">'
        if thumb
        else '<div class="ph">no preview</div>'
    )
    lines = [f"<b>{escape(str(row.get('key')))}</b>"]
    lines += [escape(text) for text in row.get("score_lines", ())]
    if "caption" in row:
        lines.append(captions.caption_line(row))
    if row.get("width"):
        lines.append(f"{row['width']}×{row['height']} {escape(str(row.get('format') or ''))}")
    if row.get("status") != "kept" and row.get("reason"):
        why = str(row["reason"]) + (f": {row['reason_detail']}" if row.get("reason_detail") else "")
        lines.append(f'<span class="muted">{escape(why[:120])}</span>')
    if row.get("duplicate_of"):
        lines.append(f"dup of {escape(str(row['duplicate_of']))}")
    if row.get("similarity") is not None:
        lines.append(f"similarity {row['similarity']:.4f}")
    if row.get("blurred"):
        lines.append('<span class="badge warn">blurred</span>')
    cls = ' class="card kept"' if extra == "kept" else ' class="card"'
    return f"<figure{cls}>{img}<figcaption>{'<br>'.join(lines)}</figcaption></figure>"


def _grid(rows: list[dict[str, Any]]) -> str:
    return '<div class="grid">' + "".join(_card(r) for r in rows) + "</div>"


def _scores_section(stats: ManifestStats, run: FinishedRun) -> str:
    charts = []
    for kind in known_filters(run):
        if kind.column not in stats.scores:
            charts.append(f'<p class="muted">{escape(kind.title)}: not computed in this run.</p>')
            continue
        values, kept = stats.scores[kind.column]
        threshold = run.threshold(kind)
        edges, all_counts, kept_counts = bin_scores(values, kept, threshold)
        text = kind.rule_text(threshold) if threshold is not None else ""
        if threshold is not None and run.score_only(kind.name):
            text += " score only"
        charts.append(histogram_svg(kind.title, edges, all_counts, kept_counts, threshold, text))
    return '<div class="charts">' + "".join(charts) + "</div>"


def _groups_section(stats: ManifestStats, ran: bool) -> str:
    if not ran:
        return '<p class="muted">Semantic dedup did not run.</p>'
    if not stats.groups:
        return '<p class="muted">No near-duplicates were found.</p>'
    out = []
    for rows in stats.groups:
        first = rows[0]
        size = first.get("component_size") or len(rows)
        chained = any(r.get("chained") for r in rows)
        flag = ' <span class="badge warn">chained</span>' if chained else ""
        shown = f" (showing {len(rows)})" if len(rows) < size else ""
        head = f"group {first.get('component_id')} · {size} members{shown}{flag}"
        cards = [_card(r, "kept" if r.get("status") == "kept" else "") for r in rows]
        out.append(
            f'<div class="group"><h3>{head}</h3><div class="grid">{"".join(cards)}</div></div>'
        )
    return "".join(out)


def _errors_section(stats: ManifestStats, run: FinishedRun) -> str:
    out = []
    rows = [[escape(str(r["source"])), escape(str(r["reason"]))] for r in stats.shard_rows]
    rows += [
        [escape(str(e.get("task"))), escape(f"{e.get('pass')}: {e.get('error')}")]
        for e in run.record.get("shard_errors") or []
    ]
    if rows:
        out.append("<h3>Shard-level errors</h3>" + _table(["shard", "error"], rows))
    if stats.errors_by_shard:
        top = stats.errors_by_shard.most_common(100)
        body = [[escape(s), escape(c), _num(n)] for (s, c), n in top]
        out.append(
            "<h3>Sample errors by shard</h3>" + _table(["shard", "reason", "samples"], body, {2})
        )
    return "".join(out) or '<p class="muted">No errors.</p>'


def _settings_section(run: FinishedRun) -> str:
    rows = [
        [
            escape(str(s.get("name"))),
            f"<code>{escape(json.dumps(s.get('settings'), default=str))}</code>",
        ]
        for s in run.record.get("stages") or []
    ]
    semantic = run.fingerprint.get("semantic_dedup")
    semantic_text = "not run" if semantic is None else json.dumps(semantic, default=str)
    rows.append(["semantic dedup", f"<code>{escape(semantic_text)}</code>"])
    if run.record.get("refiltered_from"):
        rows.append(["refiltered from", escape(json.dumps(run.record["refiltered_from"]))])
    versions = json.dumps(run.record.get("versions") or {}, sort_keys=True)
    rows.append(["versions", f"<code>{escape(versions)}</code>"])
    return _table(["stage", "settings"], rows)


def render(run: FinishedRun, stats: ManifestStats, *, blur_nsfw: bool = True) -> str:
    """The report page for ``run`` (thumbnails must already be on the sampled rows)."""
    kinds = known_filters(run)
    pairs = [r for g in stats.caption_pairs.values() for r in g]
    picked = [r for g in stats.picks.values() for r in g] + [r for g in stats.groups for r in g]
    for row in picked + pairs:
        row["score_lines"] = [
            f"{k.name} {k.score_format.format(row[k.column])}"
            for k in kinds
            if row.get(k.column) is not None
        ]
    total = stats.samples
    kept = stats.status_count("kept")
    summary = _table(
        ["input", "kept", "removed", "errors", "shard-level errors"],
        [[_num(total), f"{_num(kept)} ({_pct(kept, total)})",
          _num(stats.status_count("removed")), _num(stats.status_count("error")),
          _num(len(stats.shard_rows))]],
        {0, 1, 2, 3, 4},
    )  # fmt: skip
    reasons = _table(
        ["status", "reason", "samples", "share", "example"],
        [
            [s, escape(c or "-"), _num(n), _pct(n, total), escape(stats.examples.get(c, "")[:160])]
            for (s, c), n in sorted(stats.counts.items(), key=lambda kv: -kv[1])
        ],
        {2, 3},
    )
    sample_parts = []
    rank = {
        "exact_duplicate": 0,  # then other filters (1), the score filters, semantic duplicates
        **{k.reason: 2 + i for i, k in enumerate(kinds)},
        "semantic_duplicate": 2 + len(kinds),
    }
    groups = [g.split(":", 1) for g, rows in stats.picks.items() if g != "kept" and rows]
    for status, code in sorted(groups, key=lambda g: (g[0] != "removed", rank.get(g[1], 1), g[1])):
        group = f"{status}:{code}"
        n = stats.counts.get((status, code), 0)
        sample_parts.append(f"<h3>{escape(status)}: {escape(code)} ({_num(n)})</h3>")
        sample_parts.append(_grid(stats.picks[group]))
    body = {
        "summary": summary + f'<p class="muted">Run {escape(run.url)} · started '
        f"{escape(str(run.record.get('started', '?')))} · {run.record.get('seconds', '?')} s</p>",
        "funnel": funnel_svg(funnel_steps(stats, run), max(total, 1)),
        "reasons": reasons,
        "scores": _scores_section(stats, run),
        "samples": "".join(sample_parts)
        or '<p class="muted">No thumbnails (nothing removed, or none sampled).</p>',
        "kept": _grid(stats.picks["kept"])
        if stats.picks.get("kept")
        else '<p class="muted">No thumbnails (nothing kept, or none sampled).</p>',
        "captions": captions.section(
            stats.caption_pairs, _grid, captions.ImageTextFilter.name in run.stage_order()
        ),
        "duplicates": _groups_section(stats, run.semantic_ran),
        "errors": _errors_section(stats, run),
        "settings": _settings_section(run),
    }
    blur_note = "NSFW thumbnails are blurred." if blur_nsfw else "NSFW thumbnails are NOT blurred."
    nav = "".join(f'<a href="#{k}">{escape(v)}</a>' for k, v in SECTIONS.items())
    sections = "".join(
        f'<section id="{k}"><h2>{escape(SECTIONS[k])}</h2>{v}</section>' for k, v in body.items()
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>pixsieve report: {escape(run.url)}</title><style>{_CSS}</style></head><body>"
        f"<h1>pixsieve report</h1><p class=muted>{escape(run.url)} · generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {blur_note}</p><nav>{nav}</nav>"
        f"{sections}</body></html>"
    )


def write_report(
    output: str,
    *,
    blur_nsfw: bool = True,
    storage_options: dict[str, Any] | None = None,
    per_reason: int = 12,
    max_groups: int = 8,
) -> str:
    """Write ``OUT/report.html`` for the finished run at ``output``; return its path.

    Reads only the manifest columns each section needs and at most ``per_reason`` thumbnails
    per reason (plus ``max_groups`` duplicate groups) from the input shards, so it stays fast
    for millions of samples. NSFW thumbnails are blurred unless ``blur_nsfw=False``.
    """
    run = FinishedRun.open(output, storage_options)
    columns = tuple(k.column for k in known_filters(run))
    stats = collect(
        run.manifest(), per_group=per_reason, max_groups=max_groups, score_columns=columns
    )
    nsfw = NSFWFilter  # thumbnails its rule would remove are blurred
    nsfw_max = run.threshold(nsfw)

    def should_blur(row: dict[str, Any]) -> bool:
        prob = row.get(nsfw.column)
        hit = reason_code(row.get("reason") or "") == nsfw.reason or (
            nsfw_max is not None
            and prob is not None
            and not nsfw.keep_scores(np.array([prob], dtype=np.float64), nsfw_max)[0]
        )
        row["blurred"] = blur_nsfw and hit
        return row["blurred"]

    stats.caption_pairs = captions.lowest_pairs(
        run.manifest(), [*DETAIL_COLUMNS, *columns], per_reason
    )
    rows = [r for group in stats.picks.values() for r in group]
    rows += [r for group in stats.groups for r in group]
    rows += [r for group in stats.caption_pairs.values() for r in group]
    fetch_thumbnails(rows, should_blur, storage_options)
    page = render(run, stats, blur_nsfw=blur_nsfw)
    path = run.layout.report()
    with run.layout.fs.open(f"{path}.tmp", "wb") as f:
        f.write(page.encode("utf-8"))
    run.layout.fs.mv(f"{path}.tmp", path)
    return f"{output.rstrip('/')}/report.html"
