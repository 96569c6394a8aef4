"""The two-level centroid search against the exact one."""

from __future__ import annotations

import numpy as np
import pytest
from dedup_tools.synthetic import planted_embeddings

from pixsieve.dedup import centroid_search
from pixsieve.dedup.border import border_margin
from pixsieve.dedup.centroid_search import CentroidSearch, coarse_level
from pixsieve.dedup.centroids import train_centroids


@pytest.fixture(autouse=True)
def _two_level(monkeypatch):
    """Search 600 centroids two-level (the default switches over at a few thousand)."""
    monkeypatch.setattr(centroid_search, "FLAT_MAX_CENTROIDS", 256)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = planted_embeddings(20000, 768, n_topics=300, seed=7).embeddings
    c = train_centroids(x, 600, iters=8, points_per_centroid=64, seed=0)
    return x, c


def _exact(x: np.ndarray, c: np.ndarray, m: int, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    monkeypatch.setattr(centroid_search, "FLAT_MAX_CENTROIDS", 10**9)
    return CentroidSearch(c, m).search(x)


def test_two_level_finds_the_nearest_centroid(data, monkeypatch):
    x, c = data
    assert len(c) > centroid_search.FLAT_MAX_CENTROIDS
    search = CentroidSearch(c, 16)
    assert search.level is not None
    sims, ids = search.search(x)
    exact_sims, exact_ids = _exact(x, c, 16, monkeypatch)
    assert (ids[:, 0] == exact_ids[:, 0]).mean() >= 0.999
    assert search.exact_rows < len(x) // 10  # the doubtful rows only are searched exactly
    # what it returns is exact for the ids it returns, nearest first, no repeats
    np.testing.assert_allclose(sims, np.einsum("nd,nmd->nm", x, c[ids]), atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 0)
    assert all(len(set(row)) == 16 for row in ids[:2000].tolist())
    # the neighbours the border rule can use (gap within its margin) are found
    gap = exact_sims[:, :1] - exact_sims
    dist = np.linalg.norm(c[exact_ids[:, :1]] - c[exact_ids], axis=2)
    near = gap <= border_margin(0.95, 1.0) * dist
    found = (exact_ids[:, :, None] == ids[:, None, :]).any(axis=2)
    assert near[:, 1:].sum() > len(x) // 4
    assert found[near].mean() >= 0.998


def test_doubtful_rows_are_searched_exactly(data, monkeypatch):
    x, c = data
    search = CentroidSearch(c, 16, doubt=2.0)  # every row in doubt
    sims, ids = search.search(x[:3000])
    assert search.exact_rows == 3000
    exact_sims, exact_ids = _exact(x[:3000], c, 16, monkeypatch)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_array_equal(sims, exact_sims)


def test_centroids_without_structure_are_searched_exactly(monkeypatch):
    rng = np.random.default_rng(0)
    c = rng.standard_normal((600, 768)).astype(np.float32)  # no groups: random directions
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[:500] + 0.05 * rng.standard_normal((500, 768)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    search = CentroidSearch(c, 16)
    assert search.level is None
    np.testing.assert_array_equal(search.search(x)[1], _exact(x, c, 16, monkeypatch)[1])


def test_two_level_is_the_same_whatever_the_chunking(data):
    x, c = data
    search = CentroidSearch(c, 16)
    whole = search.search(x[:20000])
    part = [search.search(x[lo : lo + 3000]) for lo in range(0, 20000, 3000)]
    np.testing.assert_array_equal(whole[1], np.concatenate([p[1] for p in part]))


def test_coarse_level_groups_every_centroid_once(data):
    _, c = data
    coarse, order, starts = coarse_level(c)
    assert sorted(order.tolist()) == list(range(len(c)))
    assert starts[0] == 0 and starts[-1] == len(c) and np.all(np.diff(starts) > 0)
    assert len(coarse) == len(starts) - 1 <= round(np.sqrt(len(c)))
    search = CentroidSearch(c, 16)  # its search groups are finer: SEARCH_GROUPS * sqrt(k)
    assert search.level is not None
    finer = round(centroid_search.SEARCH_GROUPS * np.sqrt(len(c)))
    assert len(coarse) < len(search.level[0]) <= finer
    assert sorted(search.level[1].tolist()) == list(range(len(c)))
