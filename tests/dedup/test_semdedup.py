"""``mode="semdedup"`` reproduces SemDeDup / NeMo Curator's per-cluster greedy rule."""

from __future__ import annotations

import numpy as np
import pytest

from pixsieve.dedup import SemanticDedupConfig, find_duplicates, semdedup_cluster
from pixsieve.dedup.centroid_search import assign
from pixsieve.dedup.centroids import fit_centroids


@pytest.mark.parametrize("block_size", [4096, 32])
def test_semdedup_matches_brute_force_greedy_rule(topic_planted, brute, block_size):
    x = topic_planted.embeddings
    scores = np.random.default_rng(2).uniform(0, 1, len(x))
    config = SemanticDedupConfig(
        mode="semdedup", keep="aesthetic", n_clusters=12, block_size=block_size
    )
    result = find_duplicates(x, config, aesthetic=scores)
    expected = brute.semdedup(x, result.cluster, scores, config.threshold)
    np.testing.assert_array_equal(result.removed, expected)
    assert result.removed.sum() > 100


def test_semdedup_farthest_is_nemo_hard(random_planted, brute):
    x = random_planted.embeddings[:800]
    config = SemanticDedupConfig(mode="semdedup", keep="farthest", n_clusters=1)
    result = find_duplicates(x, config)
    centroid = fit_centroids(x, 1, iters=1, points_per_centroid=1, seed=0)
    sim = assign(x, centroid, 1)[0][:, 0]  # the same float32 values the library ranks by
    expected = brute.semdedup(x, np.zeros(len(x)), -sim, config.threshold)
    np.testing.assert_array_equal(result.removed, expected)


def test_semdedup_points_removed_items_at_kept_ones(topic_planted):
    x = topic_planted.embeddings
    result = find_duplicates(x, SemanticDedupConfig(mode="semdedup", keep="first"))
    removed = result.removed_indices()
    reps = result.duplicate_of[removed]
    assert np.all(reps >= 0) and not result.removed[reps].any()
    assert np.all(result.cluster[reps] == result.cluster[removed])
    exact = np.einsum("ij,ij->i", x[removed].astype(np.float64), x[reps].astype(np.float64))
    np.testing.assert_allclose(result.similarity[removed], exact, atol=1e-6)
    assert np.isnan(result.similarity[~result.removed]).all()
    assert np.all(result.component_id[removed] >= 0)


def test_semdedup_cluster_is_a_pure_function():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vecs = np.concatenate([base, base[:1] * 0.999 + base[1:2] * 0.01])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    members = np.array([10, 20, 30, 40])
    prio = np.array([0.0, 1.0, 2.0, 3.0])  # member 40 ranks first, then 30, 20, 10
    out = semdedup_cluster(members, vecs, prio, SemanticDedupConfig(threshold=0.99))
    np.testing.assert_array_equal(out.removed, [True, False, False, False])
    np.testing.assert_array_equal(out.parent, [40, -1, -1, -1])
    assert out.max_sim[0] > 0.99
