"""One streaming pass over a run's manifest: counts, score arrays, per-shard errors, samples.

Only the columns a section needs are read, batch by batch, so memory stays at a few bytes per
sample (the score arrays) however large the run. Thumbnails are sampled with a seeded bottom-k
sample per group (``kept``, ``removed:<reason>``, ``error:<reason>``), and only the sampled rows
are read in full afterwards. Duplicate groups are read through a filter on ``component_id``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pixsieve.stages.base import reason_code

DETAIL_COLUMNS = (
    "position", "key", "source", "members", "status", "reason", "reason_detail", "width",
    "height", "format",
    "duplicate_of", "similarity", "component_id", "component_size", "chained", "output_shard",
)  # fmt: skip
"""Columns read for each sampled row (the score columns are added by the caller)."""
_SEP = "\x1f"


@dataclass
class ManifestStats:
    """What the report shows, gathered from the manifest."""

    samples: int = 0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    shard_rows: list[dict[str, Any]] = field(default_factory=list)
    errors_by_shard: Counter[tuple[str, str]] = field(default_factory=Counter)
    picks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    groups: list[list[dict[str, Any]]] = field(default_factory=list)
    columns: set[str] = field(default_factory=set)
    caption_pairs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def status_count(self, status: str) -> int:
        """Samples with ``status``."""
        return sum(c for (s, _), c in self.counts.items() if s == status)

    def removed(self, code: str) -> int:
        """Samples removed for reason code ``code``."""
        return self.counts.get(("removed", code), 0)


def _group(status: str, reason: str) -> str:
    return "kept" if status == "kept" else f"{status}:{reason_code(reason or 'unknown')}"


class _Sampler:
    """Seeded bottom-k sample of global row numbers per group."""

    def __init__(self, k: int, seed: int) -> None:
        self.k = k
        self.rng = np.random.default_rng(seed)
        self.pool: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, groups: np.ndarray, names: list[str], rows: np.ndarray) -> None:
        keys = self.rng.random(len(rows))
        for g in np.unique(groups):
            hit = groups == g
            k_new, r_new = keys[hit], rows[hit]
            if names[g] in self.pool:
                k_old, r_old = self.pool[names[g]]
                k_new, r_new = np.concatenate([k_old, k_new]), np.concatenate([r_old, r_new])
            best = np.argpartition(k_new, self.k)[: self.k] if len(k_new) > self.k else slice(None)
            self.pool[names[g]] = (k_new[best], r_new[best])


def collect(
    dataset: ds.Dataset,
    per_group: int = 12,
    max_groups: int = 8,
    seed: int = 0,
    score_columns: tuple[str, ...] = (),
) -> ManifestStats:
    """Gather counts, scores (of ``score_columns``), errors, sampled rows and duplicate groups
    from ``dataset``."""
    names = set(dataset.schema.names)
    stats = ManifestStats(columns=names)
    light = ["position", "status", "reason", "source"] + [c for c in score_columns if c in names]
    light += ["reason_detail"] if "reason_detail" in names else []
    sampler = _Sampler(per_group, seed)
    score_parts: dict[str, list[np.ndarray]] = {c: [] for c in score_columns if c in names}
    kept_parts: list[np.ndarray] = []
    offset = 0
    fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
    starts: list[int] = []
    for batch in _batches(dataset.schema, fragments, light, starts):
        t = pa.Table.from_batches([batch])
        n = t.num_rows
        pos = t["position"].to_numpy(zero_copy_only=False)
        sample = pos >= 0
        full = _full_reasons(t)
        for j in np.flatnonzero(~sample):
            stats.shard_rows.append({"source": t["source"][j].as_py(), "reason": full[j]})
        label = pc.binary_join_element_wise(t["status"], pc.fill_null(t["reason"], ""), _SEP)
        encoded = pc.dictionary_encode(label).combine_chunks()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        parts = [str(v).split(_SEP, 1) for v in encoded.dictionary.to_pylist()]
        groups = [_group(s, r) for s, r in parts]
        group_ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        gid = np.array([group_ids[g] for g in groups], dtype=np.int64)[codes]
        per_label = np.bincount(codes[sample], minlength=len(parts))
        for i, ((s, r), c) in enumerate(zip(parts, per_label, strict=True)):
            if c:
                code = "" if s == "kept" else reason_code(r or "unknown")
                stats.counts[(s, code)] += int(c)
                if code not in stats.examples:  # one row's full reason, detail included
                    stats.examples[code] = full[int(np.flatnonzero(sample & (codes == i))[0])]
        err = sample & (t["status"].to_numpy(zero_copy_only=False) == "error")
        if err.any():
            et = t.filter(pa.array(err))
            pair = pc.binary_join_element_wise(et["source"], pc.fill_null(et["reason"], ""), _SEP)
            for item in pc.value_counts(pair).to_pylist():
                src, rsn = str(item["values"]).split(_SEP, 1)
                stats.errors_by_shard[(src, reason_code(rsn))] += int(item["counts"])
        sampler.add(gid[sample], list(group_ids), offset + np.flatnonzero(sample))
        kept_parts.append((t["status"].to_numpy(zero_copy_only=False) == "kept")[sample])
        for c in score_parts:
            values = pc.fill_null(t[c].cast(pa.float32()), float("nan"))
            score_parts[c].append(values.to_numpy(zero_copy_only=False)[sample])
        stats.samples += int(sample.sum())
        offset += n
    kept = np.concatenate(kept_parts) if kept_parts else np.zeros(0, dtype=bool)
    for c, chunks in score_parts.items():
        values = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        if np.isfinite(values).any():
            stats.scores[c] = (values, kept)
    detail = [c for c in dict.fromkeys((*DETAIL_COLUMNS, *score_columns)) if c in names]
    stats.picks = _take(dataset.schema, fragments, starts, sampler.pool, detail)
    if "component_id" in names:
        stats.groups = _duplicate_groups(dataset, detail, max_groups, seed)
    return stats


def _full_reasons(t: pa.Table) -> list[str]:
    """Each row's reason code with its detail (``decode_error: ...``), ``""`` when kept."""
    codes = t["reason"].to_pylist()
    details = t["reason_detail"].to_pylist() if "reason_detail" in t.column_names else codes
    if details is codes:
        return [c or "" for c in codes]
    return [f"{c}: {d}" if d else c or "" for c, d in zip(codes, details, strict=True)]


def _batches(
    schema: pa.Schema, fragments: list[ds.Fragment], columns: list[str], starts: list[int]
) -> Iterator[pa.RecordBatch]:
    """Batches of every fragment in order; ``starts`` gets each fragment's first row number."""
    offset = 0
    for fragment in fragments:
        starts.append(offset)
        scanner = ds.Scanner.from_fragment(fragment, schema=schema, columns=columns)
        for batch in scanner.to_batches():
            offset += batch.num_rows
            yield batch


def _take(
    schema: pa.Schema,
    fragments: list[ds.Fragment],
    starts: list[int],
    pool: dict[str, tuple[np.ndarray, np.ndarray]],
    columns: list[str],
) -> dict[str, list[dict[str, Any]]]:
    """Full rows of the sampled row numbers, read fragment by fragment (only those fragments)."""
    rows = np.sort(np.concatenate([r for _, r in pool.values()])) if pool else np.zeros(0, int)
    by_row: dict[int, dict[str, Any]] = {}
    which = np.searchsorted(np.asarray(starts), rows, side="right") - 1
    for f in np.unique(which):
        local = rows[which == f] - starts[f]
        scanner = ds.Scanner.from_fragment(fragments[f], schema=schema, columns=columns)
        taken = scanner.take(pa.array(local)).to_pylist()
        by_row.update(zip(rows[which == f].tolist(), taken, strict=True))
    return {g: [by_row[int(r)] for r in sorted(r_)] for g, (_, r_) in pool.items()}


def _duplicate_groups(
    dataset: ds.Dataset, columns: list[str], max_groups: int, seed: int, per_group: int = 8
) -> list[list[dict[str, Any]]]:
    """Up to ``max_groups`` duplicate groups: chained ones first (largest first, at most half),
    the rest a seeded random choice; each with its survivor first and at most ``per_group``."""
    comp = dataset.to_table(
        columns=["component_id", "chained"], filter=pc.field("component_id").is_valid()
    )
    if comp.num_rows == 0:
        return []
    agg = comp.group_by("component_id").aggregate([("chained", "any"), ("chained", "count")])
    ids = agg["component_id"].to_numpy()
    chained = pc.fill_null(agg["chained_any"], False).to_numpy(zero_copy_only=False)
    sizes = agg["chained_count"].to_numpy()
    order = np.lexsort((ids, -sizes))
    pick = [int(i) for i in ids[order][chained[order]][: max(1, max_groups // 2)]]
    rest = np.setdiff1d(ids, pick)
    rng = np.random.default_rng(seed)
    extra = rng.choice(rest, size=min(len(rest), max_groups - len(pick)), replace=False)
    pick += sorted(int(i) for i in extra)
    table = dataset.to_table(columns=columns, filter=pc.field("component_id").isin(pick))
    members: dict[int, list[dict[str, Any]]] = {i: [] for i in pick}
    for row in table.to_pylist():
        members[int(row["component_id"])].append(row)
    out = []
    for i in pick:
        rows = sorted(
            members[i],
            key=lambda r: (r["status"] != "kept", -(r.get("similarity") or 0.0), r["key"] or ""),
        )
        out.append(rows[:per_group])
    return out
