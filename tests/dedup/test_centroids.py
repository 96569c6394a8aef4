"""Two-level k-means: the split of the centroids, balance, determinism, degenerate samples."""

from __future__ import annotations

import numpy as np
import pytest
from dedup_tools.synthetic import planted_embeddings

from pixsieve.dedup import centroids
from pixsieve.dedup.centroid_search import CentroidSearch
from pixsieve.dedup.centroids import allocate, refine, train_centroids


def test_allocate_is_proportional_capped_and_exact():
    counts = np.array([0, 1, 5, 100, 300, 594])
    share = allocate(counts, 50, min_points=4)
    assert share.sum() == 50
    assert share[0] == 0 and share[1] == 1  # empty part: none; any point: at least one
    assert np.all(share[2:] <= counts[2:] // 4)
    assert abs(share[5] - 594 * 50 / 1000) <= 1
    tight = allocate(np.array([3, 3, 4]), 10, min_points=4)  # caps relaxed to one per point
    assert tight.tolist() == [3, 3, 4]


def test_refine_is_a_spherical_lloyd_step_with_empty_centroids_kept():
    """One iteration: each centroid becomes the normalised float64 sum of the rows nearest to
    it, over chunks smaller than the sample (labels repeated, absent and out of order)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = np.concatenate([x[:7], x[:1]])  # the last one ties with the first, which wins its rows
    label = np.argmax(x @ c.T, axis=1)
    sums = np.zeros(c.shape)
    np.add.at(sums, label, x.astype(np.float64))
    want = c.copy()
    want[:7] = sums[:7] / np.linalg.norm(sums[:7], axis=1, keepdims=True)
    got = refine(x, c, 1, chunk=64)
    assert 7 not in label and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    return planted_embeddings(40000, 32, n_topics=400, seed=3).embeddings


def test_two_level_kmeans_is_balanced_deterministic_and_unit(clustered):
    k = 400
    c = train_centroids(clustered, k, iters=10, points_per_centroid=64, seed=0)
    assert c.shape == (k, 32) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(
        c, train_centroids(clustered, k, iters=10, points_per_centroid=64, seed=0)
    )
    own = CentroidSearch(c, 1).search(clustered)[1][:, 0]
    sizes = np.bincount(own, minlength=k)
    assert sizes.max() <= 4 * len(clustered) / k
    assert (sizes == 0).sum() <= k // 50


def test_two_level_is_nearly_as_tight_as_flat(clustered, monkeypatch):
    k = 400
    two = train_centroids(clustered, k, iters=10, points_per_centroid=64, seed=0)
    monkeypatch.setattr(centroids, "TWO_LEVEL_MIN_CENTROIDS", 10**9)
    flat = train_centroids(clustered, k, iters=10, points_per_centroid=64, seed=0)

    def fit(c: np.ndarray) -> float:
        return float(CentroidSearch(c, 1).search(clustered)[0][:, 0].mean())

    # the refinement moves the borders that cut a topic in the seeding
    assert fit(two) >= fit(flat) - 0.01


def test_two_level_kmeans_on_a_degenerate_sample():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((5, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    x = np.repeat(base, 200, axis=0)  # 1,000 rows, 5 distinct
    c = train_centroids(x, 300, iters=5, points_per_centroid=64, seed=1)
    assert c.shape == (300, 16) and np.isfinite(c).all()
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    assert train_centroids(x[:400], 400, iters=5, points_per_centroid=64, seed=1).shape == (
        400,
        16,
    )
