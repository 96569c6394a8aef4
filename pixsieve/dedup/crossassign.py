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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.dedup.border import GRAM_MAX_CLUSTERS, border_chunk, border_margin
from pixsieve.dedup.centroid_search import CentroidSearch
from pixsieve.dedup.index import EarlierRun
from pixsieve.dedup.partition import packed
from pixsieve.dedup.readphase import row_blocks
from pixsieve.dedup.sources import Source
from pixsieve.dedup.taskfiles import FileTask, _begin, _done, _finish, _Writers

#: Subtracted from the radius-scheme bound against float32 rounding of centroid cosines.
BOUND_SLACK: float = 1e-4


def earlier_counts(runs: list[EarlierRun], clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the earlier kept memberships and primaries of ``runs`` (from the index
    parts' ``cluster`` and ``secondary`` columns)."""
    members = np.zeros(clusters, np.int64)
    primaries = np.zeros(clusters, np.int64)
    for run in runs:
        for part in sorted(run.kept_dir.glob("b*/f*.parquet")):
            meta = pq.read_table(part, columns=["cluster", "secondary"])
            cl = meta.column("cluster").to_numpy()
            sec = meta.column("secondary").to_numpy(zero_copy_only=False)
            members += np.bincount(cl, minlength=clusters)
            primaries += np.bincount(cl[~sec], minlength=clusters)
    return members, primaries


def cross_assign_file(
    task: FileTask,
    source: Source,
    index: int,
    centroids_path: str,
    bucket_of: np.ndarray,
    candidates: int,
    threshold: float,
    slack: float,
    costs_path: str,
) -> dict[str, Any]:
    """Write the cross-search memberships of one new file into ``TASK.work/assign/fFFFFF``
    (``row``, ``cluster``, ``secondary``, ``embedding``). ``costs_path``: an ``.npz`` with the
    per-cluster ``members``, ``primaries`` and ``radius`` of the earlier runs."""
    final = Path(task.work) / "assign" / f"f{index:05d}"
    tmp = _begin(final)
    if tmp is None:
        return _done(final)
    centroids = np.load(centroids_path)
    costs = np.load(costs_path)
    members, primaries, radius = costs["members"], costs["primaries"], costs["radius"]
    search = CentroidSearch(centroids, candidates)
    half = border_margin(threshold, slack) if search.m > 1 else 0.0
    gram = centroids @ centroids.T if half > 0 and len(centroids) <= GRAM_MAX_CLUSTERS else None
    floor = radius - math.sqrt(max(0.0, 2.0 * (1.0 - threshold))) - BOUND_SLACK
    writers = _Writers(tmp, "b")
    by_radius = n_members = 0
    try:
        for start, x, _, _ in row_blocks(task, index):
            sims, ids = search.search(x)
            r = len(x)
            own = ids[:, 0].astype(np.int64)
            rows_b, other_b = np.empty(0, np.int64), np.empty(0, np.int64)
            if half > 0:
                rows_b, other_b = border_chunk(sims, ids, centroids, gram, half)
            cost_border = members[own] + np.bincount(rows_b, primaries[other_b], minlength=r)
            inside = (ids >= 0) & (sims >= floor[np.maximum(ids, 0)])
            cost_radius = (inside * primaries[np.maximum(ids, 0)]).sum(axis=1)
            use = cost_radius < cost_border
            by_radius += int(use.sum())
            keep_b = ~use[rows_b]
            rad_rows, rad_col = np.nonzero(inside & use[:, None])
            point = np.concatenate([np.flatnonzero(~use), rows_b[keep_b], rad_rows])
            cluster = np.concatenate([own[~use], other_b[keep_b], ids[rad_rows, rad_col]]).astype(
                np.int64
            )
            n_members += len(point)
            secondary = np.ones(len(point), dtype=bool)
            secondary[: int((~use).sum())] = False
            bucket = bucket_of[cluster]
            order = np.argsort(bucket, kind="stable")
            cuts = np.flatnonzero(np.diff(bucket[order])) + 1
            for part in np.split(order, cuts) if len(order) else []:
                pts = point[part]
                table = pa.table(
                    {
                        "row": pa.array(source.offset + start + pts, pa.int64()),
                        "cluster": pa.array(cluster[part], pa.int32()),
                        "secondary": pa.array(secondary[part]),
                        "embedding": packed(x[pts]),
                    }
                )
                writers.write(int(bucket[part[0]]), table)
    finally:
        writers.close()
    return _finish(
        tmp, final, {"rows": source.rows, "by_radius": by_radius, "memberships": n_members}
    )
