"""int8 rows for the cross search: the error bound holds, the products are exact."""

from __future__ import annotations

import numpy as np
import pytest

from pixsieve.dedup import pairs
from pixsieve.dedup.quant import QMAX, int8_dot, near_pairs, pair_bound, quantize


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("common", [False, True])
@pytest.mark.parametrize("outliers", [0.0, 8.0])
def test_the_error_bound_holds_for_every_pair(outliers, common):
    """``|x.y - s_x s_y (q_x . q_y)| <= pair_bound(r_x, r_y)`` for every pair, with and
    without a few large coordinates (which coarsen the scale), with a scale per row and one
    for all rows (the largest ``|x_i|`` / 127, over more rows than one chunk)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 768))
    x[:, :3] *= 1 + outliers
    x = _unit(x)
    x[100:200] = _unit(x[:100] + 0.1 * rng.standard_normal((100, 768)))  # near pairs too
    q, meta = quantize(x, common=common)
    assert q.dtype == np.int8 and np.abs(q).max() == QMAX and meta.dtype == np.float32
    if common:
        assert (meta[:, 0] == np.float32(np.abs(x).max()) / np.float32(QMAX)).all()
    recon = meta[:, :1].astype(np.float64) * q
    assert (np.linalg.norm(x - recon, axis=1) <= meta[:, 1]).all()
    exact = x.astype(np.float64) @ x.T.astype(np.float64)
    approx = int8_dot(q, q) * meta[:, 0][:, None] * meta[:, 0][None, :]
    assert (np.abs(exact - approx) <= pair_bound(meta[:, 1][:, None], meta[:, 1][None, :])).all()


def test_zero_rows_and_empty_inputs():
    q, meta = quantize(np.zeros((2, 8), np.float32))
    assert not q.any() and not meta[:, 0].any() and (meta[:, 1] <= 1e-6).all()
    q, meta = quantize(np.zeros((0, 8), np.float32))
    assert q.shape == (0, 8) and meta.shape == (0, 2)
    assert int8_dot(q, np.ones((3, 8), np.int8)).shape == (0, 3)


def test_int8_products_are_exact_with_and_without_the_int8_kernel(monkeypatch):
    """At the extremes (768 * 127**2) too; without ``torch._int_mm`` the float32 fallback gives
    the same integers."""
    rng = np.random.default_rng(1)
    a = rng.integers(-QMAX, QMAX + 1, (37, 768)).astype(np.int8)
    b = rng.integers(-QMAX, QMAX + 1, (11, 768)).astype(np.int8)
    a[0], b[0] = QMAX, QMAX
    want = a.astype(np.int64) @ b.T.astype(np.int64)
    got = int8_dot(a, b)
    assert got.dtype == np.int32 and (got == want).all() and got[0, 0] == 768 * QMAX**2
    import torch

    def refuse(*args):
        raise RuntimeError("no int8 kernel")

    monkeypatch.setattr(torch, "_int_mm", refuse)
    assert (int8_dot(a, b) == want).all()


@pytest.mark.parametrize("common", [False, True])
@pytest.mark.parametrize("t", [0.95, 0.5, 0.0])
def test_near_pairs_keeps_every_pair_that_may_reach_the_threshold(common, t):
    """Every pair whose exact cosine reaches ``t`` is among ``near_pairs``; with one scale for
    all rows (``common``) the screen also drops most of the others."""
    rng = np.random.default_rng(2)
    x = _unit(rng.standard_normal((400, 768)) + 3 * rng.standard_normal(768))
    x[200:] = _unit(x[:200] + rng.uniform(0.05, 0.4, (200, 1)) * rng.standard_normal((200, 768)))
    q, meta = quantize(x, common=common)
    if common:
        assert (meta[:, 0] == meta[0, 0]).all()
    exact = x.astype(np.float64) @ x.T.astype(np.float64)
    i, j = near_pairs(int8_dot(q, q), meta, meta, t)
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    want = set(zip(*(a.tolist() for a in np.nonzero(exact >= t)), strict=True))
    assert want <= got
    if t == 0.95:
        assert len(got) < 2 * len(want)


@pytest.mark.parametrize("dense", [None, 0.0, 1.0])
def test_int8_pairs_are_the_exact_pairs_in_sparse_and_dense_blocks(dense, monkeypatch):
    """The pairs at or above the threshold, exactly (against float64), whether blocks are
    decided in int8 or, dense near the threshold, in float32 (``dense``: every block one or the
    other)."""
    if dense is not None:
        monkeypatch.setattr(pairs, "DENSE_BLOCK", dense)
    rng = np.random.default_rng(3)
    x = _unit(rng.standard_normal((600, 768)))
    x[300:340] = _unit(x[0] + 0.04 * rng.standard_normal((40, 768)))  # a tight group
    noise = rng.uniform(0.2, 0.3, (100, 1)) * rng.standard_normal((100, 768))
    x[400:500] = _unit(x[100:200] + noise)
    exact = x.astype(np.float64) @ x.T.astype(np.float64)
    for t in (0.95, 0.96, 0.97):
        i, j, sims, compared = pairs.int8_pairs(x, 500, t, block=128)
        want = {(a, b) for a, b in zip(*np.nonzero(exact >= t), strict=True) if a < b and a < 500}
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == want
        assert (sims >= np.float32(t)).all()
        np.testing.assert_allclose(sims, exact[i, j], atol=1e-6)
    blocks = [(r, c) for r in range(0, 500, 128) for c in range(r, 600, 128)]
    assert compared == sum((min(r + 128, 500) - r) * (min(c + 128, 600) - c) for r, c in blocks)


def test_small_clusters_are_multiplied_in_float32_only(monkeypatch):
    """Below ``SMALL_CLUSTER`` products the cluster is not quantized (it would cost more than
    it saves) and gives the same pairs."""
    rng = np.random.default_rng(4)
    x = _unit(rng.standard_normal((100, 768)))
    x[50:60] = _unit(x[:10] + 0.1 * rng.standard_normal((10, 768)) / np.sqrt(768))
    want = pairs.int8_pairs(x, 100, 0.95, 4096)

    def refuse(*args, **kwargs):
        raise AssertionError("a small cluster was quantized")

    monkeypatch.setattr(pairs, "quantize", refuse)
    got = pairs.int8_pairs(x, 100, 0.95, 4096)
    assert len(got[0]) == 10
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
