"""The assign phase's memberships (own cluster and border clusters of every row) from int8
products, for :func:`pixsieve.dedup.partition.assign_file`.

The float32 search (:class:`pixsieve.dedup.centroid_search.CentroidSearch`) spends ~12 µs per
row on the product with 1,000 centroids and ~5 on the partial sort. Here the product is int8
(:mod:`pixsieve.dedup.quant`; the centroids share one scale, so a row's ranking is that of its
integer products), no sort runs over all centroids, and the cosines that decide something are
recomputed from the float32 rows, so the memberships are the float32 search's:

- **listed**: the centroids whose approximate cosine is within ``2 * half + 2 * bound`` of the
  row's largest (``half``: :func:`pixsieve.dedup.border.border_margin`, which bounds the gap the
  border rule allows, distances between unit centroids being at most 2; ``bound``: the row's
  int8 error bound), found by one integer comparison per product. No other centroid can be the
  row's own or one the rule takes.
- **own cluster**: the exact nearest among the listed ones within ``2 * bound`` of the largest.
- **border**: the rule on the ``m - 1`` listed centroids ranked next (by their products, ties to
  the lower id); those it could take given the bound get their exact cosine and are taken on it.
  Only which centroid ranks ``m``-th can differ from the float32 search (the rule's candidates
  are a heuristic; its proof holds for any of them).

The float32 search stays where whole similarity lists are needed (the cross-search writer) and
for many centroids (the two-level search).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixsieve.dedup.border import border_chunk, centroid_dist
from pixsieve.dedup.centroid_search import EXACT_CELLS, EXACT_CHUNK
from pixsieve.dedup.quant import int8_dot, pair_bound, quantize


@dataclass
class Members:
    """Memberships of a block of rows: each row's own cluster and its cosine to it; border
    memberships ``(rows, other)`` (row within the block, cluster) and their cosines."""

    own: np.ndarray
    own_sim: np.ndarray
    rows: np.ndarray
    other: np.ndarray
    other_sim: np.ndarray

    @classmethod
    def of_search(
        cls,
        sims: np.ndarray,
        ids: np.ndarray,
        centroids: np.ndarray,
        gram: np.ndarray | None,
        half: float,
    ) -> Members:
        """From the float32 search's lists (:func:`pixsieve.dedup.border.border_chunk`)."""
        rows, other = np.empty(0, np.int64), np.empty(0, np.int64)
        if half > 0 and ids.shape[1] > 1:
            rows, other = border_chunk(sims, ids, centroids, gram, half)
        at = (ids[rows] == other[:, None]).argmax(axis=1)  # other's place among the row's
        return cls(ids[:, 0].astype(np.int64), sims[:, 0], rows, other, sims[rows, at])

    @classmethod
    def concat(cls, parts: list[tuple[np.ndarray, Members]]) -> Members:
        """One block from ``(rows of the block, members)`` parts covering it."""
        n = sum(len(p) for p, _ in parts)
        own, own_sim = np.empty(n, np.int64), np.empty(n, np.float32)
        for p, m in parts:
            own[p], own_sim[p] = m.own, m.own_sim
        none = [np.empty(0, np.int64)]
        rows = np.concatenate([p[m.rows] for p, m in parts] or none)
        other = np.concatenate([m.other for _, m in parts] or none)
        sim = np.concatenate([m.other_sim for _, m in parts] or none).astype(np.float32)
        order = np.lexsort((other, rows))
        return cls(own, own_sim, rows[order], other[order], sim[order])


def _cosines(x: np.ndarray, rows: np.ndarray, c: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Float32 cosines ``x[rows[i]] . c[ids[i]]``, as the float32 search computes them."""
    out = np.empty(len(rows), np.float32)
    for lo in range(0, len(rows), 4096):
        sl = slice(lo, lo + 4096)
        out[sl] = np.einsum("ij,ij->i", x[rows[sl]], c[ids[sl]])
    return out


class Int8Assign:
    """Memberships of rows to ``centroids`` (``m`` examined per row, border margin ``half``:
    :func:`pixsieve.dedup.border.border_margin`; ``gram``: the centroids' Gram matrix or
    ``None``), from int8 products; see the module docstring."""

    def __init__(self, centroids: np.ndarray, m: int, half: float, gram: np.ndarray | None) -> None:
        self.c = np.ascontiguousarray(centroids, dtype=np.float32)
        self.k = len(self.c)
        self.m = min(m, self.k)
        self.half = half if self.m > 1 else 0.0
        self.gram = gram
        self.qc, meta = quantize(self.c, common=True)
        self.sc, self.rc = float(meta[0, 0]), float(meta[:, 1].max())

    def __call__(self, x: np.ndarray) -> Members:
        """Memberships of the unit rows ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = max(16, min(EXACT_CHUNK, EXACT_CELLS // self.k))
        blocks = [
            (np.arange(lo, min(lo + step, len(x))), self._block(x[lo : lo + step]))
            for lo in range(0, len(x), step)
        ]
        return Members.concat(blocks)

    def _block(self, x: np.ndarray) -> Members:
        n, empty = len(x), np.empty(0, np.int64)
        if not n:
            return Members(empty, np.empty(0, np.float32), empty, empty, np.empty(0, np.float32))
        q, meta = quantize(x)
        dots = int8_dot(q, self.qc)
        scale = meta[:, 0].astype(np.float64) * self.sc  # approximate cosine = scale * dots
        scale[scale <= 0] = 1.0  # a zero row: any scale lists every centroid
        bound = pair_bound(meta[:, 1].astype(np.float64), self.rc)
        top = dots.max(axis=1)
        need = np.floor(top - (2 * self.half + 2 * bound) / scale) - 1
        r, col = np.nonzero(dots >= need.astype(np.int32)[:, None])  # by row, then id
        val = dots[r, col].astype(np.float64)
        del dots
        mine = val >= top[r] - 2 * bound[r] / scale[r]  # may be the exact nearest
        e = _cosines(x, r[mine], self.c, col[mine])
        best = np.lexsort((col[mine], -e, r[mine]))
        best = best[np.r_[True, r[mine][best][1:] != r[mine][best][:-1]]]  # one per row
        own, own_sim = col[mine][best].astype(np.int64), e[best]
        if self.half <= 0:
            return Members(own, own_sim, empty, empty, np.empty(0, np.float32))
        keep = col != own[r]
        r, col, val = r[keep], col[keep], val[keep]
        many = np.bincount(r, minlength=n) > self.m - 1  # rows listing more than the rule reads
        if many.any():
            order = np.lexsort((col, -val, r))
            rank = np.arange(len(r)) - np.searchsorted(r[order], r[order])
            first = np.sort(order[rank < self.m - 1])
            r, col, val = r[first], col[first], val[first]
        limit = self.half * centroid_dist(own[r], col, self.c, self.gram)
        maybe = own_sim[r] - val * scale[r] - bound[r] <= limit
        r, col, limit = r[maybe], col[maybe], limit[maybe]
        e = _cosines(x, r, self.c, col)
        take = (own_sim[r] - e).astype(np.float64) <= limit
        return Members(own, own_sim, r[take], col[take].astype(np.int64), e[take])
