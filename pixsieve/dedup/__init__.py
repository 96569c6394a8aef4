"""Semantic deduplication of image embeddings on CPU (faiss k-means + blockwise search).

Use :func:`find_duplicates` on an ``(N, D)`` array, or ``pixsieve dedup`` on a Parquet table.
See ``docs/dedup.md`` for what the threshold means, the keep policies and the three modes.
"""

from __future__ import annotations

from pixsieve.dedup.config import (
    DEFAULT_MODE,
    DEFAULT_THRESHOLD,
    KEEP_POLICIES,
    MODES,
    SemanticDedupConfig,
    auto_n_clusters,
)
from pixsieve.dedup.io import InputError, read_embeddings, write_duplicates
from pixsieve.dedup.kmeans import EmbeddingError
from pixsieve.dedup.pairs import cluster_edges, semdedup_cluster
from pixsieve.dedup.result import DedupResult
from pixsieve.dedup.semantic import find_duplicates
from pixsieve.dedup.witness import witness_groups

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
