"""Out-of-core ``pixsieve dedup`` on planted duplicates in many Parquet files (run by hand).

    python benchmarks/dedup_files_bench.py --n 1000000 --files 30 --memory-limit 3GiB
    python benchmarks/dedup_files_bench.py --n 1000000 -- --no-index   # more dedup flags

1. Generates ``N x 768`` unit float32 vectors around ``N/500`` topics, 10% of them in planted
   groups of 2-4 whose members are spread over all files (20% of groups straddle two topics),
   into ``--files`` Parquet files (id, embedding, aesthetic) under ``--data`` (kept and reused
   for the same N / files / seed; the vectors are built in a memory map, never all in RAM).
2. Runs ``python -m pixsieve dedup DATA -o OUT --memory-limit ...`` as a child process and
   samples the RSS of its whole process tree every 0.1 s (peak reported, plus the kernel's
   high-water mark ``VmHWM`` of the process, last read just before it exits).
3. Scores the output against the planted truth:
   - recall: share of planted pairs with exact cosine >= threshold of which at least one item
     was removed (a pair with both items kept is a missed duplicate);
   - precision: share of removed items whose exact cosine to their ``duplicate_of`` is >= the
     threshold (and that lie in a planted group).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # dedup_tools


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return total


def _hwm(pid: int) -> int:
    """The kernel's peak RSS of ``pid`` since its exec (``VmHWM``), in bytes; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def generate(folder: Path, n: int, files: int, dim: int, seed: int, supers: int = 0) -> None:
    """Planted vectors into ``folder/x.npy`` (memory map), truth and Parquet files."""
    from dedup_tools.synthetic import planted_embeddings

    from pixsieve.dedup.packing import fixed_list

    if (folder / "done").exists():
        return
    (folder / "parquet").mkdir(parents=True, exist_ok=True)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    topics = max(2, n // 500)
    planted = planted_embeddings(n, dim, n_topics=topics, n_super=supers, seed=seed, out=x)
    np.save(folder / "group.npy", planted.group)
    scores = np.random.default_rng(seed + 7).uniform(0, 10, n).astype(np.float32)
    bounds = np.linspace(0, n, files + 1).astype(np.int64)
    for f in range(files):
        lo, hi = int(bounds[f]), int(bounds[f + 1])
        table = pa.table(
            {
                "id": pa.array(np.arange(lo, hi), pa.int64()),
                "embedding": fixed_list(np.asarray(x[lo:hi])),
                "aesthetic": scores[lo:hi],
            }
        )
        pq.write_table(table, folder / "parquet" / f"part-{f:05d}.parquet", compression="none")
    x.flush()
    del x
    (folder / "done").write_text("")


def run_dedup(folder: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "pixsieve",
        "dedup",
        str(folder / "parquet"),
        "-o",
        str(out),
        "--memory-limit",
        args.memory_limit,
        "--workers",
        str(args.workers),
        "--mode",
        args.mode,
        "--score-column",
        "aesthetic",
        "--threshold",
        str(args.threshold),
        "--no-progress",
        *args.extra,
    ]
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = hwm = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        hwm = max(hwm, _hwm(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"dedup failed with exit code {proc.returncode}")
    summary = json.loads((out / "dedup.json").read_text())
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "phases_cpu_s": summary.get("cpu_seconds"),
        "wall_s": round(wall, 1),
        "peak_rss_tree_gib": round(peak / 2**30, 2),
        "vm_hwm_gib": round(hwm / 2**30, 2),
        "phases_s": summary["timings"],
        "counts": summary["counts"],
        "load_avg_before": [round(v, 1) for v in load_before],
        "load_avg_after": [round(v, 1) for v in os.getloadavg()],
    }


class Rows:
    """The rows ``wanted`` of the vectors in the Parquet files (ids are row numbers), indexed
    like the full array: what scoring reads when ``x.npy`` was dropped to save disk."""

    def __init__(self, parquet: Path, wanted: np.ndarray) -> None:
        self.rows = np.unique(wanted)
        self.x = np.empty((len(self.rows), 0), np.float32)
        for path in sorted(parquet.glob("*.parquet")):
            table = pq.read_table(path, columns=["id", "embedding"])
            ids = table.column("id").to_numpy()
            take = np.flatnonzero(np.isin(ids, self.rows))
            emb = table.column("embedding").combine_chunks().take(pa.array(take))
            part = np.asarray(emb.flatten().to_numpy(), np.float32).reshape(len(take), -1)
            if not self.x.shape[1]:
                self.x = np.empty((len(self.rows), part.shape[1]), np.float32)
            self.x[np.searchsorted(self.rows, ids[take])] = part

    def __len__(self) -> int:
        return int(self.rows[-1]) + 1 if len(self.rows) else 0

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        return self.x[np.searchsorted(self.rows, idx)]


def score(folder: Path, out: Path, threshold: float) -> dict:
    from dedup_tools.synthetic import group_pairs

    from pixsieve.dedup.pairs import exact_cosine

    group = np.load(folder / "group.npy")
    table = pq.read_table(out / "duplicates.parquet")
    removed = table.column("id").to_numpy()
    dup_of = table.column("duplicate_of").to_numpy()
    if (folder / "x.npy").exists():
        x = np.load(folder / "x.npy", mmap_mode="r")
    else:  # --drop-vectors: the rows scored, read back from the Parquet files
        x = Rows(folder / "parquet", np.concatenate([np.flatnonzero(group >= 0), removed, dup_of]))
    truth = group_pairs(x, group, threshold)
    is_removed = np.zeros(len(group), dtype=bool)
    is_removed[removed] = True
    caught = is_removed[truth[:, 0]] | is_removed[truth[:, 1]]
    cos = exact_cosine(x, removed, x, dup_of)
    return {
        "planted_pairs": len(truth),
        "recall": round(float(caught.mean()), 6) if len(truth) else 1.0,
        "removed": len(removed),
        "precision": round(float((cos >= threshold).mean()), 6) if len(removed) else 1.0,
        "removed_outside_planted_groups": int((group[removed] < 0).sum()),
        "min_similarity": round(float(cos.min()), 4) if len(removed) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--memory-limit", default="3GiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", default="witness")
    parser.add_argument("--data", default="/tmp/pixsieve-dedup-bench")
    parser.add_argument(
        "--super-topics",
        type=int,
        default=0,
        help="draw the N/500 topic centres around this many super-topics (structure above the "
        "clusters, as real embeddings have; 0: isotropic topic centres)",
    )
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--drop-vectors",
        action="store_true",
        help="delete DATA/x.npy after generating (N*D*4 bytes less disk; scoring reads the "
        "scored rows back from the Parquet files)",
    )
    parser.add_argument(
        "extra", nargs="*", help="more `pixsieve dedup` flags after `--`, e.g. -- --no-index"
    )
    args = parser.parse_args()
    folder = Path(args.data) / f"n{args.n}-f{args.files}-d{args.dim}-s{args.seed}"
    if args.super_topics:
        folder = folder.with_name(f"{folder.name}-t{args.super_topics}")
    if args.generate_only:
        generate(folder, args.n, args.files, args.dim, args.seed, args.super_topics)
        if args.drop_vectors:
            (folder / "x.npy").unlink(missing_ok=True)
        return
    # generate in a child process: a parent holding the mapped vectors would pass its RSS to the
    # dedup child at fork time and inflate the kernel's ru_maxrss of the children
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--generate-only", *sys.argv[1:]], check=True)
    gen_s = time.perf_counter() - start
    out = Path(args.data) / f"out-{args.n}-{args.mode}-{args.memory_limit}"
    row_extra = " ".join(args.extra)
    row = {"n": args.n, "files": args.files, "mode": args.mode, "memory_limit": args.memory_limit}
    row["generate_s"] = round(gen_s, 1)
    row["extra"] = row_extra
    row.update(run_dedup(folder, out, args))
    row.update(score(folder, out, args.threshold))
    row["cpus"] = os.cpu_count()
    print(json.dumps(row))


if __name__ == "__main__":
    main()
