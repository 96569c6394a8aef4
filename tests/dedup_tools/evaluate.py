"""Brute-force references to measure the clustered search against (tests and benchmarks).

These are deliberately simple: every pair is scored with a matrix product, and every candidate
within :data:`RECHECK` of the threshold is rescored in float64. They cost ``O(N^2 D)`` (or
``O(Q N D)`` for :func:`exact_neighbors`), so they are for small sets or query subsets.
"""

from __future__ import annotations

import numpy as np

from pixsieve.dedup.pairs import exact_cosine

#: Candidates this close to the threshold (in float32) are rescored in float64.
RECHECK: float = 1e-3


def _exact_hits(
    rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.nonzero(sims >= threshold - RECHECK)
    keep = exact_cosine(rows, i, cols, j) >= threshold
    return i[keep], j[keep]


def _sorted_unique(pairs: np.ndarray) -> np.ndarray:
    if not len(pairs):
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.unique(pairs, axis=0)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def exact_pairs(x: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """Every pair ``(i < j)`` of unit rows with ``cos >= threshold``, by brute force."""
    n = len(x)
    found = []
    for r0 in range(0, n, block):
        rows = x[r0 : r0 + block]
        for c0 in range(r0, n, block):
            cols = x[c0 : c0 + block]
            i, j = _exact_hits(rows, cols, rows @ cols.T, threshold)
            gi, gj = i + r0, j + c0
            keep = gi < gj
            found.append(np.stack([gi[keep], gj[keep]], axis=1))
    return _sorted_unique(np.concatenate(found) if found else np.empty((0, 2), np.int64))


def exact_neighbors(
    x: np.ndarray, queries: np.ndarray, threshold: float, block: int = 65536
) -> np.ndarray:
    """Every pair ``(min, max)`` between a query row and any other row with ``cos >= threshold``."""
    queries = np.asarray(queries, dtype=np.int64)
    q = x[queries]
    found = []
    for c0 in range(0, len(x), block):
        cols = x[c0 : c0 + block]
        i, j = _exact_hits(q, cols, q @ cols.T, threshold)
        a, b = queries[i], j + c0
        keep = a != b
        a, b = a[keep], b[keep]
        found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    return _sorted_unique(np.concatenate(found) if found else np.empty((0, 2), np.int64))


def pair_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    """One int64 per pair (``i * n + j``) for set operations."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0] * n + pairs[:, 1]


def pair_recall(found: np.ndarray, truth: np.ndarray, n: int) -> float:
    """Share of ``truth`` pairs present in ``found`` (1.0 when there is no truth)."""
    if not len(truth):
        return 1.0
    return float(np.isin(pair_keys(truth, n), pair_keys(found, n)).mean())


def grouped_recall(component_id: np.ndarray, truth: np.ndarray) -> float:
    """Share of ``truth`` pairs whose two items ended up in the same group (``-1``: alone)."""
    if not len(truth):
        return 1.0
    a, b = component_id[truth[:, 0]], component_id[truth[:, 1]]
    return float(((a == b) & (a >= 0)).mean())


def pair_precision(x: np.ndarray, pairs: np.ndarray, threshold: float) -> float:
    """Share of ``pairs`` whose exact (float64) cosine is really ``>= threshold``."""
    if not len(pairs):
        return 1.0
    cos = exact_cosine(x, pairs[:, 0], x, pairs[:, 1])
    return int((cos >= threshold).sum()) / len(pairs)
