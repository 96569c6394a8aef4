"""The curate semantic pass (partitioned) next to in-memory dedup of the same caches (run by hand).

    python benchmarks/semantic_pass_bench.py --n 2000 20000 100000 --shards 10

For each N: writes ``--shards`` sample caches (``cache/samples/SSSSS.parquet``: position, key,
status, 768-d embedding, aesthetic score, width, height; planted near-duplicates) into a fresh
run directory, then times

1. *in memory*: read every cache's kept rows into one array and run
   :func:`pixsieve.dedup.find_duplicates` (what the semantic pass did before it was
   partitioned), and
2. *partitioned*: :func:`pixsieve.run.semantic.run_semantic_dedup` with a local executor's
   ``map_calls`` (what ``curate`` runs now),

and checks that both remove the same samples.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dedup_tools.synthetic import planted_embeddings

from pixsieve.dedup import SemanticDedupConfig, find_duplicates
from pixsieve.executors import LocalExecutor
from pixsieve.io.shards import ShardRef
from pixsieve.io.tables import embeddings_from_arrow
from pixsieve.run.layout import RunLayout
from pixsieve.run.semantic import run_semantic_dedup

DIM = 768


def write_caches(layout: RunLayout, n: int, shards: int, seed: int = 0) -> list[ShardRef]:
    """``shards`` sample caches holding ``n`` rows of planted embeddings."""
    rng = np.random.default_rng(seed)
    x = planted_embeddings(n, dim=DIM, seed=seed).embeddings
    refs = []
    for i, rows in enumerate(np.array_split(np.arange(n), shards)):
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[rows].reshape(-1)), DIM)
        layout.write_table(
            layout.samples(i),
            pa.table(
                {
                    "position": pa.array(np.arange(len(rows)), pa.int64()),
                    "key": pa.array([f"{i}-{j}" for j in range(len(rows))]),
                    "status": pa.array(["kept"] * len(rows)),
                    "embedding": emb,
                    "aesthetic_score": pa.array(rng.random(len(rows)) * 10, pa.float32()),
                    "width": pa.array(rng.integers(100, 900, len(rows)), pa.int32()),
                    "height": pa.array(rng.integers(100, 900, len(rows)), pa.int32()),
                }
            ),
        )
        refs.append(ShardRef(url=f"/in/{i}.tar", size=1))
    return refs


def in_memory(layout: RunLayout, shards: int, config: SemanticDedupConfig) -> int:
    """The old route: every cache's kept rows in one process, then ``find_duplicates``."""
    parts = []
    for i in range(shards):
        t = layout.read_table(layout.samples(i))
        parts.append(t.filter(pc.equal(t["status"], "kept")))
    t = pa.concat_tables(parts)
    res = find_duplicates(
        embeddings_from_arrow(t["embedding"]),
        config,
        aesthetic=t["aesthetic_score"].to_numpy().astype(np.float32),
        resolution=t["width"].to_numpy().astype(np.int64) * t["height"].to_numpy(),
    )
    return int(res.removed.sum())


def main() -> None:
    """Time both routes for every ``--n``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[2000, 20000, 100000])
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    config = SemanticDedupConfig()
    print(f"{'N':>8} {'in memory s':>12} {'partitioned s':>14} {'removed':>8}")
    for n in args.n:
        root = Path(tempfile.mkdtemp(prefix="pixsieve-semantic-bench-"))
        try:
            layout = RunLayout.open(str(root))
            refs = write_caches(layout, n, args.shards)
            start = time.perf_counter()
            removed = in_memory(layout, args.shards, config)
            mem_s = time.perf_counter() - start
            start = time.perf_counter()
            summary = run_semantic_dedup(
                layout,
                refs,
                config,
                map_calls=LocalExecutor(args.workers).map_calls,
                workers=args.workers,
            )
            part_s = time.perf_counter() - start
            got = summary["stats"]["counts"].get("dropped_semantic_duplicate", 0)
            assert got == removed, (got, removed)
            print(f"{n:>8} {mem_s:>12.2f} {part_s:>14.2f} {removed:>8}", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
