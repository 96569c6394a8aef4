"""The torch path of semantic dedup (pixsieve.dedup.torch_ops) against the faiss path."""

from __future__ import annotations

import numpy as np
import pytest
from dedup_tools.synthetic import planted_embeddings

from pixsieve.dedup import SemanticDedupConfig, find_duplicates
from pixsieve.dedup.pairs import cluster_edges
from pixsieve.dedup.torch_ops import choose_backend, fit_kmeans, nearest_centroids, pairs_above


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_nearest_centroids_are_the_brute_force_top_m():
    x, c = _unit(500, 32, 0), _unit(20, 32, 1)
    sims, ids = nearest_centroids(x, c, 3)
    ref = x @ c.T
    np.testing.assert_array_equal(ids, np.argsort(-ref, axis=1)[:, :3])
    np.testing.assert_allclose(sims, np.take_along_axis(ref, ids, 1), atol=1e-6)


def test_kmeans_improves_on_its_seeding_and_is_deterministic():
    centres = _unit(8, 64, 2)
    rng = np.random.default_rng(3)
    x = centres[rng.integers(0, 8, 4000)] + 0.05 * rng.standard_normal((4000, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    c = fit_kmeans(x, 8, iters=10, points_per_centroid=64, seed=0)
    assert c.shape == (8, 64) and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    one_iter = fit_kmeans(x, 8, iters=1, points_per_centroid=64, seed=0)
    fit, start = (x @ c.T).max(axis=1).mean(), (x @ one_iter.T).max(axis=1).mean()
    assert fit >= start - 1e-5 and fit > 0.8  # points sit at cos ~0.93 from their centre
    assert (centres @ c.T).max(axis=1).mean() > 0.85
    np.testing.assert_array_equal(c, fit_kmeans(x, 8, iters=10, points_per_centroid=64, seed=0))


def test_pairs_above_matches_the_full_matrix_blockwise():
    x = _unit(300, 16, 4)
    x[150:] = x[:150] + 0.3 * _unit(150, 16, 5)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    i, j, s, compared = pairs_above(x, 200, 0.8, block=64)
    full = x @ x.T
    ref = {(a, b) for a, b in zip(*np.nonzero(full >= 0.8), strict=True) if a < b and a < 200}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == ref
    np.testing.assert_allclose(s, full[i, j], atol=1e-6)
    assert compared == sum((min(r + 64, 200) - r) * (300 - r) for r in range(0, 200, 64))


@pytest.mark.parametrize("fixture", ["random_planted", "topic_planted"])
def test_torch_backend_gives_the_faiss_answers_on_planted_sets(fixture, request):
    """Components mode does not depend on the clustering: the answers are identical."""
    pytest.importorskip("faiss")
    x = request.getfixturevalue(fixture).embeddings
    out = {}
    for backend in ("faiss", "torch"):
        config = SemanticDedupConfig(threshold=0.95, keep="first", backend=backend)
        out[backend] = find_duplicates(x, config)
    a, b = out["faiss"], out["torch"]
    assert b.backend == "torch:cpu" and a.backend == "faiss"
    np.testing.assert_array_equal(a.removed, b.removed)
    np.testing.assert_array_equal(a.duplicate_of, b.duplicate_of)
    np.testing.assert_array_equal(a.component_size, b.component_size)


def test_torch_semdedup_is_the_greedy_rule_on_its_own_clusters(topic_planted, brute):
    """SemDeDup compares within clusters only: exact given the clusters the torch k-means made,
    and close to the faiss run (two k-means runs differ at the margin)."""
    x = topic_planted.embeddings
    scores = np.random.default_rng(2).uniform(0, 1, len(x))
    config = SemanticDedupConfig(mode="semdedup", keep="aesthetic", n_clusters=12, backend="torch")
    result = find_duplicates(x, config, aesthetic=scores)
    expected = brute.semdedup(x, result.cluster, scores, config.threshold)
    np.testing.assert_array_equal(result.removed, expected)
    assert result.removed.sum() > 100
    pytest.importorskip("faiss")
    faiss_config = SemanticDedupConfig(mode="semdedup", keep="aesthetic", n_clusters=12)
    other = find_duplicates(x, faiss_config, aesthetic=scores)
    assert (other.removed == result.removed).mean() >= 0.95  # 97.9% measured


def test_cluster_edges_torch_path_is_exact_at_the_boundary():
    rng = np.random.default_rng(7)
    v = rng.standard_normal((2, 768)).astype(np.float32)
    v[1] = v[0] + 0.2 * v[1]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cos = float(v[0].astype(np.float64) @ v[1].astype(np.float64))
    at = SemanticDedupConfig(threshold=cos, backend="torch")
    above = SemanticDedupConfig(threshold=float(np.nextafter(cos, 2.0)), backend="torch")
    assert cluster_edges(np.arange(2), 2, v, at).n_pairs == 1
    assert cluster_edges(np.arange(2), 2, v, above).n_pairs == 0


def test_backend_choice():
    assert choose_backend("torch")[0] == "torch"
    assert choose_backend("faiss")[0] == "faiss"
    with pytest.raises(ValueError, match="backend"):
        choose_backend("cupy")
    with pytest.raises(ValueError, match="backend"):
        SemanticDedupConfig(backend="cupy")


@pytest.mark.gpu
def test_torch_ops_on_cuda_match_the_cpu():
    x = _unit(3000, 64, 9)
    c = fit_kmeans(x, 16, iters=5, points_per_centroid=64, seed=0, device="cuda")
    s_gpu, i_gpu = nearest_centroids(x, c, 4, device="cuda")
    s_cpu, i_cpu = nearest_centroids(x, c, 4)
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-5)
    assert (i_gpu[:, 0] == i_cpu[:, 0]).mean() > 0.999
    gpu = pairs_above(x, 3000, 0.3, block=512, device="cuda")
    cpu = pairs_above(x, 3000, 0.3, block=512)
    assert set(zip(gpu[0].tolist(), gpu[1].tolist(), strict=True)) == set(
        zip(cpu[0].tolist(), cpu[1].tolist(), strict=True)
    )


def test_kmeans_above_the_two_level_switch_is_two_level_and_deterministic():
    x = planted_embeddings(6000, 32, n_topics=60, seed=2).embeddings
    c = fit_kmeans(x, 300, iters=5, points_per_centroid=16, seed=0)
    assert c.shape == (300, 32)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(c, fit_kmeans(x, 300, iters=5, points_per_centroid=16, seed=0))
