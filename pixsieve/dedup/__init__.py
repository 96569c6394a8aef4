"""Semantic deduplication of image embeddings on CPU (faiss k-means + blockwise search).

Use :func:`find_duplicates` on an ``(N, D)`` array, or ``pixsieve dedup`` on a Parquet table.
See ``docs/dedup.md`` for what the threshold means, the keep policies and the three modes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixsieve.dedup.config import (
    DEFAULT_MODE,
    DEFAULT_THRESHOLD,
    KEEP_POLICIES,
    MODES,
    SemanticDedupConfig,
    auto_n_clusters,
)

if TYPE_CHECKING:
    from pixsieve.dedup.io import InputError, read_embeddings, write_duplicates
    from pixsieve.dedup.kmeans import EmbeddingError
    from pixsieve.dedup.pairs import cluster_edges, semdedup_cluster
    from pixsieve.dedup.result import DedupResult
    from pixsieve.dedup.semantic import find_duplicates
    from pixsieve.dedup.witness import witness_groups

_LAZY = {  # imported on first use: pyarrow.dataset and faiss take a second
    "InputError": "sources",
    "read_embeddings": "io",
    "write_duplicates": "io",
    "EmbeddingError": "kmeans",
    "cluster_edges": "pairs",
    "semdedup_cluster": "pairs",
    "DedupResult": "result",
    "find_duplicates": "semantic",
    "witness_groups": "witness",
}

__all__ = [
    "DEFAULT_MODE",
    "DEFAULT_THRESHOLD",
    "KEEP_POLICIES",
    "MODES",
    "DedupResult",
    "EmbeddingError",
    "InputError",
    "SemanticDedupConfig",
    "auto_n_clusters",
    "cluster_edges",
    "find_duplicates",
    "read_embeddings",
    "semdedup_cluster",
    "witness_groups",
    "write_duplicates",
]


def __getattr__(name: str) -> Any:
    """Import the heavier parts of the package on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"pixsieve.dedup.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'pixsieve.dedup' has no attribute {name!r}")
