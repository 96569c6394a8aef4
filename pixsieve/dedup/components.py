"""Connected components over pairs: a vectorised NumPy union-find.

Labels only ever decrease and always name a node of the same component, so at convergence each
component is labelled by its smallest node index. Every round hooks the larger root of each
still-split edge onto the smaller one and then compresses paths by pointer jumping; only edges
whose endpoints still disagree are carried to the next round.
"""

from __future__ import annotations

import numpy as np


def compress(labels: np.ndarray) -> np.ndarray:
    """Pointer-jump ``labels`` in place until every node points at its root; return it."""
    while True:
        nxt = labels[labels]
        if np.array_equal(nxt, labels):
            return labels
        labels[:] = nxt


def union_edges(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge the components of every edge ``(a[i], b[i])`` into ``labels`` (in place).

    ``labels`` must be a compressed forest (``np.arange(n)`` to start); it stays one.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while len(a):
        la, lb = labels[a], labels[b]
        split = la != lb
        if not split.any():
            break
        a, b, la, lb = a[split], b[split], la[split], lb[split]
        low = np.minimum(la, lb)
        np.minimum.at(labels, la, low)
        np.minimum.at(labels, lb, low)
        compress(labels)
    return labels


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Label ``n`` nodes by component: ``labels[i]`` is the smallest node of ``i``'s component."""
    labels = np.arange(n, dtype=np.int64)
    return union_edges(labels, a, b)


def spanning_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges ``(node, root)`` of a star forest with the same components as ``labels``."""
    nodes = np.flatnonzero(labels != np.arange(len(labels)))
    return nodes, labels[nodes]


def number_components(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids for components with 2+ members (``labels`` name one node per component).

    Returns:
        ``(component_id, component_size)``: ids ``0..C-1`` ordered by each component's smallest
        member (``-1`` for singletons) and the size of each node's component (1 for singletons).
    """
    n = len(labels)
    counts = np.bincount(labels, minlength=n)
    size = counts[labels].astype(np.int64)
    roots = np.flatnonzero(counts >= 2)
    smallest = np.full(n, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n, dtype=np.int64))
    roots = roots[np.argsort(smallest[roots], kind="stable")]
    dense = np.full(n, -1, dtype=np.int64)
    dense[roots] = np.arange(len(roots), dtype=np.int64)
    return dense[labels], size
