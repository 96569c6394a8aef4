"""Training the centroids: spherical k-means, two-level above a few hundred centroids.

Flat k-means costs ``sample × k`` products per iteration, and the sample grows with ``k``
(``kmeans_points_per_centroid`` points per centroid), so its cost per item grows with ``k``.
Above :data:`TWO_LEVEL_MIN_CENTROIDS` the centroids are trained in two levels (coarse centroids
on the sample, then fine ones inside each coarse part), which gives the seeding, and then refined
by :data:`REFINE_ITERS` Lloyd iterations over the whole sample whose assignment is the search
the items get (:class:`pixsieve.dedup.centroid_search.CentroidSearch`: exact up to a thousand
centroids, two-level above). Without the refinement, cluster borders cut through dense regions
(measured: 7× the border memberships of flat k-means at 300k items); with it, fewer than flat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from pixsieve.dedup.centroid_search import FLAT_MAX_CENTROIDS, CentroidSearch
from pixsieve.dedup.kmeans import faiss_kmeans, mean_centroid, nearest_labels, sample_indices

#: A flat spherical k-means: ``flat(train, k, iters=, points_per_centroid=, seed=)`` returns
#: ``(k, D)`` unit centroids (:func:`faiss_kmeans`, or torch's in :mod:`pixsieve.dedup.torch_ops`).
FlatKMeans = Callable[..., np.ndarray]

#: Above this many centroids k-means is two-level (:func:`train_centroids`): at 256 a flat
#: k-means on the 16k-point sample still costs ~1 CPU s, and above it flat cost grows with ``k``.
TWO_LEVEL_MIN_CENTROIDS: int = 256
#: Lloyd iterations over the whole sample after the two-level seeding (measured at 300k items:
#: border memberships 1.02M with none, 121k with 2, 82k with 4; flat k-means: 146k).
REFINE_ITERS: int = 3
#: Fewest sample points a fine centroid of the two-level k-means is fitted on, where the sample
#: allows (the default sample gives it ``kmeans_points_per_centroid``, 64, on average).
MIN_POINTS_PER_FINE: int = 16


def fit_centroids(
    x: np.ndarray,
    k: int,
    *,
    iters: int,
    points_per_centroid: int,
    seed: int,
    use_gpu: bool = False,
) -> np.ndarray:
    """Spherical k-means (:func:`train_centroids`) on a sample of the unit rows ``x``."""
    idx = sample_indices(len(x), k, points_per_centroid, seed)
    train = x if len(idx) == len(x) else x[idx]
    return train_centroids(
        train, k, iters=iters, points_per_centroid=points_per_centroid, seed=seed, use_gpu=use_gpu
    )


def train_centroids(
    train: np.ndarray,
    k: int,
    *,
    iters: int,
    points_per_centroid: int,
    seed: int,
    use_gpu: bool = False,
    flat: FlatKMeans | None = None,
) -> np.ndarray:
    """Spherical k-means on the unit rows ``train`` (the sample); returns ``(k, D)`` centroids.

    Up to :data:`TWO_LEVEL_MIN_CENTROIDS` centroids one flat k-means (``flat``, faiss's by
    default); above it two levels: ``round(sqrt(k))`` coarse centroids on the sample, the sample
    split by its nearest coarse centroid, then in each part a flat k-means with a share of the
    ``k`` centroids proportional to the part's share of the sample (at least
    :data:`MIN_POINTS_PER_FINE` points per centroid where the sample allows). Flat k-means costs
    ``sample × k`` products per iteration; two levels cost ``sample × (sqrt(k) + k / sqrt(k))``.
    Deterministic for a ``seed``: the parts are fitted in order with seeds ``seed + 1 + part``.
    """
    if flat is None:
        flat = partial(faiss_kmeans, use_gpu=use_gpu)
    if k <= 1:
        return mean_centroid(train)
    if k <= TWO_LEVEL_MIN_CENTROIDS or len(train) <= k:
        return flat(train, k, iters=iters, points_per_centroid=points_per_centroid, seed=seed)
    train = np.ascontiguousarray(train, dtype=np.float32)
    k1 = round(math.sqrt(k))
    coarse = flat(train, k1, iters=iters, points_per_centroid=points_per_centroid, seed=seed)
    label = nearest_labels(train, coarse)
    counts = np.bincount(label, minlength=len(coarse))
    share = allocate(counts, k, max(1, min(MIN_POINTS_PER_FINE, points_per_centroid)))
    order = np.argsort(label, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    pieces = []
    for part, kj in enumerate(share):
        if not kj:
            continue
        rows = train[order[bounds[part] : bounds[part + 1]]]
        pieces.append(
            mean_centroid(rows)
            if kj == 1
            else flat(
                rows,
                int(kj),
                iters=iters,
                points_per_centroid=points_per_centroid,
                seed=seed + 1 + part,
            )
        )
    centroids = np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)
    return refine(train, centroids, REFINE_ITERS)


def allocate(counts: np.ndarray, k: int, min_points: int) -> np.ndarray:
    """Split ``k`` centroids over parts holding ``counts`` sample points, proportionally.

    Every non-empty part gets at least one centroid and, where the total allows, at most
    ``counts // min_points``; never more centroids than points. Largest remainders (ties to the
    lowest part) take the rest, so the split is deterministic. Requires ``counts.sum() >= k``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    cap = np.maximum(counts // min_points, (counts > 0).astype(np.int64))
    if cap.sum() < k:
        cap = counts.copy()
    quota = counts * (k / counts.sum())
    share = np.minimum(np.floor(quota).astype(np.int64), cap)
    share = np.maximum(share, (counts > 0).astype(np.int64))
    while share.sum() != k:
        deficit = quota - share
        if share.sum() < k:
            open_ = np.flatnonzero(share < cap)
            take = open_[np.argsort(-deficit[open_], kind="stable")][: k - share.sum()]
            share[take] += 1
        else:
            open_ = np.flatnonzero(share > 1)
            take = open_[np.argsort(deficit[open_], kind="stable")][: share.sum() - k]
            share[take] -= 1
    return share


def refine(train: np.ndarray, centroids: np.ndarray, iters: int, chunk: int = 8192) -> np.ndarray:
    """``iters`` spherical Lloyd iterations of ``centroids`` over the unit rows ``train``.

    Each row goes to its nearest centroid as the search finds it (exact up to
    :data:`FLAT_MAX_CENTROIDS`, two-level above); a centroid left without rows keeps its place.
    Sums are float64 and accumulated chunk by chunk (no copy of the sample).
    """
    c = centroids
    for _ in range(iters):
        if len(c) > FLAT_MAX_CENTROIDS:
            search = CentroidSearch(c, 1)
        sums = np.zeros(c.shape, dtype=np.float64)
        for lo in range(0, len(train), chunk):
            rows = train[lo : lo + chunk]
            if len(c) > FLAT_MAX_CENTROIDS:
                label = search.search(rows)[1][:, 0]
            else:
                label = nearest_labels(rows, c)
            _add_by_label(sums, rows, label)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        filled = norms[:, 0] > 0
        c = c.copy()
        c[filled] = (sums[filled] / norms[filled]).astype(np.float32)
    return np.ascontiguousarray(c, dtype=np.float32)


def _add_by_label(sums: np.ndarray, rows: np.ndarray, label: np.ndarray) -> None:
    """``sums[g] += rows[label == g].sum(0)`` for every label ``g``, in float64: the rows sorted
    by label and one sum per run of a label (``np.add.reduceat`` took 4x the time: 38 ms for
    8,192 rows into 1,000 labels, against 10)."""
    if not len(label):
        return
    order = np.argsort(label, kind="stable")
    x, lab = rows[order], label[order]
    cuts = np.flatnonzero(np.diff(lab)) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(lab)]
    for g, a, b in zip(lab[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
        sums[g] += x[a:b].sum(axis=0, dtype=np.float64)
