"""The memberships new items are searched with against earlier kept items, the cheaper of two.

For a new ``y`` and an earlier kept ``x`` with ``cos(x, y) >= t``, either scheme finds the pair
(each provided the cluster it needs is among ``y``'s ``border_candidates`` nearest centroids):

* **border**: ``y``'s own cluster and its border clusters (:mod:`pixsieve.dedup.border`),
  compared with every earlier membership of them (never two secondaries);
* **radius**: every candidate cluster ``c`` with ``s_y(c) >= radius(c) - delta``
  (``delta = sqrt(2 (1 - t))``), compared with the earlier *primaries* of ``c`` only. Complete
  because for ``x``'s own cluster ``a``, ``s_y(a) >= s_x(a) - |x - y| >= radius(a) - delta``
  (``radius(a)``: the lowest cosine of a primary of ``a``, recorded in the index).

Each new row takes the scheme with fewer products (from the earlier memberships and primaries
per cluster). Radius-scheme memberships are written as secondaries, which
:func:`pixsieve.dedup.against.cross_bucket` compares with earlier primaries only. New items
far from every earlier cluster have no radius-scheme cluster at all and cost nothing.

The memberships are written without embeddings (``row``, ``cluster``, ``secondary``): the
cross search reads each new row once per bucket from the read phase's ``x.npy``
(:func:`pixsieve.dedup.readphase.gather_rows`), instead of writing and reading back a copy per
membership (4.3 per new item on the 100k benchmark: 1.3 GB).

Where the earlier runs' centroids are this run's (no ``--recluster``), the assign phase writes
the cross memberships from its own centroid search (:class:`CrossWriter`, passed to
:func:`pixsieve.dedup.partition.assign_file`); :func:`cross_assign_file` searches again only
for other centroid sets, and for files whose assign task finished before its cross part did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.dedup.border import border_chunk, border_margin, centroid_cosines
from pixsieve.dedup.centroid_search import CentroidSearch
from pixsieve.dedup.index import EarlierRun, all_parts, earlier_radius
from pixsieve.dedup.readphase import row_blocks
from pixsieve.dedup.sources import Source
from pixsieve.dedup.taskfiles import (
    FileTask,
    _begin,
    _done,
    _finish,
    _Writers,
    bucket_parts,
    cluster_buckets,
)

#: Subtracted from the radius-scheme bound against float32 rounding of centroid cosines.
BOUND_SLACK: float = 1e-4


def earlier_counts(runs: list[EarlierRun], clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the earlier kept memberships and primaries of ``runs`` (the index's
    ``members.npy``; version 3 indexes: from every part's ``cluster`` and ``secondary``)."""
    members = np.zeros(clusters, np.int64)
    primaries = np.zeros(clusters, np.int64)
    for run in runs:
        counts = run.kept_dir.parent / "members.npy"
        if counts.exists():
            both = np.load(counts)[:, :clusters]
            members[: both.shape[1]] += both[0]
            primaries[: both.shape[1]] += both[1]
            continue
        for part in all_parts(run.kept_dir):
            meta = pq.ParquetFile(part).read(columns=["cluster", "secondary"])
            cl = meta.column("cluster").to_numpy()
            sec = meta.column("secondary").to_numpy(zero_copy_only=False)
            members += np.bincount(cl, minlength=clusters)
            primaries += np.bincount(cl[~sec], minlength=clusters)
    return members, primaries


@dataclass(frozen=True)
class CrossPlan:
    """One centroid set of the earlier runs: ``k`` centroids (a prefix of this run's), the
    directory ``work`` (``WORK/xK``) with ``centroids.npy`` and ``costs.npz`` (per cluster the
    earlier ``members``, ``primaries`` and ``radius``), the bucket count and the cluster →
    bucket map, the earlier runs using it (``(position, run)``) and the threshold."""

    k: int
    work: str
    buckets: int
    bucket_of: np.ndarray
    runs: tuple[tuple[int, EarlierRun], ...]
    threshold: float


def cross_plans(
    work: Path, centroids: np.ndarray, earlier: list[EarlierRun], n_buckets: int, threshold: float
) -> list[CrossPlan]:
    """A :class:`CrossPlan` per centroid set of ``earlier`` (its files written once)."""
    groups: dict[int, list[tuple[int, EarlierRun]]] = {}
    for position, r in enumerate(earlier):
        groups.setdefault(int(r.meta["clusters"]), []).append((position, r))
    plans = []
    for k, runs in sorted(groups.items()):
        base = work / f"x{k}"
        base.mkdir(exist_ok=True)
        if not (base / "costs.npz").exists():
            np.save(base / "centroids.npy", centroids[:k])
            members, primaries = earlier_counts([r for _, r in runs], k)
            radius = earlier_radius([r for _, r in runs], k)
            np.savez(base / "costs.tmp.npz", members=members, primaries=primaries, radius=radius)
            (base / "costs.tmp.npz").rename(base / "costs.npz")
        bucket_of = cluster_buckets(k, n_buckets)
        plans.append(CrossPlan(k, str(base), n_buckets, bucket_of, tuple(runs), threshold))
    return plans


class CrossWriter:
    """Writes the cross-search memberships of one new file into ``PLAN.work/assign/fFFFFF``
    (the task protocol of :mod:`pixsieve.dedup.taskfiles`; :attr:`done` when already there)."""

    def __init__(self, plan: CrossPlan, index: int) -> None:
        self.plan, self.final = plan, Path(plan.work) / "assign" / f"f{index:05d}"
        self.tmp = _begin(self.final)
        self.by_radius = self.memberships = 0
        if self.tmp is not None:
            costs = np.load(Path(plan.work) / "costs.npz")
            self.members, self.primaries = costs["members"], costs["primaries"]
            delta = math.sqrt(max(0.0, 2.0 * (1.0 - plan.threshold)))
            self.floor = costs["radius"] - delta - BOUND_SLACK
            self.writers = _Writers(self.tmp, "b")

    @property
    def done(self) -> bool:
        """The file's cross memberships were written by an earlier attempt."""
        return self.tmp is None

    def add(
        self,
        row0: int,
        sims: np.ndarray,
        ids: np.ndarray,
        rows_b: np.ndarray,
        other_b: np.ndarray,
    ) -> None:
        """The memberships of rows ``row0..`` from their nearest centroids (``sims``, ``ids``)
        and border memberships (``rows_b``, ``other_b``)."""
        members, primaries, floor = self.members, self.primaries, self.floor
        r = len(sims)
        own = ids[:, 0].astype(np.int64)
        cost_border = members[own] + np.bincount(rows_b, primaries[other_b], minlength=r)
        inside = (ids >= 0) & (sims >= floor[np.maximum(ids, 0)])
        cost_radius = (inside * primaries[np.maximum(ids, 0)]).sum(axis=1)
        use = cost_radius < cost_border
        self.by_radius += int(use.sum())
        keep_b = ~use[rows_b]
        rad_rows, rad_col = np.nonzero(inside & use[:, None])
        point = np.concatenate([np.flatnonzero(~use), rows_b[keep_b], rad_rows])
        cluster = np.concatenate([own[~use], other_b[keep_b], ids[rad_rows, rad_col]])
        cluster = cluster.astype(np.int64)
        self.memberships += len(point)
        secondary = np.ones(len(point), dtype=bool)
        secondary[: int((~use).sum())] = False
        bucket = self.plan.bucket_of[cluster]
        for part in bucket_parts(bucket):
            pts = point[part]
            table = pa.table(
                {
                    "row": pa.array(row0 + pts, pa.int64()),
                    "cluster": pa.array(cluster[part], pa.int32()),
                    "secondary": pa.array(secondary[part]),
                }
            )
            self.writers.write(int(bucket[part[0]]), table)  # rows come from the read phase

    def close(self) -> None:
        """Close the open writers (after an error too)."""
        if self.tmp is not None:
            self.writers.close()

    def finish(self, rows: int) -> dict[str, Any]:
        """Mark the file done; return its counts."""
        if self.tmp is None:
            return _done(self.final)
        self.close()
        counts = {"rows": rows, "by_radius": self.by_radius, "memberships": self.memberships}
        return _finish(self.tmp, self.final, counts)


def cross_assign_file(
    task: FileTask,
    source: Source,
    index: int,
    plan: CrossPlan,
    candidates: int,
    threshold: float,
    slack: float,
) -> dict[str, Any]:
    """Write the cross-search memberships of one new file into ``PLAN.work/assign/fFFFFF``
    (``row``, ``cluster``, ``secondary``; no embeddings: :func:`pixsieve.dedup.against.cross_bucket`
    reads them from the read phase), searching ``plan``'s centroids."""
    writer = CrossWriter(plan, index)
    if writer.done:
        return writer.finish(source.rows)
    centroids = np.load(Path(plan.work) / "centroids.npy")
    search = CentroidSearch(centroids, candidates)
    half = border_margin(threshold, slack) if search.m > 1 else 0.0
    cosines = centroid_cosines(centroids) if half > 0 else None
    none = np.empty(0, np.int64)
    try:
        for start, x, _, _ in row_blocks(task, index):
            sims, ids = search.search(x)
            rows_b, other_b = (none, none)
            if cosines is not None:
                rows_b, other_b = border_chunk(sims, ids, cosines, half)
            writer.add(source.offset + start, sims, ids, rows_b, other_b)
    finally:
        writer.close()
    return writer.finish(source.rows)
