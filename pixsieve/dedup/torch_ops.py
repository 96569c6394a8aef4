"""Semantic dedup's three heavy steps as torch matrix products: on ``cuda`` when present.

faiss's GPU build is not on PyPI for every CUDA, but torch is wherever the model runs, so the
GPU path of semantic dedup is plain torch; the same code runs on the CPU in tests. Inputs and
outputs are NumPy arrays (unit float32 rows); only the work moves to the device.

- :func:`fit_kmeans`: spherical k-means on a seeded sample (same sampling rule as the faiss
  path), seeded by k-means++ from a seeded generator; an empty cluster keeps its centroid.
- :func:`nearest_centroids`: the ``m`` most similar centroids of every row, chunked.
- :func:`pairs_above`: every pair ``(i, j)``, ``i < j``, ``i`` among the first ``n_rows``
  rows, with a float32 similarity ``>= low``, computed block by block; only the hits come
  back to the host.

Matrix products run in true float32 (TF32 off) so the float32 error band of
:mod:`pixsieve.dedup.pairs` holds; :func:`choose_backend` says which path a run takes
(``run.json`` records it as ``semantic.backend``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch

BACKENDS: tuple[str, ...] = ("auto", "faiss", "torch")
#: Rows per chunk for the assignment (a chunk's similarities: rows × k float32).
CHUNK_ROWS: int = 65536


def choose_backend(backend: str = "auto") -> tuple[str, torch.device]:
    """Resolve ``auto``: torch on CUDA when a GPU is visible, else faiss when installed, else
    torch on the CPU. ``faiss`` and ``torch`` are taken as given (torch on CUDA when present)."""
    if backend not in BACKENDS:
        raise ValueError(f"semantic dedup backend must be one of {BACKENDS}, got {backend!r}")
    cuda = torch.cuda.is_available()
    if backend == "auto" and not cuda:
        try:
            import faiss  # noqa: F401
        except ImportError:
            backend = "torch"
        else:
            backend = "faiss"
    if backend == "faiss":
        return "faiss", torch.device("cpu")
    return "torch", torch.device("cuda" if cuda else "cpu")


@contextmanager
def _exact_float32() -> Iterator[None]:
    """Float32 matrix products without TF32 (whose 10-bit mantissa breaks the error band)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


@torch.inference_mode()
def fit_kmeans(
    x: np.ndarray,
    k: int,
    *,
    iters: int,
    points_per_centroid: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Spherical k-means on a sample of the unit rows ``x``; ``(k, D)`` unit float32 centroids.

    Above :data:`pixsieve.dedup.centroids.TWO_LEVEL_MIN_CENTROIDS` centroids it is the same
    two-level k-means as the faiss path (:func:`pixsieve.dedup.centroids.train_centroids`) with
    this flat k-means inside.
    """
    from pixsieve.dedup.centroids import TWO_LEVEL_MIN_CENTROIDS, train_centroids
    from pixsieve.dedup.kmeans import mean_centroid, sample_indices

    if k <= 1:
        return mean_centroid(x)
    if k > TWO_LEVEL_MIN_CENTROIDS:
        flat = partial(flat_kmeans, device=device)
        train = x[sample_indices(len(x), k, points_per_centroid, seed)]
        return train_centroids(
            train, k, iters=iters, points_per_centroid=points_per_centroid, seed=seed, flat=flat
        )
    # the same draws from ``seed`` as the sample above, then k-means++ from that generator
    return flat_kmeans(
        x, k, iters=iters, points_per_centroid=points_per_centroid, seed=seed, device=device
    )


def flat_kmeans(
    train: np.ndarray,
    k: int,
    *,
    iters: int,
    points_per_centroid: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """One flat spherical k-means on at most ``k * points_per_centroid`` rows of ``train``."""
    rng = np.random.default_rng(seed)
    if len(train) > k * points_per_centroid:
        train = train[np.sort(rng.choice(len(train), k * points_per_centroid, replace=False))]
    with torch.inference_mode():
        return _lloyd(train, k, iters, rng, torch.device(device))


def _lloyd(
    rows: np.ndarray, k: int, iters: int, rng: np.random.Generator, device: torch.device
) -> np.ndarray:
    """k-means++ seeding from ``rng``, then ``iters`` spherical Lloyd iterations."""
    with _exact_float32():
        train = _tensor(rows, device)
        k = min(k, len(train))
        c = _plus_plus(train, k, rng)
        for _ in range(iters):
            label = _argmax_chunked(train, c)
            sums = torch.zeros_like(c).index_add_(0, label, train)
            norms = sums.norm(dim=1, keepdim=True)
            filled = norms.squeeze(1) > 0
            c = torch.where(filled[:, None], sums / norms.clamp_min(1e-30), c)
        return c.float().cpu().numpy()


def _plus_plus(train: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """k-means++ seeding for cosine distance (``1 - cos``), draws from ``rng``."""
    picks = [int(rng.integers(len(train)))]
    dist = (1 - train @ train[picks[0]]).clamp_min(0)
    for _ in range(1, k):
        p = dist.double().cpu().numpy()
        total = p.sum()
        nxt = int(rng.choice(len(p), p=p / total)) if total > 0 else int(rng.integers(len(p)))
        picks.append(nxt)
        dist = torch.minimum(dist, (1 - train @ train[nxt]).clamp_min(0))
    return train[torch.tensor(picks, device=train.device)]


def _argmax_chunked(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    out = torch.empty(len(x), dtype=torch.long, device=x.device)
    for s in range(0, len(x), CHUNK_ROWS):
        out[s : s + CHUNK_ROWS] = (x[s : s + CHUNK_ROWS] @ c.T).argmax(dim=1)
    return out


@torch.inference_mode()
def nearest_centroids(
    x: np.ndarray, centroids: np.ndarray, m: int, *, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """``(sims (N, m) float32, ids (N, m) int64)``: each row's ``m`` nearest centroids, most
    similar first (column 0 is the row's own cluster)."""
    device = torch.device(device)
    m = min(m, len(centroids))
    sims = np.empty((len(x), m), dtype=np.float32)
    ids = np.empty((len(x), m), dtype=np.int64)
    with _exact_float32():
        c = _tensor(centroids, device)
        for s in range(0, len(x), CHUNK_ROWS):
            block = _tensor(x[s : s + CHUNK_ROWS], device) @ c.T
            top = block.topk(m, dim=1)
            sims[s : s + len(block)] = top.values.cpu().numpy()
            ids[s : s + len(block)] = top.indices.cpu().numpy()
    return sims, ids


@torch.inference_mode()
def pairs_above(
    vectors: np.ndarray,
    n_rows: int,
    low: float,
    *,
    block: int = 4096,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pairs of ``vectors`` whose float32 cosine is ``>= low``: ``(i, j, sims, compared)``.

    ``i`` ranges over the first ``n_rows`` rows, ``j`` over all rows with ``j > i``; blocks of
    ``block × block`` similarities are computed and thresholded on ``device``; ``compared`` is
    the number of similarities computed (the same count as the NumPy path's).
    """
    device = torch.device(device)
    n = len(vectors)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    compared = 0
    with _exact_float32():
        v = _tensor(vectors, device)
        for r0 in range(0, n_rows, block):
            r1 = min(r0 + block, n_rows)
            for c0 in range(r0, n, block):
                c1 = min(c0 + block, n)
                sims = v[r0:r1] @ v[c0:c1].T
                compared += sims.numel()
                if c0 < r1:  # diagonal block: keep only column > row
                    rows = torch.arange(r0, r1, device=device)[:, None]
                    cols = torch.arange(c0, c1, device=device)[None, :]
                    sims = sims.masked_fill(cols <= rows, -float("inf"))
                hit = (sims >= low).nonzero()
                if len(hit):
                    out_s.append(sims[hit[:, 0], hit[:, 1]].cpu().numpy())
                    hit = hit.cpu().numpy()
                    out_i.append(hit[:, 0] + r0)
                    out_j.append(hit[:, 1] + c0)
    empty = np.empty(0, dtype=np.int64)
    return (
        np.concatenate(out_i) if out_i else empty,
        np.concatenate(out_j) if out_j else empty,
        np.concatenate(out_s) if out_s else np.empty(0, dtype=np.float32),
        compared,
    )
