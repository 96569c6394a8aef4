"""int8 rows for the cross search: the error bound holds, the products are exact."""

from __future__ import annotations

import numpy as np
import pytest

from pixsieve.dedup.quant import QMAX, int8_dot, pair_bound, quantize


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("outliers", [0.0, 8.0])
def test_the_error_bound_holds_for_every_pair(outliers):
    """``|x.y - s_x s_y (q_x . q_y)| <= pair_bound(r_x, r_y)`` for every pair, with and
    without a few large coordinates (which coarsen the scale)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 768))
    x[:, :3] *= 1 + outliers
    x = _unit(x)
    x[100:200] = _unit(x[:100] + 0.1 * rng.standard_normal((100, 768)))  # near pairs too
    q, meta = quantize(x)
    assert q.dtype == np.int8 and np.abs(q).max() == QMAX and meta.dtype == np.float32
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
