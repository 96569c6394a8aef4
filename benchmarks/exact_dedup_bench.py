"""Partitioned exact dedup of N content hashes under a memory cap (run by hand).

    python benchmarks/exact_dedup_bench.py --n 10000000 --shards 100 --memory-limit 3GiB

1. Generates ``--n`` random 16-byte content hashes with planted repeats (``--repeat-share`` of
   the rows copy the hash of another, original row anywhere in the run, so repeats span shards)
   into ``--shards`` hash tables shaped like the scan pass's ``cache/hashes/SSSSS.parquet``
   (schema :data:`pixsieve.io.schemas.HASHES`), under ``--data`` (reused for the same settings).
2. Runs :func:`pixsieve.dedup.exact_parts.exact_duplicates_partitioned` in a child process with
   ``--memory-limit`` and ``--workers`` threads (as ``curate``'s scan pass does) and samples the
   RSS of its whole process tree every 0.05 s (peak reported, plus the kernel's high-water mark
   ``VmHWM`` of the child, last read just before it exits).
3. Checks the answer against a reference computed by sorting all hashes in this process (after
   the child has exited): every repeat found, each with the key of its first occurrence in
   (shard, position) order, and exactly the planted repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from dedup_files_bench import _hwm, _tree_rss

CHILD = """
import json, sys, time
from pixsieve.dedup.exact_parts import exact_duplicates_partitioned
from pixsieve.dedup.memory import parse_size
from pixsieve.dedup.workdir import thread_map
files, work, limit, workers = json.loads(sys.argv[1])
start = time.perf_counter()
outs = exact_duplicates_partitioned(
    files, work, memory_limit=parse_size(limit), map_calls=thread_map(workers)
)
print(json.dumps({"seconds": time.perf_counter() - start, "outs": [str(o) for o in outs]}))
"""


def generate(folder: Path, n: int, shards: int, share: float, seed: int) -> list[str]:
    """Write the hash tables (once per settings); return their paths and the planted count."""
    from pixsieve.io.schemas import HASHES, conform

    paths = [str(folder / f"{s:05d}.parquet") for s in range(shards)]
    if (folder / "done.json").exists():
        return paths
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    copies = rng.choice(n, size=int(n * share), replace=False)
    originals = np.setdiff1d(np.arange(n), copies, assume_unique=True)
    hashes[copies] = hashes[rng.choice(originals, size=len(copies))]
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    for s in range(shards):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        position = pa.array(np.arange(hi - lo, dtype=np.int64))
        prefix = f"{s:05d}"
        digits = pc.cast(position, pa.string())
        table = pa.table(
            {
                "shard_index": pa.array(np.full(hi - lo, s, dtype=np.int64)),
                "position": position,
                "sample_id": pc.binary_join_element_wise(prefix, digits, ":"),
                "key": pc.binary_join_element_wise(prefix, digits, "/"),
                "source": pa.array(np.full(hi - lo, f"shard-{s:05d}.tar", dtype=object)),
                "hash": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(16), hi - lo, [None, pa.py_buffer(hashes[lo:hi].tobytes())]
                ),
            }
        )
        pq.write_table(conform(table, HASHES), paths[s])
    (folder / "done.json").write_text(json.dumps({"n": n, "planted_repeats": len(copies)}))
    return paths


def reference(paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shard, position, first_key_row)`` of every repeat, by sorting all hashes at once."""
    tables = [pq.read_table(p, columns=["shard_index", "position", "hash"]) for p in paths]
    shard = np.concatenate([t["shard_index"].to_numpy() for t in tables])
    position = np.concatenate([t["position"].to_numpy() for t in tables])
    raw = np.concatenate(
        [np.frombuffer(t["hash"].combine_chunks().buffers()[1], dtype="V16") for t in tables]
    )
    del tables
    order = np.lexsort((position, shard))  # input order (already, as generated)
    digests = raw[order]
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    winner = first[inverse]
    dup = np.flatnonzero(winner != np.arange(len(digests)))
    return shard[order][dup], position[order][dup], order[winner[dup]]


def check(paths: list[str], outs: list[str]) -> dict:
    """Compare the partitioned answer with :func:`reference`."""
    got = pa.concat_tables([pq.read_table(o) for o in outs]) if outs else None
    r_shard, r_pos, r_first = reference(paths)
    keys = np.concatenate(
        [pq.read_table(p, columns=["key"])["key"].to_numpy(zero_copy_only=False) for p in paths]
    )
    g_shard = got["shard_index"].to_numpy()
    g_pos = got["position"].to_numpy()
    order = np.lexsort((g_pos, g_shard))
    same_rows = np.array_equal(g_shard[order], r_shard) and np.array_equal(g_pos[order], r_pos)
    dup_of = got["duplicate_of"].to_numpy(zero_copy_only=False)[order]
    same_first = same_rows and bool((dup_of == keys[r_first]).all())
    return {
        "duplicates": len(g_shard),
        "reference": len(r_shard),
        "same_rows": same_rows,
        "same_first_occurrence": same_first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--repeat-share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit", default="3GiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", default="/tmp/pixsieve-exact-bench")
    args = parser.parse_args()
    folder = Path(args.data) / f"n{args.n}-s{args.shards}-r{args.repeat_share}-seed{args.seed}"
    start = time.perf_counter()
    paths = generate(folder, args.n, args.shards, args.repeat_share, args.seed)
    gen_s = time.perf_counter() - start
    planted = json.loads((folder / "done.json").read_text())["planted_repeats"]
    work = Path(args.data) / f"work-{args.n}"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run, not a resumed one
    spec = json.dumps([paths, str(work), args.memory_limit, args.workers])
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, spec], stdout=subprocess.PIPE)
    peak = hwm = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        hwm = max(hwm, _hwm(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"exact dedup failed with exit code {proc.returncode}")
    usage = os.times()
    child = json.loads(proc.stdout.read().decode().strip().splitlines()[-1])
    row = {"n": args.n, "shards": args.shards, "memory_limit": args.memory_limit}
    row["workers"] = args.workers
    row["generate_s"] = round(gen_s, 1)
    row["seconds"] = round(child["seconds"], 1)
    row["wall_s"] = round(wall, 1)
    row["cpu_s"] = round(usage.children_user + usage.children_system, 1)
    row["rows_per_s"] = round(args.n / child["seconds"])
    row["buckets"] = len(child["outs"])
    row["peak_rss_tree_gib"] = round(peak / 2**30, 2)
    row["vm_hwm_gib"] = round(hwm / 2**30, 2)
    row["planted_repeats"] = planted
    row.update(check(paths, child["outs"]))
    row["exactly_planted"] = row["same_first_occurrence"] and row["duplicates"] == planted
    row["cpus"] = os.cpu_count()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(row))
    if not row["exactly_planted"]:
        raise SystemExit("the partitioned answer differs from the reference")


if __name__ == "__main__":
    main()
