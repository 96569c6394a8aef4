"""The pieces of matching new rows with earlier rows: windows found for all parts at once equal
a per-part filter, and the angular window never drops a pair at or above the threshold."""

from __future__ import annotations

import math

import numpy as np

from pixsieve.dedup.crossmatch import Keys, window_bounds


def _part(rng: np.random.Generator, clusters: int, rows: int):
    cluster = np.sort(rng.integers(0, clusters, rows))
    secondary = rng.random(rows) < 0.4
    sim = rng.uniform(-1, 1, rows).astype(np.float32)
    order = np.lexsort((sim, secondary, cluster))  # the index parts' order
    return cluster[order].astype(np.int32), secondary[order], sim[order]


def test_windows_of_all_parts_equal_a_filter_per_part():
    rng = np.random.default_rng(0)
    parts = [_part(rng, 20, n) for n in (0, 50, 300, 1000)]
    keys = Keys(parts, 20)
    for _ in range(200):
        c, low = int(rng.integers(0, 20)), float(rng.uniform(-1.001, 1.0))
        high = float(rng.uniform(low, 1.001))
        which = np.array([0, 1, 2, 3, 1, 2, 3])
        seg = 2 * c + np.array([0, 0, 0, 0, 1, 1, 1])
        got = keys.windows(which, seg, low, high)
        want = []
        for f, s in zip(which, seg, strict=True):
            cluster, secondary, sim = parts[f]
            hit = np.flatnonzero((2 * cluster + secondary == s) & (sim >= low) & (sim <= high))
            if len(hit):
                assert (np.diff(hit) == 1).all()  # one contiguous slice
                want.append((int(f), int(hit[0]), int(hit[-1]) + 1))
        assert got == want


def test_the_angular_window_holds_every_pair_at_the_threshold():
    rng = np.random.default_rng(1)
    t = 0.95
    c = np.zeros(16)
    c[0] = 1.0
    for _ in range(2000):
        x = rng.standard_normal(16) * rng.uniform(0.01, 2) + c * rng.uniform(-2, 4)
        x /= np.linalg.norm(x)
        u = rng.standard_normal(16)
        u -= (u @ x) * x
        u /= np.linalg.norm(u)
        cos = rng.uniform(t, 1.0)
        y = cos * x + math.sqrt(1 - cos**2) * u  # cos(x, y) >= t
        low, high = window_bounds(y @ c, y @ c, math.acos(t))
        assert low <= x @ c <= high
