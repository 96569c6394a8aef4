"""Building blocks: config, normalisation, union-find, border membership, per-cluster search."""

from __future__ import annotations

import numpy as np
import pytest

from pixsieve.dedup import EmbeddingError, SemanticDedupConfig, auto_n_clusters, cluster_edges
from pixsieve.dedup.border import build_membership
from pixsieve.dedup.components import connected_components, number_components
from pixsieve.dedup.kmeans import normalize


def test_config_defaults_and_eps():
    config = SemanticDedupConfig()
    assert config.threshold == 0.95 and config.eps == pytest.approx(0.05)
    assert SemanticDedupConfig.from_eps(0.01).threshold == pytest.approx(0.99)
    assert config.clusters_for(1_000_000) == 1000
    assert config.clusters_for(10) == 1
    assert SemanticDedupConfig(n_clusters=50).clusters_for(20) == 20
    assert auto_n_clusters(0) == 1 and auto_n_clusters(4000) == 4
    assert auto_n_clusters(10_000_000) == 10_000  # clusters stay ~1,000 items as N grows


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1.5},
        {"keep": "best"},
        {"mode": "fast"},
        {"n_clusters": 0},
        {"border_candidates": 0},
        {"block_size": 1},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        SemanticDedupConfig(**kwargs)


def test_normalize_reuses_unit_float32_and_copies_otherwise():
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert normalize(unit) is unit
    out = normalize(x.astype(np.float64) * 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [(np.zeros(4), "2-D"), (np.array([[1.0, np.nan]]), "NaN"), (np.zeros((2, 3)), "all zeros")],
)
def test_normalize_rejects_bad_rows(bad, message):
    with pytest.raises(EmbeddingError, match=message):
        normalize(bad)


def test_union_find_matches_python_reference(brute):
    rng = np.random.default_rng(3)
    n = 500
    a, b = rng.integers(0, n, 400), rng.integers(0, n, 400)
    labels = connected_components(n, a, b)
    expected = brute.components(n, set(zip(a.tolist(), b.tolist(), strict=True)))
    np.testing.assert_array_equal(labels, expected)
    comp, size = number_components(labels)
    assert comp.max() + 1 == (np.bincount(labels) >= 2).sum()
    first = [int(np.flatnonzero(comp == c).min()) for c in range(comp.max() + 1)]
    assert first == sorted(first)  # ordered by smallest member
    np.testing.assert_array_equal(size, np.bincount(labels, minlength=n)[labels])


def test_long_path_converges():
    n = 10_000
    labels = connected_components(n, np.arange(n - 1)[::-1], np.arange(1, n)[::-1])
    assert (labels == 0).all()


def test_cluster_edges_skips_secondary_pairs_and_reports_global_ids():
    e = np.eye(8, dtype=np.float32)
    near = (e[0] * 0.99 + e[1] * np.sqrt(1 - 0.99**2)).astype(np.float32)
    vectors = np.stack([e[0], e[2], near, near])  # primaries: 0, 1; secondaries: 2, 3
    members = np.array([100, 101, 102, 103])
    config = SemanticDedupConfig(threshold=0.95, return_pairs=True)
    out = cluster_edges(members, 2, vectors, config)
    # 100~102 and 100~103 are primary x secondary; 102~103 is secondary x secondary: skipped
    assert sorted(map(tuple, out.pairs.tolist())) == [(100, 102), (100, 103)]
    assert out.n_pairs == 2
    labels = connected_components(200, out.a, out.b)
    assert labels[100] == labels[102] == labels[103] and labels[101] != labels[100]


def test_threshold_decision_is_exact_at_the_boundary():
    rng = np.random.default_rng(7)
    v = rng.standard_normal((2, 768)).astype(np.float32)
    v[1] = v[0] + 0.2 * v[1]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cos = float(v[0].astype(np.float64) @ v[1].astype(np.float64))
    at = SemanticDedupConfig(threshold=cos, return_pairs=True)
    above = SemanticDedupConfig(threshold=float(np.nextafter(cos, 2.0)), return_pairs=True)
    assert cluster_edges(np.arange(2), 2, v, at).n_pairs == 1
    assert cluster_edges(np.arange(2), 2, v, above).n_pairs == 0


def test_border_membership_rule():
    # two unit centroids 90 degrees apart; a point on the bisector joins both clusters
    cent = np.eye(4, dtype=np.float32)[:2]
    sims = np.array([[0.70, 0.70], [0.99, 0.10]], dtype=np.float32)
    ids = np.array([[0, 1], [0, 1]])
    m = build_membership(sims, ids, cent, threshold=0.95, slack=1.0)
    members0, p0 = m.members(0)
    members1, p1 = m.members(1)
    assert (members0.tolist(), p0) == ([0, 1], 2)
    assert (members1.tolist(), p1) == ([0], 0)
    assert m.n_secondary == 1
    none = build_membership(sims, ids, cent, threshold=0.95, slack=0.0)
    assert none.n_secondary == 0


def test_empty_and_tiny_inputs():
    from pixsieve.dedup import find_duplicates

    empty = find_duplicates(np.zeros((0, 8), dtype=np.float32))
    assert len(empty) == 0 and empty.n_removed == 0
    one = find_duplicates(np.ones((1, 8), dtype=np.float32))
    assert one.removed.tolist() == [False] and one.component_id.tolist() == [-1]
    same = find_duplicates(np.ones((5, 8), dtype=np.float32), SemanticDedupConfig(keep="first"))
    assert same.removed.tolist() == [False, True, True, True, True]
    assert same.component_size.tolist() == [5] * 5


def test_progress_reports_every_long_phase(random_planted):
    from pixsieve.dedup import find_duplicates

    seen: dict[str, tuple[int, int]] = {}

    def progress(phase: str, done: int, total: int) -> None:
        seen[phase] = (done, total)

    find_duplicates(random_planted.embeddings, progress=progress)
    assert set(seen) >= {"normalise", "kmeans", "assign", "similarity"}
    assert all(done == total for done, total in seen.values())


def test_border_membership_is_the_same_chunked_and_without_gram(monkeypatch):
    import pixsieve.dedup.border as border
    from pixsieve.dedup.centroid_search import assign

    rng = np.random.default_rng(0)
    cent = rng.standard_normal((50, 16)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims, ids = assign(x, cent, 6)
    whole = border.build_membership(sims, ids, cent, threshold=0.9, slack=1.0)
    chunked = border.build_membership(sims, ids, cent, threshold=0.9, slack=1.0, chunk_rows=700)
    monkeypatch.setattr(border, "GRAM_MAX_CLUSTERS", 10)
    monkeypatch.setattr(border, "TABLE_NEIGHBOURS", 3)  # pairs in the table and outside it
    monkeypatch.setattr(border, "_COSINES", {})
    no_gram = border.build_membership(sims, ids, cent, threshold=0.9, slack=1.0)
    assert border.centroid_cosines(cent).gram is None
    assert whole.n_secondary > 1000
    for other in (chunked, no_gram):
        np.testing.assert_array_equal(whole.order, other.order)
        np.testing.assert_array_equal(whole.offsets, other.offsets)


def test_centroid_cosines_from_the_gram_and_from_the_neighbour_table(monkeypatch):
    """Every pair's cosine, whether the Gram matrix, the nearest-centroid table or the direct
    product (pairs outside the table) gives it; the table is built once per centroid set."""
    import pixsieve.dedup.border as border

    rng = np.random.default_rng(1)
    cent = rng.standard_normal((40, 16)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    a, b = (v.ravel() for v in np.indices((40, 40)))
    want = cent.astype(np.float64) @ cent.T.astype(np.float64)
    monkeypatch.setattr(border, "_COSINES", {})
    gram = border.centroid_cosines(cent)
    monkeypatch.setattr(border, "GRAM_MAX_CLUSTERS", 10)
    monkeypatch.setattr(border, "TABLE_NEIGHBOURS", 4)
    assert border.centroid_cosines(cent) is gram  # cached per centroid set
    monkeypatch.setattr(border, "_COSINES", {})
    table = border.centroid_cosines(cent)
    assert gram.gram is not None and table.gram is None and len(table.keys) == 40 * 5
    for cosines in (gram, table):
        got = cosines(a, b)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want[a, b], atol=1e-5)
