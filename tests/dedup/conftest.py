"""Brute-force references for the semantic dedup tests (independent of the clustered search)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from dedup_tools.synthetic import Planted, planted_embeddings

THRESHOLD = 0.95


def brute_pairs(x: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """All pairs i < j with float64 cosine >= threshold, from the full similarity matrix."""
    x64 = x.astype(np.float64)
    sims = x64 @ x64.T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def brute_components(n: int, pairs: set[tuple[int, int]]) -> list[int]:
    """Component label (smallest member) per node, by plain Python union-find."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def brute_semdedup(
    x: np.ndarray, cluster: np.ndarray, prio: np.ndarray, threshold: float
) -> np.ndarray:
    """SemDeDup's greedy rule, literally: rank within cluster, drop if close to anyone above."""
    removed = np.zeros(len(x), dtype=bool)
    x64 = x.astype(np.float64)
    for c in np.unique(cluster):
        members = np.flatnonzero(cluster == c)
        ranked = sorted(members.tolist(), key=lambda i: (-prio[i], i))
        for pos, item in enumerate(ranked):
            above = ranked[:pos]
            if above and (x64[above] @ x64[item]).max() >= threshold:
                removed[item] = True
    return removed


@pytest.fixture(scope="session")
def brute() -> SimpleNamespace:
    """The brute-force references: ``pairs``, ``components``, ``semdedup``, ``THRESHOLD``."""
    return SimpleNamespace(
        pairs=brute_pairs,
        components=brute_components,
        semdedup=brute_semdedup,
        THRESHOLD=THRESHOLD,
    )


@pytest.fixture(scope="session")
def random_planted() -> Planted:
    """Isotropic random unit vectors with planted copies (no cluster structure at all)."""
    return planted_embeddings(3000, 768, dup_fraction=0.3, seed=11)


@pytest.fixture(scope="session")
def topic_planted() -> Planted:
    """Vectors around 30 topics; a third of the groups straddle two topics."""
    return planted_embeddings(
        3000, 768, dup_fraction=0.3, n_topics=30, border_fraction=0.35, seed=5
    )
