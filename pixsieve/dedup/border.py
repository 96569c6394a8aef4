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

import math
from dataclasses import dataclass

import numpy as np

#: Above this many centroids the centroid Gram matrix is not built; cosines are computed per row.
GRAM_MAX_CLUSTERS: int = 4096


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


def border_chunk(
    sims: np.ndarray, ids: np.ndarray, centroids: np.ndarray, gram: np.ndarray | None, half: float
) -> tuple[np.ndarray, np.ndarray]:
    """Border memberships of one chunk of rows: ``(row within chunk, cluster)``.

    ``gram`` is the centroid Gram matrix, or ``None`` to compute centroid cosines per pair;
    ``half`` is :func:`border_margin`.
    """
    m = ids.shape[1]
    own = np.repeat(ids[:, 0], m - 1)
    other = ids[:, 1:].reshape(-1)
    gap = (sims[:, :1] - sims[:, 1:]).reshape(-1)
    if gram is not None:
        cos = gram[own, other]
    else:  # many centroids: each distinct centroid pair once (rows share their neighbours)
        k = len(centroids)
        pair, back = np.unique(own.astype(np.int64) * k + np.maximum(other, 0), return_inverse=True)
        a, b = pair // k, pair % k
        cos_pair = np.empty(len(pair), dtype=np.float32)
        for lo in range(0, len(pair), 16384):
            sl = slice(lo, lo + 16384)
            cos_pair[sl] = np.einsum("ij,ij->i", centroids[a[sl]], centroids[b[sl]])
        cos = cos_pair[back.reshape(-1)]
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cos.astype(np.float64)))
    take = np.flatnonzero((other >= 0) & (other != own) & (gap <= half * dist))
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
        gram = centroids @ centroids.T if k <= GRAM_MAX_CLUSTERS else None
        step = max(1, chunk_rows)
        for start in range(0, n, step):
            stop = min(start + step, n)
            rows, other = border_chunk(sims[start:stop], ids[start:stop], centroids, gram, half)
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
