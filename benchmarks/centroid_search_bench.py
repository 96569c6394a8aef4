"""Per-item cost and recall of the centroid search (exact against two-level), single-threaded.

For each ``k``: ``32 k`` planted 768-d items with one topic per 500 items, ``k`` centroids from
:func:`pixsieve.dedup.centroids.train_centroids` on them, then the 16 nearest centroids of the
first ``--rows`` items by the exact search and by the two-level one. Recall: the exact nearest
centroid, and the neighbours the border rule can use (``s(own) - s(c) <= margin * |c_own - c|``
at threshold 0.95), found by the two-level search.

    python benchmarks/centroid_search_bench.py --k 1000 3000 5000 10000 --rows 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dedup_tools.synthetic import planted_embeddings

from pixsieve.dedup import centroid_search
from pixsieve.dedup.border import border_margin
from pixsieve.dedup.centroid_search import CentroidSearch
from pixsieve.dedup.centroids import train_centroids


def data(k: int, rows: int, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """``(items to search, centroids)`` for ``k`` (kept under ``cache`` when given)."""
    if cache and (cache / f"c{k}.npy").exists():
        return np.load(cache / f"q{k}.npy")[:rows], np.load(cache / f"c{k}.npy")
    n = 32 * k
    x = planted_embeddings(n, 768, n_topics=n // 500, seed=k).embeddings
    c = train_centroids(x, k, iters=10, points_per_centroid=32, seed=0)
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"q{k}.npy", x[:40000])
        np.save(cache / f"c{k}.npy", c)
    return x[:rows], c


def timed(search: CentroidSearch, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """CPU microseconds per item, sims, ids (in 65,536-row calls, as the callers make)."""
    start = time.process_time()
    found = [search.search(x[lo : lo + 65536]) for lo in range(0, len(x), 65536)]
    us = (time.process_time() - start) / len(x) * 1e6
    return us, np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def main() -> None:
    """Print one JSON line per ``k``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1000, 3000, 5000, 10000])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--cache", type=Path, default=None, help="keep the data and centroids")
    args = parser.parse_args()
    with threadpool_limits(1):
        for k in args.k:
            x, c = data(k, args.rows, args.cache)
            centroid_search.FLAT_MAX_CENTROIDS = 10**9
            exact_us, es, ei = timed(CentroidSearch(c, 16), x)
            centroid_search.FLAT_MAX_CENTROIDS = 0
            search = CentroidSearch(c, 16)
            two_us, _, ids = timed(search, x)
            gap = es[:, :1] - es
            dist = np.linalg.norm(c[ei[:, :1]] - c[ei], axis=2)
            usable = (gap <= border_margin(0.95, 1.0) * dist)[:, 1:]
            found = (ei[:, :, None] == ids[:, None, :]).any(axis=2)[:, 1:]
            report = {
                "k": k,
                "rows": len(x),
                "exact_us_per_item": round(exact_us, 1),
                "two_level_us_per_item": round(two_us, 1),
                "nearest_recall": round(float((ids[:, 0] == ei[:, 0]).mean()), 5),
                "border_neighbour_recall": round(float(found[usable].mean()), 5),
                "border_neighbours_per_item": round(float(usable.sum() / len(x)), 2),
                "rows_searched_exactly": round(search.exact_rows / len(x), 4),
            }
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
