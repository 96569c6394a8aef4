"""Cluster membership with border points: who is compared with whom.

Every point is a *primary* member of its nearest centroid. It is also a *secondary* member of a
neighbouring cluster ``b`` (among its ``border_candidates`` nearest centroids) when it lies close
enough to the border with ``b``::

    s(own) - s(b) <= slack * delta * |c_own - c_b| / 2,   delta = sqrt(2 * (1 - threshold))

For unit vectors ``x`` (in cluster ``a``) and ``y`` (in ``b``) with ``cos(x, y) >= threshold``,
``|x - y| <= delta`` and the two gaps sum to ``<y - x, c_b - c_a> <= delta * |c_a - c_b|``, so at
least one of them is within half of it: with ``slack = 1`` one point of every such pair is a
secondary member of the other's cluster, provided that cluster is among its examined
candidates. Within a cluster, primaries are compared with primaries and with secondaries;
secondaries are never compared with each other (their pair is found in their own clusters).
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass

import numpy as np

#: Above this many centroids the centroid Gram matrix is not built (64 MiB at 4,096): the
#: cosines come from a table of each centroid's nearest (:class:`CentroidCosines`).
GRAM_MAX_CLUSTERS: int = 4096
#: Nearest centroids per centroid in that table (16 held 98.4% of the pairs asked for on the 5M
#: benchmark's 5,000 centroids; 64 held 98.6%).
TABLE_NEIGHBOURS: int = 32


@dataclass(frozen=True)
class Membership:
    """Members of every cluster, primaries first, as one flat array with offsets.

    Attributes:
        order: member indices, cluster after cluster; within a cluster primaries (ascending)
            then secondaries (ascending).
        offsets: ``(k + 1,)`` start of each cluster in ``order``.
        n_primary: ``(k,)`` primaries per cluster.
    """

    order: np.ndarray
    offsets: np.ndarray
    n_primary: np.ndarray

    @property
    def n_clusters(self) -> int:
        """Number of clusters."""
        return len(self.n_primary)

    @property
    def n_secondary(self) -> int:
        """Total secondary (border) memberships."""
        return int(len(self.order) - self.n_primary.sum())

    def members(self, cluster: int) -> tuple[np.ndarray, int]:
        """Return ``(member indices, number of primaries)`` of one cluster."""
        lo, hi = self.offsets[cluster], self.offsets[cluster + 1]
        return self.order[lo:hi], int(self.n_primary[cluster])

    def sizes(self) -> np.ndarray:
        """Members per cluster (primaries + secondaries)."""
        return np.diff(self.offsets)


def border_margin(threshold: float, slack: float) -> float:
    """``slack * delta / 2``: multiply by ``|c_a - c_b|`` to get the gap allowed at that border."""
    delta = math.sqrt(max(0.0, 2.0 * (1.0 - threshold)))
    return slack * delta / 2.0


class CentroidCosines:
    """``cos(c_a, c_b)`` of the centroid pairs the border rule asks about (a row's own centroid
    and one of its nearest): the Gram matrix up to :data:`GRAM_MAX_CLUSTERS` centroids; above,
    a table of each centroid's :data:`TABLE_NEIGHBOURS` nearest centroids (found by
    :class:`pixsieve.dedup.centroid_search.CentroidSearch`, so it costs what the search costs,
    not ``k²``), looked up by key, and the few pairs outside it computed directly. Measured on
    the 5M benchmark's 5,000 centroids: 98.4% of the pairs asked for are in the table, and a
    row's border rule costs 0.5 µs instead of 10 (every distinct pair's two centroids gathered
    and multiplied). Built once per centroid set and process (:func:`centroid_cosines`)."""

    def __init__(self, centroids: np.ndarray) -> None:
        from pixsieve.dedup.centroid_search import CentroidSearch  # it imports k-means

        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        k = len(self.centroids)
        self.gram = self.centroids @ self.centroids.T if k <= GRAM_MAX_CLUSTERS else None
        self.keys = self.values = np.empty(0)
        if self.gram is None:
            sims, ids = CentroidSearch(self.centroids, TABLE_NEIGHBOURS + 1).search(self.centroids)
            filled = ids.reshape(-1) >= 0  # each centroid finds at least itself: never empty
            keys = (np.arange(k, dtype=np.int64)[:, None] * k + ids).reshape(-1)[filled]
            values = sims.reshape(-1)[filled]
            order = np.argsort(keys, kind="stable")
            self.keys, self.values = keys[order], values[order]

    def __call__(self, own: np.ndarray, other: np.ndarray) -> np.ndarray:
        """The cosines of the pairs ``(own[i], other[i])`` (centroid ids), float32."""
        if self.gram is not None:
            return self.gram[own, other]
        k = len(self.centroids)
        key = own.astype(np.int64) * k + other
        at = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        found = self.keys[at] == key
        cos = np.empty(len(key), dtype=np.float32)
        cos[found] = self.values[at[found]]
        miss = np.flatnonzero(~found)
        if len(miss):  # each distinct pair once (rows share their neighbours)
            pair, back = np.unique(key[miss], return_inverse=True)
            a, b = pair // k, pair % k
            cos_pair = np.empty(len(pair), dtype=np.float32)
            for lo in range(0, len(pair), 16384):
                sl = slice(lo, lo + 16384)
                cos_pair[sl] = np.einsum("ij,ij->i", self.centroids[a[sl]], self.centroids[b[sl]])
            cos[miss] = cos_pair[back.reshape(-1)]
        return cos


_COSINES: dict[bytes, CentroidCosines] = {}
_COSINES_LOCK = threading.Lock()


def centroid_cosines(centroids: np.ndarray) -> CentroidCosines:
    """The :class:`CentroidCosines` of ``centroids``, cached per process (a run's tasks share
    it, and the first builds it while the others wait; the last two centroid sets are kept)."""
    key = hashlib.blake2b(np.ascontiguousarray(centroids).tobytes(), digest_size=16).digest()
    with _COSINES_LOCK:
        if key not in _COSINES:
            if len(_COSINES) >= 2:
                _COSINES.pop(next(iter(_COSINES)))
            _COSINES[key] = CentroidCosines(centroids)
        return _COSINES[key]


def border_chunk(
    sims: np.ndarray, ids: np.ndarray, cosines: CentroidCosines, half: float
) -> tuple[np.ndarray, np.ndarray]:
    """Border memberships of one chunk of rows: ``(row within chunk, cluster)``.

    ``cosines`` gives the centroid cosines (:func:`centroid_cosines`); ``half`` is
    :func:`border_margin`. Only the neighbours within ``2 * half`` of the own centroid's
    similarity can pass (``|c_a - c_b| <= 2``), so only their cosines are looked up.
    """
    m = ids.shape[1]
    own = np.repeat(ids[:, 0], m - 1)
    other = ids[:, 1:].reshape(-1)
    gap = (sims[:, :1] - sims[:, 1:]).reshape(-1)
    near = np.flatnonzero((other >= 0) & (other != own) & (gap <= half * (2.0 + 1e-6)))
    cos = cosines(own[near], other[near])
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cos.astype(np.float64)))
    take = near[gap[near] <= half * dist]
    return take // (m - 1), other[take].astype(np.int64)


def build_membership(
    sims: np.ndarray,
    ids: np.ndarray,
    centroids: np.ndarray,
    *,
    threshold: float,
    slack: float,
    chunk_rows: int = 65536,
) -> Membership:
    """Primary and border memberships from the nearest-centroid search.

    Args:
        sims, ids: ``(N, m)`` similarities to and indices of the ``m`` nearest centroids, nearest
            first (:func:`pixsieve.dedup.kmeans.assign`).
        centroids: ``(k, D)`` unit centroids.
        threshold: the duplicate threshold (sets ``delta``).
        slack: scale of the border margin; 0 keeps only primary memberships.
        chunk_rows: rows examined at a time (bounds temporary memory).
    """
    n, m = ids.shape
    k = len(centroids)
    points = [np.arange(n, dtype=np.int64)]
    clusters = [ids[:, 0].astype(np.int64)]
    half = border_margin(threshold, slack)
    if m > 1 and half > 0:
        cosines = centroid_cosines(centroids)
        step = max(1, chunk_rows)
        for start in range(0, n, step):
            stop = min(start + step, n)
            rows, other = border_chunk(sims[start:stop], ids[start:stop], cosines, half)
            points.append(rows + start)
            clusters.append(other)
    point = np.concatenate(points)
    cluster = np.concatenate(clusters)
    is_sec = np.zeros(len(point), dtype=bool)
    is_sec[n:] = True
    perm = np.lexsort((point, is_sec, cluster))
    offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(np.bincount(cluster, minlength=k), out=offsets[1:])
    n_primary = np.bincount(ids[:, 0], minlength=k).astype(np.int64)
    return Membership(order=point[perm], offsets=offsets, n_primary=n_primary)
