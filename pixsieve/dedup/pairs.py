"""Per-cluster similarity search: pure functions of (member indices, their embeddings, config).

Nothing here touches global state, so an executor can map these functions over clusters as
independent tasks (one task per cluster or per group of small clusters) and ship back only the
small results. Similarities are computed blockwise (a block holds at most ``block_size**2``
values, never a cluster-by-cluster matrix): on the CPU as int8 products whose pairs near the
threshold are recomputed (:func:`int8_pairs`), in float32 for small clusters, dense blocks and
the GPU; entries within :func:`float32_slack` of the threshold are recomputed in float64, so the
decision ``cos >= threshold`` is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixsieve.calls import uses_torch
from pixsieve.dedup.components import spanning_edges, union_edges
from pixsieve.dedup.config import SemanticDedupConfig
from pixsieve.dedup.quant import int8_dot, near_pairs, pair_bound, quantize

#: Least band around the threshold that is recomputed in float64. The rounding error of a
#: float32 dot product of two unit vectors is at most about ``D * 2**-24`` (4.6e-5 for 768-d);
#: the band is twice that for wider embeddings.
FLOAT32_SLACK: float = 1e-4
#: Share of a block's products near the threshold above which :func:`int8_pairs` multiplies
#: that block in float32 instead (the int8 bound is ~100x wider than float32's band). At 1/256
#: the pairs' own products (~1 µs each) cost at most about what the int8 block saved.
DENSE_BLOCK: float = 1 / 256
#: Products (primary rows × rows) below which a cluster is multiplied in float32 only: the
#: measured break-even (one thread, 768-d): 0.9 ms either way at 256 rows; at 64 rows 0.36 ms
#: int8 against 0.13 float32, at 1,024 rows 6.5 against 12.0.
SMALL_CLUSTER: int = 256 * 256
#: Rows of a block whose float32 products estimate how dense it is (:func:`_looks_dense`);
#: blocks of fewer than 64 times as many rows are not sampled.
DENSE_SAMPLE: int = 16


def exact_cosine(
    a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray, chunk: int = 8192
) -> np.ndarray:
    """Float64 dot products ``a[ia[k]] . b[ib[k]]`` of unit rows (the exact cosine), in chunks."""
    return row_dots(a, ia, b, ib, np.float64, chunk)


def row_dots(
    a: np.ndarray,
    ia: np.ndarray,
    b: np.ndarray,
    ib: np.ndarray,
    dtype: type = np.float32,
    chunk: int = 8192,
) -> np.ndarray:
    """Dot products ``a[ia[k]] . b[ib[k]]`` computed in ``dtype``, in chunks (in float32 as a
    float32 matrix product computes them, within :func:`float32_slack`)."""
    out = np.empty(len(ia), dtype=dtype)
    for start in range(0, len(ia), chunk):
        sa, sb = ia[start : start + chunk], ib[start : start + chunk]
        out[start : start + len(sa)] = np.einsum(
            "ij,ij->i", a[sa].astype(dtype, copy=False), b[sb].astype(dtype, copy=False)
        )
    return out


def float32_slack(dim: int) -> float:
    """Half-width of the band recomputed in float64 for ``dim``-dimensional unit vectors."""
    return max(FLOAT32_SLACK, 2.0 * dim * 2.0**-24)


def _candidates(
    sims: np.ndarray, rows: np.ndarray, cols: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.float32]:
    """Entries of ``sims`` (``rows @ cols.T``, float32) that may reach ``threshold``.

    Returns ``(i, j, vals, t32)``: every entry within :func:`float32_slack` below the threshold
    or above it. Entries near the threshold are recomputed in float64 and rounded so that
    ``vals >= t32`` is the exact decision ``cos >= threshold``; they are also written back into
    ``sims``.
    """
    slack = float32_slack(rows.shape[1])
    i, j = np.nonzero(sims >= threshold - slack)
    vals, t32 = fix_band(i, j, sims[i, j], rows, cols, threshold)
    sims[i, j] = vals
    return i, j, vals, t32


def fix_band(
    i: np.ndarray, j: np.ndarray, vals: np.ndarray, rows: np.ndarray, cols: np.ndarray, t: float
) -> tuple[np.ndarray, np.float32]:
    """Recompute ``vals`` (float32 ``rows[i] . cols[j]``) near ``t`` in float64 and round them so
    that ``vals >= t32`` is the exact decision; returns ``(vals, t32)``."""
    t32 = np.float32(t)
    band = np.flatnonzero(vals < t + float32_slack(rows.shape[1]))
    if len(band):
        exact = exact_cosine(rows, i[band], cols, j[band])
        below = np.nextafter(t32, np.float32(-np.inf))
        fixed = exact.astype(np.float32)
        vals[band] = np.where(exact >= t, np.maximum(fixed, t32), np.minimum(fixed, below))
    return vals, t32


def int8_pairs(
    vectors: np.ndarray, n_rows: int, t: float, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Every pair ``(i, j)``, ``i < j``, ``i`` among the first ``n_rows`` rows, whose exact
    cosine is at or above ``t``: ``(i, j, sims, compared)``, ``sims`` float32 cosines rounded
    so that ``sims >= float32(t)`` is the exact decision (as :func:`fix_band` rounds them).

    Blocks of ``block × block`` products in int8 (:mod:`pixsieve.dedup.quant`: ~2.3x float32's
    rate on the CPU). The pairs within their error bound of ``t`` get float32 cosines (float64
    near ``t``); a block where more than :data:`DENSE_BLOCK` of the products would need that (a
    cluster of near-identical rows) is multiplied in float32 instead, whose error band is 100x
    narrower, and so is a cluster under :data:`SMALL_CLUSTER` products. Measured on one 4,096-row
    cluster: 1.0-1.3x the float32 path's time where most pairs lie near ``t``, 0.75x where
    none do; on the 1M benchmark the similarity phase took half the time.
    """
    n, compared = len(vectors), 0
    # small clusters: float32 only (quantizing and the calls cost more than they save)
    rows8 = _Int8Rows.of(vectors, t) if n_rows * n >= SMALL_CLUSTER else None
    near: list[tuple[np.ndarray, np.ndarray]] = []  # pairs to recompute
    dense: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # pairs found in float32
    for r0 in range(0, n_rows, block):
        r1 = min(r0 + block, n_rows)
        for c0 in range(r0, n, block):
            c1 = min(c0 + block, n)
            compared += (r1 - r0) * (c1 - c0)
            found = rows8.block_pairs(vectors, r0, r1, c0, c1, t) if rows8 is not None else None
            if found is not None:
                i, j = found[0] + r0, found[1] + c0
                near.append((i[j > i], j[j > i]))
                continue
            sims = vectors[r0:r1] @ vectors[c0:c1].T
            if c0 < r1:  # diagonal block: keep only column > row
                sims[np.tri(r1 - r0, c1 - c0, k=r0 - c0, dtype=bool)] = -np.inf
            i, j, vals, t32 = _candidates(sims, vectors[r0:r1], vectors[c0:c1], t)
            hit = vals >= t32
            dense.append((i[hit] + r0, j[hit] + c0, vals[hit]))
    i = np.concatenate([p[0] for p in near] or [np.empty(0, np.int64)])
    j = np.concatenate([p[1] for p in near] or [np.empty(0, np.int64)])
    vals = row_dots(vectors, i, vectors, j)
    vals, t32 = fix_band(i, j, vals, vectors, vectors, t)
    hit = vals >= t32
    found_all = [(i[hit], j[hit], vals[hit]), *dense]
    return (
        np.concatenate([f[0] for f in found_all]),
        np.concatenate([f[1] for f in found_all]),
        np.concatenate([f[2] for f in found_all]),
        compared,
    )


@dataclass(frozen=True)
class _Int8Rows:
    """A cluster's rows in int8 with one scale (:func:`pixsieve.dedup.quant.quantize`, so that
    :func:`pixsieve.dedup.quant.near_pairs` screens each block against one integer), and
    ``low``: the least float cosine whose pair may still reach the threshold."""

    q: np.ndarray
    meta: np.ndarray
    low: float

    @classmethod
    def of(cls, vectors: np.ndarray, t: float) -> _Int8Rows:
        """Quantize ``vectors`` for threshold ``t``."""
        q, meta = quantize(vectors, common=True)
        r = float(meta[:, 1].max())
        return cls(q, meta, t - pair_bound(r, r))

    def block_pairs(
        self, vectors: np.ndarray, r0: int, r1: int, c0: int, c1: int, t: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(i, j)`` in block coordinates: the products of rows ``r0:r1`` with rows ``c0:c1``
        that may reach ``t``; ``None`` for a block dense near ``t`` (multiplied in float32)."""
        if _looks_dense(vectors[r0:r1], vectors[c0:c1], self.low):
            return None
        dots = int8_dot(self.q[r0:r1], self.q[c0:c1])
        if c0 == r0:  # diagonal block: a row's product with itself is no pair
            np.fill_diagonal(dots, 0)
        limit = int(DENSE_BLOCK * dots.size)
        return near_pairs(dots, self.meta[r0:r1], self.meta[c0:c1], t, limit)


def _looks_dense(rows: np.ndarray, cols: np.ndarray, low: float) -> bool:
    """Whether more than twice :data:`DENSE_BLOCK` of the products of a sample of
    :data:`DENSE_SAMPLE` of ``rows`` with ``cols`` reach ``low`` (then the block goes straight
    to float32: a 4,096-row cluster of near-identical rows costs 1.0-1.3x the float32 path, not
    1.5-2x). Smaller blocks are not sampled (a dense one is found by :func:`near_pairs`)."""
    if len(rows) < 64 * DENSE_SAMPLE:  # the sample would cost more than 5% of the int8 block
        return False
    sample = rows[:: len(rows) // DENSE_SAMPLE] @ cols.T
    return bool(np.count_nonzero(sample >= low) > 2 * DENSE_BLOCK * sample.size)


@dataclass(frozen=True)
class ClusterEdges:
    """What one cluster contributes to the global component search.

    Attributes:
        a, b: global indices of a star forest connecting every duplicate group found in the
            cluster (at most one edge per member, whatever the number of pairs).
        pairs: ``(P, 2)`` every pair found, global indices with ``i < j`` (only with
            ``return_pairs``), and ``pair_sims`` their similarities.
        n_pairs: number of pairs found.
        n_compared: similarities computed.
    """

    a: np.ndarray
    b: np.ndarray
    n_pairs: int
    n_compared: int
    pairs: np.ndarray | None = None
    pair_sims: np.ndarray | None = None


@uses_torch
def cluster_edges(
    members: np.ndarray, n_primary: int, vectors: np.ndarray, config: SemanticDedupConfig
) -> ClusterEdges:
    """Find duplicate pairs inside one cluster and reduce them to a spanning forest.

    Args:
        members: global indices, the ``n_primary`` primaries first, then border secondaries.
        n_primary: number of primary members.
        vectors: ``(len(members), D)`` unit float32 embeddings of ``members``.
        config: threshold, block size, ``return_pairs``.
    """
    members = np.asarray(members, dtype=np.int64)
    n, bs, t = len(members), config.block_size, config.threshold
    labels = np.arange(n, dtype=np.int64)
    from pixsieve.dedup.torch_ops import choose_backend, pairs_above  # torch when dedup runs

    _, device = choose_backend(config.backend)
    if device.type == "cpu":
        i, j, vals, n_compared = int8_pairs(vectors, n_primary, t, bs)
    else:  # the same pairs, blocks computed and thresholded by torch on the GPU
        low = t - float32_slack(vectors.shape[1])
        i, j, vals, n_compared = pairs_above(vectors, n_primary, low, block=bs, device=device)
        vals, t32 = fix_band(i, j, vals, vectors, vectors, t)
        hit = vals >= t32
        i, j, vals = i[hit], j[hit], vals[hit]
    n_pairs = len(i)
    union_edges(labels, i, j)
    pairs = pair_sims = None
    if config.return_pairs:
        gi, gj = members[i], members[j]
        pairs = np.stack([np.minimum(gi, gj), np.maximum(gi, gj)], axis=1)
        pair_sims = vals
    a, b = spanning_edges(labels)
    return ClusterEdges(
        a=members[a],
        b=members[b],
        n_pairs=n_pairs,
        n_compared=n_compared,
        pairs=pairs,
        pair_sims=pair_sims,
    )


@dataclass(frozen=True)
class ClusterSemDeDup:
    """SemDeDup's verdict for the members of one cluster (same order as the input).

    Attributes:
        removed: the member is as similar as ``threshold`` to a higher-ranked member.
        parent: global index of its most similar higher-ranked member (``-1`` when kept).
        max_sim: its highest similarity to a higher-ranked member (``-inf`` for the top one).
        n_compared: similarities computed.
        members: the global indices these verdicts are for.
    """

    removed: np.ndarray
    parent: np.ndarray
    max_sim: np.ndarray
    n_compared: int
    members: np.ndarray


def semdedup_cluster(
    members: np.ndarray,
    vectors: np.ndarray,
    priority: np.ndarray,
    config: SemanticDedupConfig,
) -> ClusterSemDeDup:
    """SemDeDup's rule inside one cluster.

    Members are ranked by ``priority`` (highest first, ties by lowest index); a member is
    removed when its highest similarity to any higher-ranked member (removed or not) is at or
    above ``threshold`` (``1 - eps``), exactly as NeMo Curator's pruning tables decide.

    Args:
        members: global indices of the cluster's (primary) members.
        vectors: ``(len(members), D)`` unit float32 embeddings of ``members``.
        priority: ``(len(members),)`` keep preference, higher is kept first.
        config: threshold and block size.
    """
    members = np.asarray(members, dtype=np.int64)
    n, bs, t = len(members), config.block_size, config.threshold
    order = np.lexsort((members, -np.asarray(priority, dtype=np.float64)))
    ranked = vectors[order]
    best = np.full(n, -np.inf, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    t32 = np.float32(t)
    n_compared = 0
    for r0 in range(0, n, bs):
        r1 = min(r0 + bs, n)
        rows = ranked[r0:r1]
        for c0 in range(0, r1, bs):
            c1 = min(c0 + bs, r1)
            cols = ranked[c0:c1]
            sims = rows @ cols.T
            if c1 > r0:  # keep only column < row (strictly higher-ranked)
                sims[~np.tri(r1 - r0, c1 - c0, k=r0 - c0 - 1, dtype=bool)] = -np.inf
            n_compared += sims.size
            t32 = _candidates(sims, rows, cols, t)[3]
            col = np.argmax(sims, axis=1)
            val = sims[np.arange(r1 - r0), col]
            better = val > best[r0:r1]
            best[r0:r1][better] = val[better]
            arg[r0:r1][better] = col[better] + c0
    hit = best >= t32
    removed = np.zeros(n, dtype=bool)
    removed[order] = hit
    parent = np.full(n, -1, dtype=np.int64)
    parent[order[hit]] = members[order[arg[hit]]]
    max_sim = np.empty(n, dtype=np.float32)
    max_sim[order] = best
    return ClusterSemDeDup(
        removed=removed, parent=parent, max_sim=max_sim, n_compared=n_compared, members=members
    )
