"""Planted-duplicate embeddings for tests and benchmarks.

Real CLIP embeddings cannot be synthesised faithfully (random ViT outputs collapse to one
direction), so dedup is tested on vectors whose duplicate structure is known by construction:
unit "originals" (optionally drawn around topic centres so k-means has structure), plus groups
of copies at a controlled cosine from an anchor. A fraction of groups is placed on the border
between two topics, with copies pulled towards either side, so that members of one group land
in different k-means clusters. Everything is float32 and generated in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixsieve.dedup.pairs import exact_cosine


@dataclass(frozen=True)
class Planted:
    """Planted embeddings and their ground truth.

    Attributes:
        embeddings: ``(N, D)`` unit float32 vectors (positions shuffled).
        group: ``(N,)`` planted group per item (``-1`` for items without copies).
        border_group: ``(G,)`` the group was placed on a topic border.
    """

    embeddings: np.ndarray
    group: np.ndarray
    border_group: np.ndarray

    def planted_pairs(self, threshold: float) -> np.ndarray:
        """``(P, 2)`` pairs inside planted groups whose exact cosine is ``>= threshold``."""
        return group_pairs(self.embeddings, self.group, threshold)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _orthogonal_unit(rng: np.random.Generator, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Unit vectors orthogonal to the unit rows ``x`` (along ``w`` when given, else random)."""
    u = rng.standard_normal(x.shape, dtype=np.float32) if w is None else w.copy()
    u -= np.einsum("ij,ij->i", u, x)[:, None] * x
    return _unit(u)


def planted_embeddings(
    n: int,
    dim: int = 768,
    *,
    dup_fraction: float = 0.1,
    max_group: int = 4,
    cos_range: tuple[float, float] = (0.96, 0.995),
    n_topics: int = 0,
    topic_weight: float = 1.0,
    n_super: int = 0,
    border_fraction: float = 0.2,
    seed: int = 0,
    chunk_rows: int = 16384,
    out: np.ndarray | None = None,
) -> Planted:
    """Generate ``n`` unit vectors, ``dup_fraction`` of them in planted duplicate groups.

    Args:
        n, dim: shape of the output.
        dup_fraction: share of items that belong to a group (anchor and copies).
        max_group: groups have 2..``max_group`` members.
        cos_range: cosine of each copy to its anchor, uniform in this range.
        n_topics: topic centres the originals are drawn around (0: isotropic random vectors).
        topic_weight: weight of the centre against unit-scale noise (1.0 → cos ~0.7 to it).
        n_super: super-topics the topic centres are themselves drawn around (cos ~0.7 to
            theirs), a level of structure above the topics as in real embeddings (0: the topic
            centres are isotropic; the rest of the set is drawn as with 0, from other numbers).
        border_fraction: share of groups whose anchor sits between two topics, copies pulled
            alternately towards each (needs ``n_topics >= 2``).
        seed: random seed.
        chunk_rows: rows generated at a time.
        out: ``(n, dim)`` float32 array to fill (e.g. a memory map, for sets larger than RAM).
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, max_group + 1, size=max(1, int(n * dup_fraction / (max_group / 2 + 1))))
    sizes = sizes[np.cumsum(sizes) <= n]
    n_groups, n_copies = len(sizes), int((sizes - 1).sum())
    n_orig = n - n_copies
    topics = _unit(rng.standard_normal((n_topics, dim), dtype=np.float32)) if n_topics else None
    if topics is not None and n_super:  # own stream: the draws below stay those of n_super=0
        srng = np.random.default_rng([seed, n_super])
        supers = _unit(srng.standard_normal((n_super, dim), dtype=np.float32))
        noise = srng.standard_normal((n_topics, dim), dtype=np.float32) / np.sqrt(dim)
        topics = _unit(supers[srng.integers(0, n_super, n_topics)] + noise)
    pos = rng.permutation(n)
    out = np.empty((n, dim), dtype=np.float32) if out is None else out
    for start in range(0, n_orig, chunk_rows):
        stop = min(start + chunk_rows, n_orig)
        v = rng.standard_normal((stop - start, dim), dtype=np.float32) / np.sqrt(dim)
        if topics is not None:
            v += topic_weight * topics[rng.integers(0, n_topics, size=stop - start)]
        out[pos[start:stop]] = _unit(v)

    border = np.zeros(n_groups, dtype=bool)
    if topics is not None and n_topics >= 2:
        border = rng.random(n_groups) < border_fraction
    nb = int(border.sum())
    ta = rng.integers(0, n_topics, size=nb) if nb else np.empty(0, dtype=np.int64)
    tb = (ta + rng.integers(1, max(n_topics, 2), size=nb)) % max(n_topics, 1)
    anchors = pos[:n_groups]
    if nb:
        noise = rng.standard_normal((nb, dim), dtype=np.float32) / np.sqrt(dim)
        out[anchors[border]] = _unit(topic_weight * (topics[ta] + topics[tb]) / np.sqrt(2) + noise)

    group = np.full(n, -1, dtype=np.int64)
    group[anchors] = np.arange(n_groups)
    copy_group = np.repeat(np.arange(n_groups), sizes - 1)
    copy_rank = np.arange(n_copies) - np.repeat(np.cumsum(sizes - 1) - (sizes - 1), sizes - 1)
    slot = np.cumsum(border) - 1  # position of a border group in ta / tb
    for start in range(0, n_copies, chunk_rows):
        stop = min(start + chunk_rows, n_copies)
        g = copy_group[start:stop]
        x = out[anchors[g]]
        cos = rng.uniform(*cos_range, size=(stop - start, 1)).astype(np.float32)
        u = _orthogonal_unit(rng, x, None)
        on_border = border[g]
        if on_border.any():
            sign = np.where(copy_rank[start:stop][on_border] % 2 == 0, 1.0, -1.0)[:, None]
            s = slot[g[on_border]]
            side = (sign * (topics[ta[s]] - topics[tb[s]])).astype(np.float32)
            u[on_border] = _orthogonal_unit(rng, x[on_border], side)
        targets = pos[n_orig + start : n_orig + stop]
        out[targets] = _unit(cos * x + np.sqrt(1.0 - cos**2) * u)
        group[targets] = g
    return Planted(embeddings=out, group=group, border_group=border)


def group_pairs(x: np.ndarray, group: np.ndarray, threshold: float) -> np.ndarray:
    """All pairs inside the same ``group`` (``>= 0``) with exact cosine ``>= threshold``."""
    idx = np.flatnonzero(group >= 0)
    idx = idx[np.argsort(group[idx], kind="stable")]
    g = group[idx]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    found = []
    for s in np.unique(sizes):
        members = idx[starts[sizes == s][:, None] + np.arange(s)]
        for p in range(s):
            for q in range(p + 1, s):
                a, b = members[:, p], members[:, q]
                hit = exact_cosine(x, a, x, b) >= threshold
                found.append(np.stack([np.minimum(a, b)[hit], np.maximum(a, b)[hit]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
