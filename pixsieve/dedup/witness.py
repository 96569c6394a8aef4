"""The ``witness`` rule: every removed item is at or above the threshold to a *kept* item.

Members of a duplicate component are visited in keep-policy order (highest priority first, ties
by lowest index). A member is removed when its exact cosine to some already kept member of its
component is at or above the threshold; the most similar such kept member becomes its
``duplicate_of`` (its *witness*). Otherwise it is kept. Survivors are therefore never within the
threshold of each other (a maximal independent set of the duplicate graph), and no item is
removed through a chain of intermediate members.

Only pairs at or above the threshold matter and every such pair lies inside one connected
component, so the rule needs the members of a component and their embeddings, nothing else.
:func:`witness_groups` is a pure function of those, so it runs per component bucket as a task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Take = Callable[[np.ndarray], np.ndarray]

#: Components up to this size are resolved together, vectorised over all components of a size.
SMALL_COMPONENT: int = 32
#: Float64 values materialised at once when batching small components (about 64 MiB).
BATCH_VALUES: int = 8 * 1024 * 1024
#: Ranks resolved per block inside one large component.
LARGE_BLOCK: int = 1024


@dataclass(frozen=True)
class Witnesses:
    """Verdicts for the rows given to :func:`witness_groups` (same order as the input).

    Attributes:
        witness: global index of the kept witness (``-1`` when the row is kept).
        similarity: exact (float64) cosine to the witness (NaN when kept).
        n_compared: similarities computed.
    """

    witness: np.ndarray
    similarity: np.ndarray
    n_compared: int


def _small(
    idx: np.ndarray, take: Take, threshold: float, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resolve ``C`` components of equal size ``s`` given as ``(C, s)`` local rows in rank order.

    Returns ``(witness local row or -1, similarity)`` both ``(C, s)``.
    """
    c, s = idx.shape
    wit = np.full((c, s), -1, dtype=np.int64)
    sim = np.full((c, s), np.nan)
    step = max(1, BATCH_VALUES // max(1, s * dim))
    for lo in range(0, c, step):
        block = idx[lo : lo + step]
        v = take(block.reshape(-1)).astype(np.float64).reshape(*block.shape, -1)  # (b, s, D)
        gram = np.einsum("bsd,btd->bst", v, v)
        kept = np.ones(block.shape, dtype=bool)
        for r in range(1, s):
            cand = np.where(kept[:, :r], gram[:, r, :r], -np.inf)
            best = np.argmax(cand, axis=1)
            val = cand[np.arange(len(block)), best]
            hit = val >= threshold
            kept[:, r] = ~hit
            wit[lo : lo + len(block), r] = np.where(hit, block[np.arange(len(block)), best], -1)
            sim[lo : lo + len(block), r] = np.where(hit, val, np.nan)
    return wit, sim


def _large(rows: np.ndarray, take: Take, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Resolve one component given as local rows in rank order, block by block."""
    n = len(rows)
    wit = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan)
    kept: list[int] = []
    for r0 in range(0, n, LARGE_BLOCK):
        block = rows[r0 : r0 + LARGE_BLOCK]
        v = take(block).astype(np.float64)
        best = np.full(len(block), -np.inf)
        arg = np.full(len(block), -1, dtype=np.int64)
        for k0 in range(0, len(kept), LARGE_BLOCK):
            kept_rows = np.asarray(kept[k0 : k0 + LARGE_BLOCK], dtype=np.int64)
            s = v @ take(kept_rows).astype(np.float64).T
            col = np.argmax(s, axis=1)
            val = s[np.arange(len(block)), col]
            better = val > best
            best[better], arg[better] = val[better], kept_rows[col[better]]
        gram = v @ v.T
        for i in range(len(block)):
            if best[i] >= threshold:
                wit[r0 + i], sim[r0 + i] = arg[i], best[i]
                continue
            kept.append(int(block[i]))
            later = gram[i, i + 1 :]
            better = later > best[i + 1 :]
            best[i + 1 :][better] = later[better]
            arg[i + 1 :][better] = block[i]
    return wit, sim


def witness_groups(
    members: np.ndarray,
    labels: np.ndarray,
    vectors: np.ndarray,
    priority: np.ndarray,
    threshold: float,
    vector_index: np.ndarray | None = None,
) -> Witnesses:
    """Apply the witness rule inside every component.

    Args:
        members: ``(G,)`` global indices of the rows.
        labels: ``(G,)`` component of each row (any integer naming the component).
        vectors: ``(G, D)`` unit embeddings of the rows, or any larger array holding them at
            ``vector_index`` (so a caller holding every embedding needs no copy).
        priority: ``(G,)`` keep preference, higher is visited (and kept) first.
        threshold: cosine at or above which a row is a duplicate of a kept row.
        vector_index: ``(G,)`` row of each member in ``vectors`` (default: ``0..G-1``).
    """

    def take(local: np.ndarray) -> np.ndarray:
        return vectors[local if vector_index is None else vector_index[local]]

    members = np.asarray(members, dtype=np.int64)
    g = len(members)
    order = np.lexsort((members, -np.asarray(priority, dtype=np.float64), labels))
    lab = np.asarray(labels)[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]) if g else np.empty(0, np.int64)
    sizes = np.diff(np.r_[starts, g])
    wit_local = np.full(g, -1, dtype=np.int64)
    sim = np.full(g, np.nan)
    n_compared = 0
    for s in np.unique(sizes):
        if s < 2:
            continue
        first = starts[sizes == s]
        if s <= SMALL_COMPONENT:
            pos = first[:, None] + np.arange(s)  # positions in rank order
            w, v = _small(order[pos], take, threshold, vectors.shape[1])
            wit_local[order[pos]], sim[order[pos]] = w, v
            n_compared += int(len(first) * s * s)
            continue
        for f in first:
            rows = order[f : f + s]
            w, v = _large(rows, take, threshold)
            wit_local[rows], sim[rows] = w, v
            n_compared += int(s * s)
    witness = np.where(wit_local >= 0, members[np.maximum(wit_local, 0)], -1)
    return Witnesses(witness=witness, similarity=sim, n_compared=n_compared)
