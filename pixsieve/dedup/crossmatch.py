"""Matching new rows with earlier kept rows inside one cluster, for
:func:`pixsieve.dedup.against.cross_bucket`.

New rows are taken in blocks sorted by their cosine to the cluster's centroid; each block is
multiplied only with the earlier rows in its angular window (:func:`window_bounds`), found for
every index part at once (:class:`Keys`) and read from the parts' stores into one reused
buffer (:mod:`pixsieve.dedup.windowstore`), as int8 products (:mod:`pixsieve.dedup.quant`).
Products within their error bound of the threshold are recomputed in float64 from float32
rows, so every match is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pixsieve.dedup.quant import int8_dot, pair_bound
from pixsieve.dedup.windowstore import Stores, Window

#: New rows multiplied at once with the earlier rows in their centroid-cosine window.
NEW_BLOCK: int = 256
#: Clusters in at most this many earlier parts are matched by :func:`match_once`.
FEW_PARTS: int = 4
#: Added to both ends of the centroid-cosine window (:func:`window_bounds`) against rounding.
WINDOW_SLACK: float = 1e-3


@dataclass
class Best:
    """Per new row, its most similar earlier membership so far (file, position, cosine)."""

    sim: np.ndarray
    file: np.ndarray
    pos: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Best:
        """No match yet for ``n`` new rows."""
        return cls(np.full(n, -np.inf), np.full(n, -1, np.int64), np.full(n, -1, np.int64))

    def update(self, rows: np.ndarray, file: np.ndarray, pos: np.ndarray, sim: np.ndarray) -> None:
        """Take the pairs ``(rows[i], file[i], pos[i], sim[i])`` that beat the best so far."""
        if not len(rows):
            return
        order = np.lexsort((-sim, rows))
        rows, file, pos, sim = rows[order], file[order], pos[order], sim[order]
        first = np.r_[True, rows[1:] != rows[:-1]]
        rows, file, pos, sim = rows[first], file[first], pos[first], sim[first]
        better = sim > self.sim[rows]
        rows = rows[better]
        self.sim[rows], self.file[rows], self.pos[rows] = sim[better], file[better], pos[better]


def window_bounds(lowest: float, highest: float, angle: float) -> tuple[float, float]:
    """The centroid cosines an earlier row needs to reach the threshold with new rows whose
    centroid cosines lie in ``lowest..highest``: the angle between two rows is at least the
    difference of their angles to the (unit) centroid, so theirs must be within ``angle`` =
    ``arccos(threshold)`` (widened by :data:`WINDOW_SLACK` against float32 rounding)."""
    far = math.acos(min(1.0, max(-1.0, float(lowest)))) + angle
    near = math.acos(min(1.0, max(-1.0, float(highest)))) - angle
    low = math.cos(min(math.pi, far)) - WINDOW_SLACK
    return low, math.cos(max(0.0, near)) + WINDOW_SLACK


class Keys:
    """Every earlier row of the task's parts as one sorted float64 key, so that the windows of
    all parts come from one search: ``part * span + (2 * cluster + secondary) * 4 + 2 +
    centroid_sim`` (each part is sorted by cluster, primaries first, then by centroid cosine;
    segments are 4 apart and cosines lie in ``[-1, 1]``, so a window never leaves its segment)."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], hi: int) -> None:
        self.span = 8.0 * (hi + 1)
        sizes = [len(cluster) for cluster, _, _ in parts]
        self.base = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
        self.keys = np.concatenate(
            [
                f * self.span + (2.0 * cluster + secondary) * 4.0 + 2.0 + sim
                for f, (cluster, secondary, sim) in enumerate(parts)
            ]
            or [np.empty(0)]
        )

    def windows(
        self, parts: np.ndarray, segments: np.ndarray, low: float, high: float
    ) -> list[tuple[int, int, int]]:
        """``(part, lo, hi)``: the rows of segment ``segments[i]`` (``2 * cluster + secondary``)
        of ``parts[i]`` whose centroid cosine lies in ``[low, high]`` (non-empty ones)."""
        at = parts * self.span + segments * 4.0 + 2.0
        lo = np.searchsorted(self.keys, at + low) - self.base[parts]
        hi = np.searchsorted(self.keys, at + high, "right") - self.base[parts]
        return spans(parts, lo, hi)


def _compare(xn: np.ndarray, block: np.ndarray, search: Search, a: int, b: int) -> int:
    """Products of new rows ``block`` with rows ``a..b-1`` of the window buffer, in int8
    (:mod:`pixsieve.dedup.quant`); pairs whose approximate cosine comes within the error bound
    of the threshold are recomputed in float64 from float32 rows, and those at or above it go
    to the best so far. Returns the number of products."""
    if b <= a or not len(block):
        return 0
    buf, t = search.buf, search.threshold
    dots = int8_dot(search.new_q[block], buf.q[a:b])
    xs, xr = search.new_meta[block, 0], search.new_meta[block, 1]
    ys, yr = buf.meta[a:b, 0], buf.meta[a:b, 1]
    low = t - pair_bound(float(xr.max()), float(yr.max()))
    near = np.arange(len(block))
    if low > 0:  # a row's largest approximate cosine is at most its largest product's
        near = np.flatnonzero(dots.max(axis=1) * xs * ys.max() >= low)  # few rows: on them only
    if len(near):
        sims = dots[near] * xs[near, None] * ys[None, :]
        i, j = np.nonzero(sims >= t - pair_bound(xr[near, None], yr[None, :]))
        i, j = near[i], j + a
        y = buf.exact(search.stores, j).astype(np.float64)
        sim = np.einsum("ij,ij->i", xn[block[i]].astype(np.float64), y)
        hit = sim >= t
        search.best.update(block[i[hit]], buf.src[j[hit]], buf.pos[j[hit]], sim[hit])
    return len(block) * (b - a)


@dataclass
class Search:
    """One cross bucket's search state: the earlier parts' keys and stores, the angular window
    (``arccos(threshold)``), the threshold, the reused buffer, the best match so far and the
    new rows in int8 with their scales and error bounds
    (:func:`pixsieve.dedup.quant.quantize`)."""

    keys: Keys
    stores: Stores
    window: float
    threshold: float
    buf: Window
    best: Best
    new_q: np.ndarray
    new_meta: np.ndarray


def match(
    xn: np.ndarray,
    rows: np.ndarray,
    new_sim: np.ndarray,
    segments: tuple[np.ndarray, np.ndarray],
    search: Search,
) -> int:
    """Compare new ``rows`` with the earlier rows of ``segments`` (``(parts, 2 * cluster +
    secondary)``) whose centroid cosine is in the window of theirs (:func:`window_bounds`);
    record pairs at or above the threshold (exact float64 cosine). Returns the number of
    products."""
    compared = 0
    order = np.argsort(new_sim, kind="stable")
    rows, new_sim = rows[order], new_sim[order]
    buf = search.buf
    for i0 in range(0, len(rows), NEW_BLOCK):
        block, sims = rows[i0 : i0 + NEW_BLOCK], new_sim[i0 : i0 + NEW_BLOCK]
        bounds = window_bounds(sims[0], sims[-1], search.window)
        m = buf.fill(search.stores, search.keys.windows(*segments, *bounds))
        compared += _compare(xn, block, search, 0, m)
    return compared


def match_once(
    xn: np.ndarray,
    new: tuple[np.ndarray, np.ndarray],
    centroid: np.ndarray,
    cluster: int,
    parts: np.ndarray,
    search: Search,
) -> int:
    """:func:`match_cluster` for a cluster in few earlier parts (one per earlier run of index
    version 5), where a window is one slice per part: the earlier primaries are read once for
    both sides (in the union of their windows) and the secondaries once for the new primaries;
    each block of new rows is then multiplied with the slices of its own window only."""
    sides = []
    for rows in new:
        sims = xn[rows] @ centroid
        order = np.argsort(sims, kind="stable")
        sides.append((rows[order], sims[order]))
    (p_rows, p_sims), (s_rows, s_sims) = sides
    every = np.r_[p_sims, s_sims]
    seg = np.full(len(parts), 2 * cluster)
    read = []  # (secondary, part, lo, hi)
    if len(every):
        bounds = window_bounds(every.min(), every.max(), search.window)
        read += [(0, *w) for w in search.keys.windows(parts, seg, *bounds)]
    if len(p_sims):
        bounds = window_bounds(p_sims[0], p_sims[-1], search.window)
        read += [(1, *w) for w in search.keys.windows(parts, seg + 1, *bounds)]
    search.buf.fill(search.stores, [w[1:] for w in read])
    where, at = {}, 0  # (secondary, part) -> the part rows read and their first buffer row
    for secondary, f, lo, hi in read:
        where[secondary, f] = (lo, hi, at)
        at += hi - lo
    compared = 0
    for rows, sims, segments in ((p_rows, p_sims, (0, 1)), (s_rows, s_sims, (0,))):
        for i0 in range(0, len(rows), NEW_BLOCK):
            block, s = rows[i0 : i0 + NEW_BLOCK], sims[i0 : i0 + NEW_BLOCK]
            bounds = window_bounds(s[0], s[-1], search.window)
            for secondary in segments:
                for f, lo, hi in search.keys.windows(parts, seg + secondary, *bounds):
                    # within what was read (its window holds this one; clipped against rounding)
                    first, last, at = where.get((secondary, f), (lo, lo, 0))
                    a, b = at + max(lo, first) - first, at + min(hi, last) - first
                    compared += _compare(xn, block, search, a, b)
    return compared


def match_cluster(
    xn: np.ndarray,
    new: tuple[np.ndarray, np.ndarray],
    centroid: np.ndarray,
    cluster: int,
    parts: np.ndarray,
    search: Search,
) -> int:
    """Compare one cluster's new memberships ``new`` = ``(primaries, secondaries)`` with its
    earlier ones in ``parts``: primaries with every earlier membership, secondaries with the
    earlier primaries (never two secondaries). In few parts (:data:`FEW_PARTS`) by
    :func:`match_once`; in many (index versions 3 and 4: a part per input file) each side in
    blocks (:func:`match`), each block reading its own window (reading the earlier primaries
    once for both sides measured the same CPU there: fewer reads, more products). Returns the
    number of products."""
    if len(parts) <= FEW_PARTS:
        return match_once(xn, new, centroid, cluster, parts, search)
    prim, sec = new
    seg = np.full(len(parts), 2 * cluster)
    both = (np.r_[parts, parts], np.r_[seg, seg + 1])
    return match(xn, prim, xn[prim] @ centroid, both, search) + match(
        xn, sec, xn[sec] @ centroid, (parts, seg), search
    )


def spans(parts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int, int]]:
    """The non-empty ``(part, lo, hi)``."""
    keep = hi > lo
    return list(zip(parts[keep].tolist(), lo[keep].tolist(), hi[keep].tolist(), strict=True))
