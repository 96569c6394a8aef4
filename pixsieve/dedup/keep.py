"""Keep policies: which member of a duplicate group survives.

A policy turns into one number per item, its *priority* (higher survives); ties go to the lowest
index, so every policy is deterministic.
"""

from __future__ import annotations

import numpy as np


def resolve_policy(
    policy: str, aesthetic: np.ndarray | None, resolution: np.ndarray | None
) -> tuple[str, str | None]:
    """Return ``(policy actually used, note)``: ``aesthetic``/``resolution`` without their data
    fall back to ``first`` and the note says so."""
    if policy == "aesthetic" and aesthetic is None:
        return "first", "keep=aesthetic but no aesthetic scores were given: kept the first item"
    if policy == "resolution" and resolution is None:
        return "first", "keep=resolution but no resolutions were given: kept the first item"
    return policy, None


def pixel_counts(resolution: np.ndarray, n: int) -> np.ndarray:
    """Pixels per item from ``(N,)`` pixel counts or ``(N, 2)`` width/height pairs."""
    res = np.asarray(resolution, dtype=np.float64)
    if res.ndim == 2 and res.shape[1] == 2:
        res = res[:, 0] * res[:, 1]
    if res.shape != (n,):
        raise ValueError(f"resolution must be (N,) pixel counts or (N, 2) width/height, N={n}")
    return res


def priority(
    policy: str,
    n: int,
    *,
    aesthetic: np.ndarray | None = None,
    resolution: np.ndarray | None = None,
    centroid_sim: np.ndarray | None = None,
    start: int = 0,
) -> np.ndarray:
    """Keep preference per item (higher survives) for a resolved ``policy``.

    Args:
        policy: ``aesthetic``, ``resolution``, ``first`` or ``farthest``.
        n: number of items.
        aesthetic: ``(N,)`` scores; NaN (not scored) ranks last.
        resolution: see :func:`pixel_counts`.
        centroid_sim: ``(N,)`` cosine to the item's own centroid (``farthest`` prefers the lowest,
            SemDeDup's ``which_to_keep="hard"``).
        start: global index of the first of the ``n`` items (``first`` ranks by global index,
            so a batch of a file gets the priorities the whole array would).
    """
    if policy == "first":
        return -np.arange(start, start + n, dtype=np.float64)
    if policy == "aesthetic":
        scores = np.asarray(aesthetic, dtype=np.float64)
        if scores.shape != (n,):
            raise ValueError(f"aesthetic must have shape ({n},), got {scores.shape}")
        return np.where(np.isnan(scores), -np.inf, scores)
    if policy == "resolution":
        pixels = pixel_counts(resolution, n) if resolution is not None else np.zeros(n)
        return np.where(np.isnan(pixels), -np.inf, pixels)
    if policy == "farthest":
        if centroid_sim is None:
            raise ValueError("keep=farthest needs the similarity of each item to its centroid")
        return -np.asarray(centroid_sim, dtype=np.float64)
    raise ValueError(f"unknown keep policy {policy!r}")


def representatives(labels: np.ndarray, prio: np.ndarray) -> np.ndarray:
    """For every node, the best node of its component (highest priority, then lowest index)."""
    n = len(labels)
    idx = np.arange(n)
    order = np.lexsort((idx, -prio, labels))
    first = np.ones(n, dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    best_of_label = np.empty(n, dtype=np.int64)
    best_of_label[labels[order][first]] = order[first]
    return best_of_label[labels]
