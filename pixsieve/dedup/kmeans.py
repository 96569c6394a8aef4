"""Normalisation, spherical k-means and nearest-centroid assignment with faiss.

k-means is trained on a sample (``points_per_centroid * k`` points at most); every point is then
assigned by a chunked exact search over the centroids, which also returns the next nearest
centroids that the border rule needs. faiss runs on GPU when it was built with GPU support and
one is visible, else on CPU. faiss is imported when first used (:func:`load_faiss`), so
``import pixsieve`` works without it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from pixsieve.errors import EmbeddingError

FAISS_HINT = "semantic dedup needs faiss: pip install faiss-cpu (or a faiss GPU build)"

Progress = Callable[[str, int, int], None]

#: Rows per chunk when streaming over the embeddings (norms, search).
CHUNK_ROWS: int = 65536
#: Up to this many centroids the nearest ones are found by exact search; above it by an HNSW
#: graph over the centroids, whose cost per item grows with ``log k`` instead of ``k``.
FLAT_MAX_CENTROIDS: int = 4096


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
    """Spherical k-means on a sample of the unit rows ``x``; returns ``(k, D)`` unit centroids."""
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
) -> np.ndarray:
    """Spherical k-means on the unit rows ``train`` (the sample); returns ``(k, D)`` centroids."""
    d = train.shape[1]
    if k <= 1:
        c = train.mean(axis=0, dtype=np.float64)
        norm = np.linalg.norm(c)
        c = c / norm if norm > 0 else train[0].astype(np.float64)
        return c[None, :].astype(np.float32)
    train = np.ascontiguousarray(train, dtype=np.float32)
    km = load_faiss().Kmeans(
        d,
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


class CentroidSearch:
    """Finds each item's ``m`` nearest centroids (by cosine), nearest first.

    Up to :data:`FLAT_MAX_CENTROIDS` centroids: exact, one float32 matrix product per chunk of
    rows and a partial sort (several times cheaper than faiss's flat search with a heap per
    row). Above: an HNSW graph over the centroids (faiss), whose cost per item grows with
    ``log k`` instead of ``k`` (for ``k = N / 1000`` a flat search would cost ``O(N)`` per
    item); it is approximate, which can only cost recall at a cluster border, never precision.
    With ``use_gpu``, faiss's exact search on the GPU.
    """

    def __init__(self, centroids: np.ndarray, m: int, use_gpu: bool = False) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.m = min(m, len(self.centroids))
        self.index: Any = None
        d = self.centroids.shape[1]
        if use_gpu:  # pragma: no cover - needs a faiss GPU build
            faiss = load_faiss()
            self.index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(d))
        elif len(self.centroids) > FLAT_MAX_CENTROIDS:
            faiss = load_faiss()
            self.index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = 80
            self.index.hnsw.efSearch = max(64, 4 * self.m)
        if self.index is not None:
            self.index.add(self.centroids)

    def search(self, x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """``(sims (n, m) float32, ids (n, m) int64)`` for the unit rows ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.index is not None:
            return self.index.search(x, self.m)
        n, m, k = len(x), self.m, len(self.centroids)
        sims = np.empty((n, m), dtype=np.float32)
        ids = np.empty((n, m), dtype=np.int64)
        for lo in range(0, n, chunk):
            s = x[lo : lo + chunk] @ self.centroids.T
            top = np.argpartition(s, k - m, axis=1)[:, k - m :] if m < k else np.argsort(s, axis=1)
            val = np.take_along_axis(s, top, axis=1)
            order = np.lexsort((top, -val), axis=1)  # nearest first, ties by centroid id
            sims[lo : lo + len(s)] = np.take_along_axis(val, order, axis=1)
            ids[lo : lo + len(s)] = np.take_along_axis(top, order, axis=1)
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
