"""Settings of semantic deduplication: one frozen dataclass, cheap to pickle and ship to workers.

The threshold is a cosine similarity between L2-normalised embeddings: two images are
near-duplicates when ``cos(a, b) >= threshold``. NeMo Curator / SemDeDup express the same cut as
``eps`` (a cosine *distance*): ``threshold = 1 - eps``. See ``docs/dedup.md`` for how the default
was chosen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

KeepPolicy = Literal["aesthetic", "resolution", "first", "farthest"]
Mode = Literal["witness", "components", "semdedup"]

KEEP_POLICIES: tuple[str, ...] = ("aesthetic", "resolution", "first", "farthest")
MODES: tuple[str, ...] = ("witness", "components", "semdedup")
#: Default mode: every removed item is at or above the threshold to a kept one.
DEFAULT_MODE: str = "witness"

#: Default cosine-similarity cut for CLIP ViT-L/14 image embeddings (``eps = 0.05``).
DEFAULT_THRESHOLD: float = 0.95


def check_threshold(threshold: float) -> float:
    """The one rule for a semantic-dedup threshold: a cosine similarity in (0, 1].

    At 0 or below, unrelated images would count as duplicates. Every entry point (the config,
    ``curate``, ``dedup``, ``sweep``, ``refilter``, :class:`SemanticDedupConfig`) applies it.

    Raises:
        ValueError: outside (0, 1], NaN included.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in (0, 1], got {threshold!r}")
    return threshold


#: Items per k-means cluster aimed at by :func:`auto_n_clusters`.
CLUSTER_SIZE: int = 1000


def auto_n_clusters(n: int) -> int:
    """Number of k-means clusters for ``n`` points: one per :data:`CLUSTER_SIZE` (1,000) items.

    Clusters of a bounded size keep the within-cluster search per item flat as ``n`` grows (a
    ``sqrt(n)`` count would make clusters, and the cost per item, grow with ``sqrt(n)``); the
    assignment to ``n / 1000`` centroids is what grows instead, and it is a cheap search.
    """
    if n <= 0:
        return 1
    return max(1, round(n / CLUSTER_SIZE))


@dataclass(frozen=True)
class SemanticDedupConfig:
    """How :func:`pixsieve.dedup.find_duplicates` finds and resolves near-duplicates.

    Attributes:
        threshold: cosine similarity at or above which two embeddings are duplicates
            (``1 - eps`` in SemDeDup / NeMo Curator terms).
        n_clusters: k-means clusters; ``None`` picks :func:`auto_n_clusters` from ``N`` (N/1000).
        keep: which member of a duplicate group survives: ``aesthetic`` (highest score; ``first``
            when scores are missing), ``resolution`` (largest width*height), ``first`` (lowest
            index) or ``farthest`` (farthest from its cluster centroid, SemDeDup's "hard").
        mode: ``witness`` (members of a duplicate component visited in keep order; one is
            removed only when it is at or above the threshold to an already kept member, its
            ``duplicate_of``), ``components`` (connected components over all pairs, one survivor
            per component, chains included) or ``semdedup`` (SemDeDup's per-cluster rule, for
            parity with NeMo Curator).
        seed: seed of k-means sampling and initialisation (results are deterministic per seed).
        block_size: rows and columns of one similarity block; a block holds
            ``block_size**2`` float32 values (4096 → 64 MiB).
        border_candidates: nearest centroids examined per point (its own included) when looking
            for clusters it borders; 1 disables border handling (hard assignment).
        border_slack: scale of the border margin. A point also joins a neighbouring cluster ``b``
            when its similarity gap ``s(own) - s(b)`` is at most
            ``border_slack * sqrt(2 * (1 - threshold)) * |c_own - c_b| / 2``. With 1.0 no pair is
            missed among the examined clusters (see ``docs/dedup.md`` for the proof).
        chain_margin: a component is flagged ``chained`` when one of its members is less similar
            to the survivor than ``threshold - chain_margin``.
        kmeans_iters: k-means iterations.
        kmeans_points_per_centroid: k-means trains on at most this many sampled points per
            centroid (the rest are only assigned).
        use_gpu: run faiss on GPU; ``None`` uses one when faiss was built with GPU support.
        return_pairs: also return every pair found (for evaluation; memory grows with pairs).
    """

    threshold: float = DEFAULT_THRESHOLD
    n_clusters: int | None = None
    keep: KeepPolicy = "aesthetic"
    mode: Mode = DEFAULT_MODE  # type: ignore[assignment]
    seed: int = 0
    block_size: int = 4096
    border_candidates: int = 16
    border_slack: float = 1.0
    chain_margin: float = 0.05
    kmeans_iters: int = 10
    kmeans_points_per_centroid: int = 64
    use_gpu: bool | None = None
    return_pairs: bool = False

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {self.n_clusters}")
        if self.keep not in KEEP_POLICIES:
            raise ValueError(f"keep must be one of {KEEP_POLICIES}, got {self.keep!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.block_size < 16:
            raise ValueError(f"block_size must be >= 16, got {self.block_size}")
        if self.border_candidates < 1:
            raise ValueError(f"border_candidates must be >= 1, got {self.border_candidates}")
        if self.border_slack < 0 or self.chain_margin < 0:
            raise ValueError("border_slack and chain_margin must be >= 0")
        if self.kmeans_iters < 1 or self.kmeans_points_per_centroid < 1:
            raise ValueError("kmeans_iters and kmeans_points_per_centroid must be >= 1")

    @classmethod
    def from_eps(cls, eps: float, **kwargs: Any) -> SemanticDedupConfig:
        """Build a config from SemDeDup's ``eps`` (cosine distance): ``threshold = 1 - eps``."""
        return cls(threshold=1.0 - eps, **kwargs)

    @property
    def eps(self) -> float:
        """The threshold as SemDeDup's ``eps``: ``1 - threshold``."""
        return 1.0 - self.threshold

    def clusters_for(self, n: int) -> int:
        """Clusters to use for ``n`` points (``n_clusters`` capped at ``n``, or automatic)."""
        k = self.n_clusters if self.n_clusters is not None else auto_n_clusters(n)
        return max(1, min(k, n))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (for summaries and ``run.json``)."""
        return asdict(self)
