"""Each item's nearest centroids: exact for few centroids, through a coarse level for many.

:class:`CentroidSearch` finds the ``m`` most similar centroids of every row (cosine, nearest
first, ties to the lowest centroid id), which is the item's own cluster and the neighbours the
border rule looks at. Up to :data:`FLAT_MAX_CENTROIDS` centroids it is exact: one float32 matrix
product per chunk of rows and a partial sort. Above, it is two-level, so the cost per item grows
with ``sqrt(k)`` instead of ``k``: the centroids are grouped under ``round(sqrt(k))`` coarse
centroids (a k-means over the centroids themselves, so any centroid set can be searched, those
of an earlier run included); each row is compared with the coarse centroids, and then, for its
:data:`PROBES` nearest coarse groups, with their centroids, one matrix product per group for
all the rows of a chunk that probe it. A centroid outside the probed groups is missed, which can
only cost recall at a cluster border, never precision.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from pixsieve.dedup.kmeans import CHUNK_ROWS, Progress, faiss_kmeans, load_faiss, nearest_labels

#: Up to this many centroids the search is exact (measured on 768-d planted data: 2x cheaper than
#: the two-level one at 1,000 centroids, the same cost at 3,000 and 1.2x dearer at 6,000).
FLAT_MAX_CENTROIDS: int = 4096
#: Coarse groups each row is compared into, in the two-level search.
PROBES: int = 8
#: Rows per chunk of the two-level search (its candidate arrays: rows × probes × m).
TWO_LEVEL_CHUNK: int = 8192

_LEVELS: dict[tuple[bytes, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def coarse_level(centroids: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group ``centroids`` under ``round(sqrt(k))`` coarse ones: ``(coarse, order, starts)``.

    ``order`` lists the centroid ids group by group, group ``g`` being
    ``order[starts[g]:starts[g + 1]]``; its coarse centroid is ``coarse[g]``. Deterministic, and
    cached per centroid set (the tasks of one run build it once per process).
    """
    key = (hashlib.blake2b(centroids.tobytes(), digest_size=16).digest(), seed)
    if key in _LEVELS:
        return _LEVELS[key]
    k = len(centroids)
    k1 = max(1, round(math.sqrt(k)))
    coarse = faiss_kmeans(centroids, k1, iters=20, points_per_centroid=k, seed=seed)
    group = nearest_labels(centroids, coarse)
    used = np.unique(group)  # drop coarse centroids that no centroid is nearest to
    coarse = np.ascontiguousarray(coarse[used])
    group = np.searchsorted(used, group)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=len(used)))])
    if len(_LEVELS) >= 4:
        _LEVELS.pop(next(iter(_LEVELS)))
    _LEVELS[key] = (coarse, order, starts)
    return _LEVELS[key]


def _top(s: np.ndarray, ids: np.ndarray | None, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest of each row of ``s`` (nearest first, ties by id): ``(values, ids)``.

    ``ids`` maps the columns of ``s`` to centroid ids (per row, or ``None`` for the column).
    """
    k = s.shape[1]
    top = np.argpartition(s, k - m, axis=1)[:, k - m :] if m < k else np.argsort(s, axis=1)
    val = np.take_along_axis(s, top, axis=1)
    cid = top if ids is None else np.take_along_axis(ids, top, axis=1)
    order = np.lexsort((cid, -val), axis=1)
    return np.take_along_axis(val, order, axis=1), np.take_along_axis(cid, order, axis=1)


class CentroidSearch:
    """Finds each item's ``m`` nearest centroids (by cosine), nearest first.

    Exact up to :data:`FLAT_MAX_CENTROIDS` centroids, two-level above (``probes`` coarse groups
    per row); with ``use_gpu``, faiss's exact search on the GPU.
    """

    def __init__(
        self, centroids: np.ndarray, m: int, use_gpu: bool = False, probes: int | None = None
    ) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.m = min(m, len(self.centroids))
        self.index: Any = None
        self.level: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if use_gpu:  # pragma: no cover - needs a faiss GPU build
            faiss = load_faiss()
            self.index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(self.centroids.shape[1]))
            self.index.add(self.centroids)
        elif len(self.centroids) > FLAT_MAX_CENTROIDS:
            self.level = coarse_level(self.centroids)
            self.grouped = np.ascontiguousarray(self.centroids[self.level[1]])
        self.probes = min(probes or PROBES, len(self.level[0])) if self.level else 0

    def search(self, x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """``(sims (n, m) float32, ids (n, m) int64)`` for the unit rows ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.index is not None:
            return self.index.search(x, self.m)
        n, m = len(x), self.m
        sims = np.empty((n, m), dtype=np.float32)
        ids = np.empty((n, m), dtype=np.int64)
        step = chunk if self.level is None else TWO_LEVEL_CHUNK
        for lo in range(0, n, step):
            block = x[lo : lo + step]
            if self.level is None:
                found = _top(block @ self.centroids.T, None, m)
            else:
                found = self._two_level(block)
            sims[lo : lo + len(block)], ids[lo : lo + len(block)] = found
        return sims, ids

    def _two_level(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two-level search of one chunk: each row's ``probes`` nearest coarse groups, then one
        matrix product per group for all the rows probing it; rows left with fewer than ``m``
        candidates are searched exactly."""
        assert self.level is not None
        coarse, order, starts = self.level
        n, m, p, k1 = len(x), self.m, self.probes, len(coarse)
        near = x @ coarse.T
        if p < k1:
            probe = np.argpartition(near, k1 - p, axis=1)[:, k1 - p :]
        else:
            probe = np.tile(np.arange(k1), (n, 1))
        flat = probe.ravel()
        by_group = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[by_group], np.arange(k1 + 1))
        val = np.full((n * p, m), -np.inf, dtype=np.float32)
        cid = np.full((n * p, m), -1, dtype=np.int64)
        for g in np.flatnonzero(np.diff(bounds)):
            slots = by_group[bounds[g] : bounds[g + 1]]
            lo, hi = starts[g], starts[g + 1]
            t = min(m, hi - lo)
            sg = np.take(x, slots // p, axis=0) @ self.grouped[lo:hi].T
            c = np.argpartition(sg, hi - lo - t, axis=1)[:, hi - lo - t :] if t < hi - lo else None
            v = sg if c is None else np.take_along_axis(sg, c, axis=1)
            c = np.arange(hi - lo)[None, :] if c is None else c
            val[slots, :t] = v
            cid[slots, :t] = order[lo + c]
        sims, ids = _top(val.reshape(n, p * m), cid.reshape(n, p * m), m)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short):
            sims[short], ids[short] = _top(x[short] @ self.centroids.T, None, m)
        return sims, ids


def assign(
    x: np.ndarray,
    centroids: np.ndarray,
    m: int,
    *,
    use_gpu: bool = False,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``m`` nearest centroids of every row: ``(sims (N, m) float32, ids (N, m))``.

    Columns are ordered by decreasing similarity; column 0 is the point's own cluster.
    """
    n = x.shape[0]
    search = CentroidSearch(centroids, m, use_gpu)
    sims = np.empty((n, search.m), dtype=np.float32)
    ids = np.empty((n, search.m), dtype=np.int64)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        sims[start:stop], ids[start:stop] = search.search(x[start:stop])
        if progress:
            progress("assign", stop, n)
    return sims, ids
