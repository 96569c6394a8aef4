"""Normalisation, the k-means sample and faiss's flat spherical k-means.

The pieces the centroid training (:mod:`pixsieve.dedup.centroids`) and the centroid search
(:mod:`pixsieve.dedup.centroid_search`) share: the rows k-means trains on
(:func:`sample_indices`), one flat k-means (:func:`faiss_kmeans`), the exact nearest centroid
(:func:`nearest_labels`). faiss runs on GPU when it was built with GPU support and one is
visible, else on CPU. faiss is imported when first used (:func:`load_faiss`), so
``import pixsieve`` works without it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np

from pixsieve.errors import EmbeddingError

FAISS_HINT = "semantic dedup needs faiss: pip install faiss-cpu (or a faiss GPU build)"

Progress = Callable[[str, int, int], None]

#: Rows per chunk when streaming over the embeddings (norms, search).
CHUNK_ROWS: int = 65536


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
