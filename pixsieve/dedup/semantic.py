"""Semantic deduplication of embeddings: cluster, search within clusters, resolve groups.

:func:`find_duplicates` is the one entry point. The per-cluster work it loops over
(:func:`pixsieve.dedup.pairs.cluster_edges`, :func:`pixsieve.dedup.pairs.semdedup_cluster`) is
pure, so a distributed executor can replace the loop by one task per cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np

from pixsieve.calls import MapCalls, serial_calls
from pixsieve.dedup.border import Membership, build_membership
from pixsieve.dedup.buckets import resolve_groups
from pixsieve.dedup.centroid_search import assign
from pixsieve.dedup.centroids import fit_centroids
from pixsieve.dedup.components import connected_components
from pixsieve.dedup.config import SemanticDedupConfig
from pixsieve.dedup.keep import priority, resolve_policy
from pixsieve.dedup.kmeans import (
    EmbeddingError,
    faiss_gpu_available,
    normalize,
)
from pixsieve.dedup.pairs import cluster_edges, semdedup_cluster
from pixsieve.dedup.quant import load_torch
from pixsieve.dedup.result import DedupResult, empty_result, group_arrays

Progress = Callable[[str, int, int], None]


def _check_column(name: str, values: np.ndarray | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise EmbeddingError(f"{name} has {len(values)} rows, embeddings have {n}")


def find_duplicates(
    embeddings: np.ndarray,
    config: SemanticDedupConfig | None = None,
    *,
    aesthetic: np.ndarray | None = None,
    resolution: np.ndarray | None = None,
    progress: Progress | None = None,
    map_calls: MapCalls | None = None,
) -> DedupResult:
    """Find near-duplicate embeddings and choose one survivor per duplicate group.

    Args:
        embeddings: ``(N, D)`` float embeddings (normalised here; a unit float32 array is used
            without a copy).
        config: settings (defaults: threshold 0.95, ``components`` mode, ``aesthetic`` keep).
        aesthetic: ``(N,)`` aesthetic scores for ``keep="aesthetic"`` (NaN ranks last).
        resolution: ``(N,)`` pixel counts or ``(N, 2)`` width/height for ``keep="resolution"``.
        progress: called as ``progress(phase, done, total)`` during long phases.
        map_calls: runs the per-cluster work: ``map_calls(fn, argument_tuples)`` yields
            ``fn(*args)`` in order (an executor's ``map_calls`` spreads it over a cluster);
            by default the calls run here, one after the other.

    Raises:
        EmbeddingError: bad shape, NaN/inf or zero rows, or score arrays of the wrong length.
    """
    config = config or SemanticDedupConfig()
    timings: dict[str, float] = {}

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    with phase("normalise"):
        x = normalize(embeddings, progress)
    n = len(x)
    _check_column("aesthetic", aesthetic, n)
    _check_column("resolution", resolution, n)
    policy, note = resolve_policy(config.keep, aesthetic, resolution)
    result = empty_result(n, config, policy)
    result.notes += [note] if note else []
    result.timings = timings
    if n == 0:
        return result

    k = config.clusters_for(n)
    from pixsieve.dedup import torch_ops  # torch only once dedup runs

    backend, device = torch_ops.choose_backend(config.backend)
    result.backend = backend if backend == "faiss" else f"torch:{device.type}"
    use_gpu = backend == "faiss" and (
        faiss_gpu_available() if config.use_gpu is None else config.use_gpu
    )
    fit = fit_centroids if backend == "faiss" else partial(torch_ops.fit_kmeans, device=device)
    with phase("kmeans"):
        if progress:
            progress("kmeans", 0, 1)
        centroids = fit(
            x,
            k,
            iters=config.kmeans_iters,
            seed=config.seed,
            points_per_centroid=config.kmeans_points_per_centroid,
            **({"use_gpu": use_gpu} if backend == "faiss" else {}),
        )
        if progress:
            progress("kmeans", 1, 1)
    semdedup = config.mode == "semdedup"
    with phase("assign"):
        m = 1 if semdedup else config.border_candidates
        if backend == "faiss":
            sims, ids = assign(x, centroids, m, use_gpu=use_gpu, progress=progress)
        else:
            sims, ids = torch_ops.nearest_centroids(x, centroids, m, device=device)
        slack = 0.0 if semdedup else config.border_slack
        membership = build_membership(sims, ids, centroids, threshold=config.threshold, slack=slack)
        result.cluster = ids[:, 0].astype(np.int64)
    prio = priority(policy, n, aesthetic=aesthetic, resolution=resolution, centroid_sim=sims[:, 0])
    del sims, ids
    sizes = membership.sizes()
    result.counts.update(
        n=n,
        n_clusters=k,
        largest_cluster=int(sizes.max()),
        border_memberships=membership.n_secondary,
    )
    with phase("similarity"):
        load_torch()  # before the map: its tasks multiply in int8 on torch (pairs.int8_pairs)
        if semdedup:
            a, b = _semdedup(x, membership, prio, config, result, progress, map_calls)
        else:
            a, b = _edges(x, membership, config, result, progress, map_calls)
    with phase("components"):
        labels = connected_components(n, a, b)
        rows = np.flatnonzero(np.bincount(labels, minlength=n)[labels] >= 2)
        child = np.zeros(n, dtype=bool)
        child[a] = semdedup
        rep, sim, n_resolved = resolve_groups(
            rows, labels[rows], x, prio[rows], child[rows], config, vector_index=rows
        )
        reps = np.arange(n, dtype=np.int64)
        reps[rows] = rep
        similarity = np.full(n, np.nan)
        similarity[rows] = sim
        result.counts["resolve_similarities"] = n_resolved
        _finalise(reps, similarity, config, result)
    return result


def _edges(
    x: np.ndarray,
    membership: Membership,
    config: SemanticDedupConfig,
    result: DedupResult,
    progress: Progress | None,
    map_calls: MapCalls | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`cluster_edges` on every cluster; return the union of their spanning edges."""
    a_parts, b_parts, pair_parts, sim_parts = [], [], [], []
    n_pairs = n_compared = 0
    k = membership.n_clusters

    def calls() -> Iterator[tuple[Any, ...]]:
        for c in range(k):
            members, n_primary = membership.members(c)
            if n_primary and len(members) > 1:
                yield members, n_primary, x[members], config

    for done, out in enumerate((map_calls or serial_calls)(cluster_edges, calls()), start=1):
        a_parts.append(out.a)
        b_parts.append(out.b)
        n_pairs += out.n_pairs
        n_compared += out.n_compared
        if out.pairs is not None:
            pair_parts.append(out.pairs)
            sim_parts.append(out.pair_sims)
        if progress:
            progress("similarity", done, k)
    result.counts.update(pairs_found=n_pairs, similarities_computed=n_compared)
    if config.return_pairs:
        pairs = np.concatenate(pair_parts) if pair_parts else np.empty((0, 2), dtype=np.int64)
        sims = np.concatenate(sim_parts) if sim_parts else np.empty(0, dtype=np.float32)
        key = pairs[:, 0] * len(x) + pairs[:, 1]
        _, first = np.unique(key, return_index=True)
        result.pairs, result.pair_similarity = pairs[first], sims[first]
        result.counts["pairs"] = len(first)
    empty = np.empty(0, dtype=np.int64)
    a = np.concatenate(a_parts) if a_parts else empty
    b = np.concatenate(b_parts) if b_parts else empty
    return a, b


def _semdedup(
    x: np.ndarray,
    membership: Membership,
    prio: np.ndarray,
    config: SemanticDedupConfig,
    result: DedupResult,
    progress: Progress | None,
    map_calls: MapCalls | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`semdedup_cluster` on every cluster; return its links ``(removed, parent)``.

    A removed item points at its most similar higher-ranked item; following those links ends at
    a kept item, its representative. The trees so formed are the duplicate groups.
    """
    a_parts, b_parts = [], []
    n_compared = 0
    k = membership.n_clusters

    def calls() -> Iterator[tuple[Any, ...]]:
        for c in range(k):
            members, _ = membership.members(c)
            if len(members) > 1:
                yield members, x[members], prio[members], config

    for done, out in enumerate((map_calls or serial_calls)(semdedup_cluster, calls()), start=1):
        a_parts.append(out.members[out.removed])
        b_parts.append(out.parent[out.removed])
        n_compared += out.n_compared
        if progress:
            progress("similarity", done, k)
    result.counts.update(similarities_computed=n_compared)
    empty = np.empty(0, dtype=np.int64)
    return (
        np.concatenate(a_parts) if a_parts else empty,
        np.concatenate(b_parts) if b_parts else empty,
    )


def _finalise(
    reps: np.ndarray,
    similarity: np.ndarray,
    config: SemanticDedupConfig,
    result: DedupResult,
) -> None:
    """Fill the per-item arrays of ``result`` from each item's representative and similarity.

    The items sharing a representative form one reported group.
    """
    arrays = group_arrays(reps, similarity, config)
    result.removed = arrays["removed"]
    result.duplicate_of = arrays["duplicate_of"]
    result.similarity = arrays["similarity"]
    result.component_id = arrays["component_id"]
    result.component_size = arrays["component_size"]
    result.chained = arrays["chained"]
    result.counts.update(
        components=arrays["n_components"],
        removed=int(result.removed.sum()),
        chained_components=arrays["n_chained"],
    )
