"""The int8 assignment (pixsieve.dedup.nearest8) gives the float32 search's memberships."""

from __future__ import annotations

import numpy as np
import pytest

from pixsieve.dedup.border import border_margin
from pixsieve.dedup.centroid_search import CentroidSearch
from pixsieve.dedup.nearest8 import Int8Assign, Members


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _data(k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows around ``k`` centroids (cosine ~0.8), many near two of them."""
    rng = np.random.default_rng(seed)
    c = _unit(rng.standard_normal((k, 64)))
    own = rng.integers(0, k, n)
    mix = rng.uniform(0, 1, n)[:, None] * (rng.uniform(size=(n, 1)) < 0.3)
    centre = _unit((1 - mix) * c[own] + mix * c[rng.integers(0, k, n)])
    x = _unit(centre + 0.09 * rng.standard_normal((n, 64)))
    return x, c


def _pairs(m: Members) -> set[tuple[int, int]]:
    return set(zip(m.rows.tolist(), m.other.tolist(), strict=True))


@pytest.mark.parametrize(("k", "m", "gram"), [(12, 16, True), (64, 16, True), (64, 8, False)])
def test_same_memberships_as_the_float32_search(k: int, m: int, gram: bool) -> None:
    x, c = _data(k, 3000)
    half = border_margin(0.9, 1.0)
    g = c @ c.T if gram else None
    sims, ids = CentroidSearch(c, m).search(x)
    want = Members.of_search(sims, ids, c, g, half)
    got = Int8Assign(c, m, half, g)(x)
    np.testing.assert_array_equal(got.own, want.own)
    np.testing.assert_allclose(got.own_sim, want.own_sim, atol=1e-5)
    assert len(want.rows) > 200  # the border rule took many
    assert _pairs(got) == _pairs(want)
    order = np.lexsort((want.other, want.rows))
    np.testing.assert_allclose(got.other_sim, want.other_sim[order], atol=1e-5)


def test_own_cluster_is_exact_where_int8_products_tie() -> None:
    """Rows half-way between two centroids: the int8 products cannot tell them apart, the
    exact cosines decide (ties to the lower id)."""
    rng = np.random.default_rng(1)
    c = _unit(rng.standard_normal((40, 64)))
    w = rng.uniform(0.49, 0.51, (500, 1))
    x = _unit(w * c[3] + (1 - w) * c[7] + 1e-4 * rng.standard_normal((500, 64)))
    _, ids = CentroidSearch(c, 1).search(x)
    got = Int8Assign(c, 1, 0.0, None)(x)
    np.testing.assert_array_equal(got.own, ids[:, 0])
    assert set(got.own.tolist()) == {3, 7}
    assert len(got.rows) == 0


def test_blocks_and_empty_input() -> None:
    x, c = _data(20, 5000, seed=2)
    search = Int8Assign(c, 4, border_margin(0.95, 1.0), None)
    whole = search(x)
    parts = [search(x[lo : lo + 777]) for lo in range(0, len(x), 777)]
    np.testing.assert_array_equal(whole.own, np.concatenate([p.own for p in parts]))
    assert len(whole.rows) == sum(len(p.rows) for p in parts)
    empty = search(x[:0])
    assert len(empty.own) == len(empty.rows) == 0
