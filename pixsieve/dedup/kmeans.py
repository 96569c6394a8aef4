"""Normalisation, spherical k-means and nearest-centroid assignment with faiss.

k-means is trained on a sample (``points_per_centroid * k`` points at most); every point is then
assigned by a chunked exact search over the centroids, which also returns the next nearest
centroids that the border rule needs. faiss runs on GPU when it was built with GPU support and
one is visible, else on CPU. faiss is imported when first used (:func:`load_faiss`), so
``import pixsieve`` works without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from types import ModuleType

import numpy as np

from pixsieve.errors import EmbeddingError

FAISS_HINT = "semantic dedup needs faiss: pip install faiss-cpu (or a faiss GPU build)"

Progress = Callable[[str, int, int], None]
#: A flat spherical k-means: ``flat(train, k, iters=, points_per_centroid=, seed=)`` returns
#: ``(k, D)`` unit centroids (:func:`faiss_kmeans`, or torch's in :mod:`pixsieve.dedup.torch_ops`).
FlatKMeans = Callable[..., np.ndarray]

#: Rows per chunk when streaming over the embeddings (norms, search).
CHUNK_ROWS: int = 65536
#: Above this many centroids k-means is two-level (:func:`train_centroids`): at 256 a flat
#: k-means on the 16k-point sample still costs ~1 CPU s, and above it flat cost grows with ``k``.
TWO_LEVEL_MIN_CENTROIDS: int = 256
#: Fewest sample points a fine centroid of the two-level k-means is fitted on, where the sample
#: allows (the default sample gives it ``kmeans_points_per_centroid``, 64, on average).
MIN_POINTS_PER_FINE: int = 16


def load_faiss() -> ModuleType:
    """Import faiss, or raise ``ImportError`` with an install hint."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError(FAISS_HINT) from e
    return faiss


def faiss_gpu_available() -> bool:
    """True when faiss was built with GPU support and sees at least one GPU."""
    try:
        faiss = load_faiss()
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - depends on the faiss build
        return False


def normalize(embeddings: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Return L2-normalised float32 rows, reusing ``embeddings`` when they already are.

    A float32, C-contiguous array whose rows all have unit norm (within 1e-4) is returned as is,
    so a large array costs no copy. Otherwise one float32 copy is made chunk by chunk.

    Raises:
        EmbeddingError: not a 2-D array, or a row with NaN/inf or zero norm.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise EmbeddingError(f"embeddings must be a 2-D (N, D) array, got shape {x.shape}")
    if x.shape[0] and x.shape[1] == 0:
        raise EmbeddingError("embeddings have zero dimensions")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    n = x.shape[0]
    norms = np.empty(n, dtype=np.float64)
    for start in range(0, n, CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS]
        if chunk.dtype != np.float64:
            chunk = chunk.astype(np.float32, copy=False)  # float32 sums are ample for a norm
        norms[start : start + len(chunk)] = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
        if progress:
            progress("normalise", min(start + CHUNK_ROWS, n), n)
    bad = ~np.isfinite(norms)
    if bad.any():
        raise EmbeddingError(
            f"{int(bad.sum())} embeddings contain NaN or inf (first at row {int(np.argmax(bad))})"
        )
    zero = norms == 0
    if zero.any():
        raise EmbeddingError(
            f"{int(zero.sum())} embeddings are all zeros (first at row {int(np.argmax(zero))})"
        )
    unit = bool(np.all(np.abs(norms - 1.0) < 1e-4))
    if unit and x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    # rows already of unit norm keep their values, so the result of a row never depends on the
    # other rows it is normalised with (a batch of a file gives what the whole array gives)
    scale = np.where(np.abs(norms - 1.0) < 1e-4, 1.0, norms)
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        out[start:stop] = x[start:stop] / scale[start:stop, None]
    return out


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


def sample_indices(
    n: int, k: int, points_per_centroid: int, seed: int, cap: int | None = None
) -> np.ndarray:
    """Sorted rows k-means trains on: ``min(n, k * points_per_centroid, cap)`` drawn with ``seed``.

    The same rows whether the embeddings are one array or streamed from files.
    """
    if k <= 1:
        return np.arange(n, dtype=np.int64) if cap is None or n <= cap else np.arange(cap)
    size = min(n, k * points_per_centroid, cap if cap is not None else n)
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


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
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)


def faiss_kmeans(
    train: np.ndarray,
    k: int,
    *,
    iters: int,
    points_per_centroid: int,
    seed: int,
    use_gpu: bool = False,
) -> np.ndarray:
    """One flat spherical k-means (faiss) on the unit rows ``train``; ``(k, D)`` centroids."""
    if k <= 1:
        return mean_centroid(train)
    train = np.ascontiguousarray(train, dtype=np.float32)
    km = load_faiss().Kmeans(
        train.shape[1],
        k,
        niter=iters,
        seed=seed,
        spherical=True,
        max_points_per_centroid=points_per_centroid,
        min_points_per_centroid=1,
        gpu=use_gpu,
        verbose=False,
    )
    km.train(train)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def mean_centroid(rows: np.ndarray) -> np.ndarray:
    """The normalised mean of the unit rows ``rows`` as a ``(1, D)`` centroid."""
    c = rows.mean(axis=0, dtype=np.float64)
    norm = np.linalg.norm(c)
    c = c / norm if norm > 0 else rows[0].astype(np.float64)
    return c[None, :].astype(np.float32)


def nearest_labels(x: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of each row's most similar centroid (exact; ties to the lowest index)."""
    out = np.empty(len(x), dtype=np.int64)
    for lo in range(0, len(x), chunk):
        out[lo : lo + chunk] = np.argmax(x[lo : lo + chunk] @ centroids.T, axis=1)
    return out


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
