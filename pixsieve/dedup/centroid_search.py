"""Each item's nearest centroids: exact for few centroids, through a coarse level for many.

:class:`CentroidSearch` finds the ``m`` most similar centroids of every row (cosine, nearest
first, ties to the lowest centroid id), which is the item's own cluster and the neighbours the
border rule looks at. Up to :data:`FLAT_MAX_CENTROIDS` centroids it is exact: one float32 matrix
product per chunk of rows and a partial sort. Above, it is two-level, so the cost per item grows
with ``sqrt(k)`` instead of ``k``: the centroids are grouped under ``round(2 * sqrt(k))`` coarse
centroids (a k-means over the centroids themselves, so any centroid set can be searched, those
of an earlier run included); each row is compared with the coarse centroids, and then with the
centroids of its :data:`PROBES` nearest coarse groups: probe by probe, the rows of a chunk
sorted by group and one matrix product per group. Rows whose coarse similarities do not
separate the probed groups from the others (:data:`DOUBT`) are searched again with more probes,
then exactly. A centroid outside the probed groups is missed, which can only cost recall at a
cluster border, never precision.
"""

from __future__ import annotations

import hashlib
import math
import threading
from typing import Any

import numpy as np

from pixsieve.dedup.kmeans import CHUNK_ROWS, Progress, faiss_kmeans, load_faiss, nearest_labels

#: Up to this many centroids the search is exact (docs/dedup.md, "How the search works"). Measured
#: single-threaded on planted 768-d data: exact 17 µs per item at 1,000 centroids, 44 at 3,000;
#: two-level 8 at 1,000 and 11-15 at 3,000, so above a thousand the two levels are cheaper.
FLAT_MAX_CENTROIDS: int = 1024
#: Coarse groups each row is compared into, in the two-level search: its nearest ones.
PROBES: int = 3
#: Rows in doubt after the first round are searched again with this many times the probes.
WIDEN: int = 4
#: A row is searched exactly when its nearest coarse group not probed is within this cosine of its
#: nearest one (the coarse similarities do not separate its groups well enough).
DOUBT: float = 0.08
#: The two-level search is used only when the centroids gather around their coarse centroids
#: (mean cosine at least this); otherwise the search stays exact. Measured on planted data with
#: 15 centroids per topic: 0.41-0.67; with more topics than centroids (nothing above the
#: clusters): 0.17-0.20, where two levels found only 85-94% of the border neighbours.
COHERENCE_MIN: float = 0.25
#: The two-level search groups the centroids under ``SEARCH_GROUPS * sqrt(k)`` coarse ones
#: (the coherence test uses ``sqrt(k)``, where it was calibrated). Measured single-threaded:
#: twice as many took the 5M benchmark's search at k = 5,000 from 24.3 to 19.2 µs per row and
#: the centroid-search benchmark's at k = 10,000 from 23.8 to 20.5 (the same at 3,000-5,000),
#: with as many border neighbours found or more.
SEARCH_GROUPS: float = 2.0
#: Rows per chunk of the two-level search (one matrix product per coarse group and chunk).
TWO_LEVEL_CHUNK: int = 16384
#: Neighbours whose float32 similarities differ by less than this are ordered in float64.
TIE: float = 2e-6
#: Rows per matrix product of the exact search, and most similarities one product holds
#: (12 MiB, its partial sort's int64 positions 24 MiB: fewer rows per product above 768
#: centroids). Temporaries above glibc's 32 MiB mmap threshold are fresh pages every chunk,
#: zeroed by the kernel: with 64 MiB products, 0.35 of 2.44 CPU s for 32k rows against 5,000
#: centroids on one thread (none with 12 MiB), and page faults cost more with two threads.
EXACT_CHUNK: int = 4096
EXACT_CELLS: int = 3 << 20


_LEVELS: dict[tuple[bytes, int, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_LEVELS_LOCK = threading.Lock()


def coarse_level(
    centroids: np.ndarray, seed: int = 0, per_root: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group ``centroids`` under ``round(per_root * sqrt(k))`` coarse ones: ``(coarse, order,
    starts)``.

    ``order`` lists the centroid ids group by group, group ``g`` being
    ``order[starts[g]:starts[g + 1]]``; its coarse centroid is ``coarse[g]``. Deterministic, and
    cached per centroid set (the tasks of one run build it once per process).
    """
    key = (hashlib.blake2b(centroids.tobytes(), digest_size=16).digest(), seed, per_root)
    hit = _LEVELS.get(key)  # one lookup: another thread may evict between two
    if hit is not None:
        return hit
    k = len(centroids)
    k1 = max(1, round(per_root * math.sqrt(k)))
    coarse = faiss_kmeans(centroids, k1, iters=20, points_per_centroid=k, seed=seed)
    group = nearest_labels(centroids, coarse)
    used = np.unique(group)  # drop coarse centroids that no centroid is nearest to
    coarse = np.ascontiguousarray(coarse[used])
    group = np.searchsorted(used, group)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=len(used)))])
    level = (coarse, order, starts)
    with _LEVELS_LOCK:  # tasks on threads: another may be evicting
        if len(_LEVELS) >= 4:
            _LEVELS.pop(next(iter(_LEVELS)))
        _LEVELS[key] = level
    return level


def _top(s: np.ndarray, ids: np.ndarray | None, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest of each row of ``s`` (nearest first, ties by id): ``(values, ids)``.

    ``ids`` maps the columns of ``s`` to centroid ids: one row for all rows, one per row, or
    ``None`` (the column itself).
    """
    k = s.shape[1]
    top = np.argpartition(s, k - m, axis=1)[:, k - m :] if m < k else np.argsort(s, axis=1)
    val = np.take_along_axis(s, top, axis=1)
    cid = top if ids is None else ids[top] if ids.ndim == 1 else np.take_along_axis(ids, top, 1)
    order = np.lexsort((cid, -val), axis=1)
    return np.take_along_axis(val, order, axis=1), np.take_along_axis(cid, order, axis=1)


def _coherent(centroids: np.ndarray) -> bool:
    """Whether the centroids gather around ``sqrt(k)`` coarse ones (mean cosine at least
    :data:`COHERENCE_MIN`); without structure above the clusters the coarse level misleads."""
    coarse, order, starts = coarse_level(centroids)
    spread = np.repeat(coarse, np.diff(starts), axis=0)
    return bool(np.einsum("kd,kd->k", centroids[order], spread).mean() >= COHERENCE_MIN)


class CentroidSearch:
    """Finds each item's ``m`` nearest centroids (by cosine), nearest first.

    Exact up to :data:`FLAT_MAX_CENTROIDS` centroids, two-level above (``probes`` coarse groups
    per row; ``doubt``: :data:`DOUBT`); with ``use_gpu``, faiss's exact search on the GPU.
    """

    def __init__(
        self,
        centroids: np.ndarray,
        m: int,
        use_gpu: bool = False,
        probes: int | None = None,
        doubt: float | None = None,
    ) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.m = min(m, len(self.centroids))
        self.index: Any = None
        self.level: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.doubt = DOUBT if doubt is None else doubt
        self.exact_rows = 0  # rows the two-level search handed to the exact one
        if use_gpu:  # pragma: no cover - needs a faiss GPU build
            faiss = load_faiss()
            self.index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(self.centroids.shape[1]))
            self.index.add(self.centroids)
        elif len(self.centroids) > FLAT_MAX_CENTROIDS and _coherent(self.centroids):
            self.level = coarse_level(self.centroids, per_root=SEARCH_GROUPS)
            self.grouped = np.ascontiguousarray(self.centroids[self.level[1]])
        self.probes = min(probes or PROBES, len(self.level[0])) if self.level else 0

    def search(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(sims (n, m) float32, ids (n, m) int64)`` for the unit rows ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.index is not None:
            return self.index.search(x, self.m)
        if self.level is None:
            sims, ids = self._exact(x)
        else:
            sims = np.empty((len(x), self.m), dtype=np.float32)
            ids = np.empty((len(x), self.m), dtype=np.int64)
            for lo in range(0, len(x), TWO_LEVEL_CHUNK):
                block = x[lo : lo + TWO_LEVEL_CHUNK]
                sims[lo : lo + len(block)], ids[lo : lo + len(block)] = self._two_level(block)
        return self._settle(x, sims, ids)

    def _settle(
        self, x: np.ndarray, sims: np.ndarray, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reorder the rows with near-equal neighbours by similarities computed row by row in
        float64: a matrix product's last bits depend on the rows it was computed with, so
        without this the order of two near-tied centroids could depend on the chunking."""
        rows = np.flatnonzero((np.diff(sims, axis=1) > -TIE).any(axis=1))
        if len(rows):
            near = self.centroids[ids[rows]].astype(np.float64)
            exact = np.einsum("nd,nmd->nm", x[rows].astype(np.float64), near)
            order = np.lexsort((ids[rows], -exact), axis=1)
            sims[rows] = np.take_along_axis(exact, order, axis=1)
            ids[rows] = np.take_along_axis(ids[rows], order, axis=1)
        return sims, ids

    def _exact(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search: one matrix product and a partial sort per :data:`EXACT_CHUNK` rows (or
        fewer, :data:`EXACT_CELLS`)."""
        sims = np.empty((len(x), self.m), dtype=np.float32)
        ids = np.empty((len(x), self.m), dtype=np.int64)
        step = max(16, min(EXACT_CHUNK, EXACT_CELLS // len(self.centroids)))
        for lo in range(0, len(x), step):
            hi = min(lo + step, len(x))
            sims[lo:hi], ids[lo:hi] = _top(x[lo:hi] @ self.centroids.T, None, self.m)
        return sims, ids

    def _two_level(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two-level search of one chunk, in rounds of :meth:`_probe` with ever more probes:
        ``probes`` coarse groups per row, then :data:`WIDEN` times as many for the rows in doubt,
        then the exact search for the rows still in doubt."""
        assert self.level is not None
        n, m, k1 = len(x), self.m, len(self.level[0])
        near = x @ self.level[0].T
        sims = np.empty((n, m), dtype=np.float32)
        ids = np.empty((n, m), dtype=np.int64)
        rows = np.arange(n)
        for p in (self.probes, self.probes * WIDEN):
            if not len(rows) or p >= k1:
                break
            sure, found = self._probe(x, near, rows, p)
            sims[rows[sure]], ids[rows[sure]] = found
            rows = rows[~sure]
        self.exact_rows += len(rows)
        if len(rows):
            sims[rows], ids[rows] = self._exact(x[rows])
        return sims, ids

    def _probe(
        self, x: np.ndarray, near: np.ndarray, rows: np.ndarray, p: int
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Search ``rows`` among the centroids of their ``p`` nearest coarse groups (``near``:
        the rows' coarse similarities): probe by probe, the rows sorted by that group and one
        matrix product per group. Returns ``(sure, (sims, ids) of the sure rows)``; a row is
        not sure when its nearest unprobed group is within :data:`DOUBT` of its nearest group,
        or when fewer than ``m`` centroids were probed."""
        assert self.level is not None
        _, order, starts = self.level
        m, k1 = self.m, len(starts) - 1
        s = near[rows]
        cut = np.partition(s, (k1 - p - 1, k1 - 1), axis=1)
        sure = cut[:, k1 - p - 1] < cut[:, k1 - 1] - self.doubt
        probe = np.argpartition(s[sure], k1 - p, axis=1)[:, k1 - p :]
        rows = rows[sure]
        val = np.full((len(rows), p * m), -np.inf, dtype=np.float32)
        cid = np.full((len(rows), p * m), -1, dtype=np.int64)
        for j in range(p):
            by = np.argsort(probe[:, j], kind="stable")
            bounds = np.searchsorted(probe[by, j], np.arange(k1 + 1))
            for g in np.flatnonzero(np.diff(bounds)):
                r = by[bounds[g] : bounds[g + 1]]
                lo, hi = starts[g], starts[g + 1]
                t = min(m, hi - lo)
                sg = x[rows[r]] @ self.grouped[lo:hi].T
                if t < hi - lo:  # the t largest, unordered (the final _top orders them)
                    c = np.argpartition(sg, hi - lo - t, axis=1)[:, hi - lo - t :]
                    v, c = np.take_along_axis(sg, c, axis=1), order[lo + c]
                else:
                    v, c = sg, np.broadcast_to(order[lo:hi], sg.shape)
                val[r, j * m : j * m + t], cid[r, j * m : j * m + t] = v, c
        sims, ids = _top(val, cid, m)
        full = ~(ids < 0).any(axis=1)
        sure[np.flatnonzero(sure)[~full]] = False
        return sure, (sims[full], ids[full])


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
