"""Semantic dedup benchmark on planted duplicates (run by hand, not by CI).

    python benchmarks/dedup_bench.py --sizes 100000 300000 1000000

Each size runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. Per size:

1. generate N x 768 unit float32 vectors around N/500 topics, 10% of them in planted groups of
   2-4 (copies at cosine 0.96-0.995 to an anchor; 20% of groups straddle two topics so that
   members land in different k-means clusters);
2. run :func:`pixsieve.dedup.find_duplicates` with default settings (``return_pairs=True`` to
   score pairs);
3. measure recall three ways:
   - *planted*: share of planted pairs with exact cosine >= threshold that were reported;
   - *exact queries*: Q query items (half drawn from planted groups, half uniformly), each
     searched by brute force against all N items (float32 products, float64 recheck near the
     threshold); share of those true pairs that were reported. This also catches pairs nobody
     planted;
   - *grouped*: share of planted pairs whose items ended in the same duplicate group;
4. precision: every reported pair is rescored in float64 and must be >= threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _rss_gb() -> float:
    """Peak resident set size of this process so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0) so the next peak is dedup's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_gb() -> float:
    """Peak RSS since the last reset (``VmHWM``), falling back to ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return _rss_gb()


def run_one(
    n: int, dim: int, threshold: float, queries: int, seed: int, hard: bool, mode: str | None
) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # dedup_tools
    from dedup_tools.evaluate import (
        exact_neighbors,
        grouped_recall,
        pair_precision,
        pair_recall,
    )
    from dedup_tools.synthetic import planted_embeddings

    from pixsieve.dedup import SemanticDedupConfig, find_duplicates

    start = time.perf_counter()
    planted = planted_embeddings(n, dim, n_topics=max(2, n // 500), seed=seed)
    x = planted.embeddings
    gen_s = time.perf_counter() - start
    rss_generate = _rss_gb()
    reset = _reset_peak()

    config = SemanticDedupConfig(threshold=threshold, return_pairs=True, seed=seed)
    if mode:
        config = SemanticDedupConfig(**{**config.to_dict(), "mode": mode})
    start, cpu_start = time.perf_counter(), time.process_time()
    result = find_duplicates(x, config)
    dedup_s = time.perf_counter() - start
    dedup_cpu_s = time.process_time() - cpu_start
    rss_dedup = _hwm_gb() if reset else _rss_gb()

    truth = planted.planted_pairs(threshold)
    rng = np.random.default_rng(seed + 1)
    in_group = np.flatnonzero(planted.group >= 0)
    q = np.unique(
        np.concatenate(
            [
                rng.choice(in_group, size=min(queries // 2, len(in_group)), replace=False),
                rng.choice(n, size=queries // 2, replace=False),
            ]
        )
    )
    start = time.perf_counter()
    exact = exact_neighbors(x, q, threshold)
    exact_s = time.perf_counter() - start
    planted_keys = truth[:, 0] * n + truth[:, 1]
    unplanted = int((~np.isin(exact[:, 0] * n + exact[:, 1], planted_keys)).sum())
    split = result.cluster[truth[:, 0]] != result.cluster[truth[:, 1]]
    row = {
        "n": n,
        "dim": dim,
        "threshold": threshold,
        "mode": config.mode,
        "generate_s": round(gen_s, 1),
        "dedup_s": round(dedup_s, 1),
        "dedup_cpu_s": round(dedup_cpu_s, 1),
        "phases_s": {k: round(v, 1) for k, v in result.timings.items()},
        "peak_rss_generate_gb": round(rss_generate, 2),
        "peak_rss_dedup_gb": round(rss_dedup, 2),
        "peak_rss_dedup_is_own": reset,
        "embeddings_gb": round(x.nbytes / 1024**3, 2),
        "counts": result.counts,
        "planted_pairs": len(truth),
        "planted_pairs_split_across_clusters": round(float(split.mean()), 4),
        "recall_planted": round(pair_recall(result.pairs, truth, n), 6),
        "recall_planted_split": round(pair_recall(result.pairs, truth[split], n), 6),
        "recall_grouped": round(grouped_recall(result.component_id, truth), 6),
        "exact_queries": len(q),
        "exact_query_pairs": len(exact),
        "exact_query_pairs_not_planted": unplanted,
        "recall_exact_queries": round(pair_recall(result.pairs, exact, n), 6),
        "exact_queries_s": round(exact_s, 1),
        "precision": pair_precision(x, result.pairs, threshold),
        "cpus": os.cpu_count(),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
    if hard:  # the same search without border handling, for comparison
        hard_cfg = SemanticDedupConfig(
            threshold=threshold, return_pairs=True, seed=seed, border_candidates=1
        )
        start = time.perf_counter()
        hard_result = find_duplicates(x, hard_cfg)
        row["hard_assignment_s"] = round(time.perf_counter() - start, 1)
        row["hard_assignment_recall_planted"] = round(pair_recall(hard_result.pairs, truth, n), 6)
    return row


def _table(rows: list[dict]) -> str:
    head = (
        "| N | dedup s | kmeans | assign | similarity | components | peak RSS GiB (embeddings) "
        "| border memb. | recall planted (split) | recall exact queries | precision "
        "| recall w/o border handling |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r["phases_s"]
        lines.append(
            f"| {r['n']:,} | {r['dedup_s']} | {p.get('kmeans')} | {p.get('assign')} "
            f"| {p.get('similarity')} | {p.get('components')} "
            f"| {r['peak_rss_dedup_gb']} ({r['embeddings_gb']}) "
            f"| {r['counts']['border_memberships']:,} "
            f"| {r['recall_planted']:.4%} ({r['recall_planted_split']:.2%}) "
            f"| {r['recall_exact_queries']:.4%} of {r['exact_query_pairs']:,} "
            f"| {r['precision']:.0%} "
            f"| {r.get('hard_assignment_recall_planted', float('nan')):.2%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--mode", default=None, help="dedup mode (default: the library's)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument(
        "--hard", action="store_true", help="also run without border handling (border_candidates=1)"
    )
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single is not None:
        row = run_one(
            args.single, args.dim, args.threshold, args.queries, args.seed, args.hard, args.mode
        )
        print(json.dumps(row))
        return
    rows = []
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--single",
            str(n),
            "--dim",
            str(args.dim),
            "--threshold",
            str(args.threshold),
            "--queries",
            str(args.queries),
            "--seed",
            str(args.seed),
            *(["--hard"] if args.hard else []),
            *(["--mode", args.mode] if args.mode else []),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
