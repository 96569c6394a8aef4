"""``pixsieve dedup NEW --against OLD`` against deduplicating OLD+NEW from scratch (run by hand).

    python benchmarks/dedup_against_bench.py --n 1000000 --new 100000 --memory-limit 3GiB
    # again, against the OLD output already there (no OLD run), without the scratch run:
    python benchmarks/dedup_against_bench.py --n 1000000 --new 100000 --reuse-old --skip-scratch \
        --fresh other --recluster on --out-suffix=-re

1. OLD: the planted set of ``dedup_files_bench.py`` (``--n`` items in ``--files`` files).
   NEW: ``--new`` items, ``--copies`` of them near-copies of random OLD items (cosine about
   0.97-0.995: the planted cross-batch pairs), the rest (``--fresh``) either distinct items
   of OLD's distribution (cosine ~0.8 to an OLD item; 5% of them in duplicate pairs) or a
   planted set of other topics (far from every OLD cluster), in ``--new-files`` files.
2. Runs ``pixsieve dedup OLD -o OUT_OLD`` (writes the index), then
   ``pixsieve dedup NEW -o OUT_NEW --against OUT_OLD``, then ``pixsieve dedup OLD NEW`` from
   scratch; each as a child process with the peak RSS of its process tree sampled every 0.1 s.
3. Recall of the planted cross-batch pairs whose OLD item the OLD run kept: the share whose
   copy was removed (by the incremental run; by the from-scratch run: copy or original removed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # dedup_tools
from dedup_files_bench import _tree_rss, generate


def run_dedup(inputs: list[Path], out: Path, args: argparse.Namespace, extra=()) -> dict:
    """One fresh ``pixsieve dedup`` child: wall and CPU seconds, peak RSS of its tree."""
    cmd = [sys.executable, "-m", "pixsieve", "dedup", *map(str, inputs), "-o", str(out)]
    cmd += ["--memory-limit", args.memory_limit, "--workers", str(args.workers)]
    cmd += ["--mode", args.mode, "--score-column", "aesthetic", "--threshold", str(args.threshold)]
    cmd += [*extra, "--no-progress"]
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"dedup failed with exit code {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    summary = json.loads((out / "dedup.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_tree_gib": round(peak / 2**30, 2),
        "phases_s": summary["timings"],
        "phases_cpu_s": summary.get("cpu_seconds"),
        "removed": summary["counts"].get("removed"),
        "removed_as_earlier": summary["counts"].get("removed_as_earlier"),
        "beyond_radius_share": summary["counts"].get("beyond_radius_share"),
        "memberships_per_item": round(
            1 + summary["counts"].get("border_memberships", 0) / max(summary["counts"]["n"], 1), 2
        ),
        "similarities": summary["counts"].get("similarities_computed"),
        "earlier_similarities": summary["counts"].get("earlier_similarities"),
        "recluster_extra": summary["counts"].get("recluster_extra"),
        "load_avg_1m_before": round(load, 1),
    }


def generate_new(folder: Path, old: Path, args: argparse.Namespace) -> None:
    """NEW: copies of OLD items and a fresh planted set; ids continue after OLD's."""
    from dedup_tools.synthetic import planted_embeddings

    from pixsieve.dedup.packing import fixed_list

    if (folder / "done").exists():
        return
    (folder / "parquet").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed + 11)
    x_old = np.load(old / "x.npy", mmap_mode="r")
    src = np.sort(rng.choice(len(x_old), args.copies, replace=False))
    noise = rng.uniform(0.1, 0.25, (args.copies, 1)) / np.sqrt(args.dim)
    copies = np.asarray(x_old[src]) + noise * rng.standard_normal((args.copies, args.dim))
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    m = args.new - args.copies
    if args.fresh == "other":  # other topics: far from every OLD centroid
        fresh = planted_embeddings(m, args.dim, n_topics=max(2, m // 500), seed=args.seed + 13)
        fresh = fresh.embeddings
    else:  # OLD's distribution: distinct items (cosine ~0.8) near random OLD items
        near = np.sort(rng.choice(len(x_old), m, replace=False))
        fresh = np.asarray(x_old[near]) + 0.75 / np.sqrt(args.dim) * rng.standard_normal(
            (m, args.dim)
        )
        fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
        twins = rng.choice(m, m // 20, replace=False)  # duplicates within NEW
        fresh[twins[1::2]] = fresh[twins[::2]] + 0.1 / np.sqrt(args.dim) * rng.standard_normal(
            (len(twins[1::2]), args.dim)
        )
        fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    x = np.concatenate([copies.astype(np.float32), fresh])
    order = rng.permutation(len(x))
    x = x[order]
    source = np.full(len(x), -1, dtype=np.int64)
    source[np.argsort(order)[: args.copies]] = src  # position of each copy -> its OLD item
    np.save(folder / "x.npy", x)
    np.save(folder / "source.npy", source)
    bounds = np.linspace(0, len(x), args.new_files + 1).astype(np.int64)
    for f in range(args.new_files):
        lo, hi = int(bounds[f]), int(bounds[f + 1])
        table = pa.table(
            {
                "id": pa.array(len(x_old) + np.arange(lo, hi), pa.int64()),
                "embedding": fixed_list(x[lo:hi]),
                "aesthetic": rng.uniform(0, 10, hi - lo).astype(np.float32),
            }
        )
        pq.write_table(table, folder / "parquet" / f"part-{f:05d}.parquet", compression="none")
    (folder / "done").write_text("")


def cross_recall(old: Path, new: Path, n_old: int, outs: list[Path], threshold: float) -> dict:
    """Recall of planted cross-batch pairs (exact cosine >= threshold, OLD item kept by OLD)."""
    x_old = np.load(old / "x.npy", mmap_mode="r")
    x_new = np.load(new / "x.npy")
    source = np.load(new / "source.npy")
    pos = np.flatnonzero(source >= 0)
    cos = np.einsum("ij,ij->i", x_new[pos].astype(np.float64), x_old[source[pos]])
    pos = pos[cos >= threshold]
    removed = set()
    for out in outs:
        removed |= set(pq.read_table(out / "duplicates.parquet").column("id").to_pylist())
    old_removed = np.array([source[p] in removed for p in pos])
    caught = np.array([n_old + p in removed for p in pos]) | old_removed
    return {"cross_pairs": len(pos), "cross_recall": round(float(caught.mean()), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=100_000)
    parser.add_argument("--copies", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--new-files", type=int, default=4)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--memory-limit", default="3GiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", default="witness")
    parser.add_argument("--data", default="/tmp/pixsieve-dedup-bench")
    parser.add_argument(
        "--fresh",
        choices=["same", "other"],
        default="same",
        help="NEW's non-copies: OLD's distribution, or other topics (beyond OLD's clusters)",
    )
    parser.add_argument(
        "--reuse-old",
        action="store_true",
        help="keep an existing OLD output (its index) instead of running OLD again",
    )
    parser.add_argument(
        "--recluster", choices=["off", "on", "auto"], default="off", help="for the NEW run"
    )
    parser.add_argument("--old-out", help="where the OLD output is (default DATA/against-old)")
    parser.add_argument("--out-suffix", default="", help="appended to the NEW and scratch outputs")
    parser.add_argument("--skip-scratch", action="store_true", help="no from-scratch run")
    parser.add_argument(
        "--scratch-no-index",
        action="store_true",
        help="the from-scratch run writes no index (less disk; a smaller, stricter denominator)",
    )
    args = parser.parse_args()
    data = Path(args.data)
    old = data / f"n{args.n}-f{args.files}-d{args.dim}-s{args.seed}"
    new = data / f"new{args.new}-c{args.copies}-{args.fresh}-of-n{args.n}-s{args.seed}"
    generate(old, args.n, args.files, args.dim, args.seed)
    generate_new(new, old, args)
    out_old = Path(args.old_out) if args.old_out else data / "against-old"
    out_new, out_all = (data / f"against-{name}{args.out_suffix}" for name in ("new", "all"))
    rows = {}
    if not (args.reuse_old and (out_old / "index" / "index.json").exists()):
        rows["old"] = run_dedup([old / "parquet"], out_old, args)
    extra = ["--against", str(out_old), "--recluster", args.recluster]
    rows["against"] = run_dedup([new / "parquet"], out_new, args, extra)
    rows["against"].update(cross_recall(old, new, args.n, [out_old, out_new], args.threshold))
    if not args.skip_scratch:
        flags = ["--no-index"] if args.scratch_no_index else []
        rows["scratch"] = run_dedup([old / "parquet", new / "parquet"], out_all, args, flags)
        rows["scratch"].update(cross_recall(old, new, args.n, [out_all], args.threshold))
    for name, row in rows.items():
        print(json.dumps({"run": name, "n": args.n, "new": args.new, **row}))
    if "scratch" in rows:
        ratio = rows["against"]["cpu_s"] / max(rows["scratch"]["cpu_s"], 1e-9)
        wall = rows["against"]["wall_s"] / max(rows["scratch"]["wall_s"], 1e-9)
        print(json.dumps({"against_over_scratch_cpu": round(ratio, 3), "wall": round(wall, 3)}))
    print(json.dumps({"cpus": os.cpu_count(), "memory_limit": args.memory_limit}))


if __name__ == "__main__":
    main()
