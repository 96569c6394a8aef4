"""The outcome of semantic deduplication: one row per item, plus timings and counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pixsieve.dedup.config import SemanticDedupConfig


@dataclass
class DedupResult:
    """Fate of every item (arrays of length ``N``) and how the search went.

    Attributes:
        removed: the item is a duplicate of a kept item.
        duplicate_of: index of the kept representative of the item's group (``-1`` when kept).
        similarity: exact cosine between a removed item and its representative (NaN when kept).
        component_id: id of the item's duplicate group, ``0..C-1`` ordered by smallest member
            (``-1`` for items without duplicates).
        component_size: size of that group (1 for items without duplicates).
        chained: the group holds a member less similar to the representative than
            ``threshold - chain_margin`` (linked only through other members).
        cluster: the item's own k-means cluster.
        config: the settings used.
        keep_policy: the keep policy actually applied (after fallbacks).
        timings: seconds per phase.
        counts: sizes and totals (clusters, border memberships, pairs, components...).
        notes: human-readable remarks (fallbacks).
        pairs: ``(P, 2)`` every pair found, ``i < j``, deduplicated (only with ``return_pairs``).
        pair_similarity: ``(P,)`` their similarities (only with ``return_pairs``).
    """

    removed: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray
    component_id: np.ndarray
    component_size: np.ndarray
    chained: np.ndarray
    cluster: np.ndarray
    config: SemanticDedupConfig
    keep_policy: str
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    backend: str = ""  # "faiss" or "torch:<device>" (pixsieve.dedup.torch_ops.choose_backend)
    pairs: np.ndarray | None = None
    pair_similarity: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.removed)

    @property
    def kept(self) -> np.ndarray:
        """Boolean mask of items that survive."""
        return ~self.removed

    @property
    def n_removed(self) -> int:
        """Number of removed items."""
        return int(self.removed.sum())

    def removed_indices(self) -> np.ndarray:
        """Indices of removed items, ascending."""
        return np.flatnonzero(self.removed)

    def summary(self) -> dict[str, Any]:
        """Counts, timings and settings as a JSON-ready dict."""
        return {
            "config": self.config.to_dict(),
            "keep_policy": self.keep_policy,
            "counts": dict(self.counts),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": list(self.notes),
        }


def empty_result(n: int, config: SemanticDedupConfig, keep_policy: str) -> DedupResult:
    """A result where nothing is removed (all arrays at their "no duplicate" values)."""
    return DedupResult(
        removed=np.zeros(n, dtype=bool),
        duplicate_of=np.full(n, -1, dtype=np.int64),
        similarity=np.full(n, np.nan, dtype=np.float32),
        component_id=np.full(n, -1, dtype=np.int64),
        component_size=np.ones(n, dtype=np.int64),
        chained=np.zeros(n, dtype=bool),
        cluster=np.zeros(n, dtype=np.int64),
        config=config,
        keep_policy=keep_policy,
    )


def describe_groups(
    rows: np.ndarray, rep: np.ndarray, similarity: np.ndarray, config: SemanticDedupConfig
) -> dict[str, Any]:
    """Group ids, sizes and chain flags for items given with their representative.

    The items sharing a representative (``rep``, the item itself when kept) form one reported
    group. ``rows`` must hold every member of every group of two or more (other items may be
    present: they are groups of one). Groups of two or more get ids ``0..C-1`` in the order of
    their smallest member, whatever subset of the items is given, so a partitioned run numbers
    groups exactly as the in-memory one.

    Returns arrays aligned with ``rows`` (``removed``, ``component_id``, ``component_size``,
    ``chained``) and the counts ``n_components``, ``n_chained``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    removed = rep != rows
    uniq, inv, counts = np.unique(rep, return_inverse=True, return_counts=True)
    smallest = np.full(len(uniq), np.iinfo(np.int64).max)
    np.minimum.at(smallest, inv, rows)
    multi = np.flatnonzero(counts >= 2)
    multi = multi[np.argsort(smallest[multi], kind="stable")]
    dense = np.full(len(uniq), -1, dtype=np.int64)
    dense[multi] = np.arange(len(multi))
    weakest = np.full(len(uniq), np.inf)
    np.minimum.at(weakest, inv[removed], similarity[removed])
    chained_group = weakest < config.threshold - config.chain_margin
    return {
        "removed": removed,
        "component_id": dense[inv],
        "component_size": counts[inv].astype(np.int64),
        "chained": chained_group[inv] & (counts[inv] >= 2),
        "n_components": len(multi),
        "n_chained": int(chained_group[multi].sum()),
    }


def group_arrays(
    reps: np.ndarray, similarity: np.ndarray, config: SemanticDedupConfig
) -> dict[str, Any]:
    """:func:`describe_groups` over all ``N`` items, plus ``duplicate_of`` and float32
    ``similarity`` (NaN when kept)."""
    n = len(reps)
    out = describe_groups(np.arange(n), reps, similarity, config)
    out["duplicate_of"] = np.where(out["removed"], reps, -1).astype(np.int64)
    out["similarity"] = np.where(out["removed"], similarity, np.nan).astype(np.float32)
    return out
