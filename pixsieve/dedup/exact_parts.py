"""Exact dedup partitioned by hash, so no process ever holds every image hash.

Input: the scan pass's hash tables, one Parquet file per shard with columns ``shard_index``,
``position``, ``key``, ``source`` and ``hash`` (16 bytes). One task per file writes its rows
into ``work/exact/fFFFFF/bBBBB.parquet`` by a hash of ``hash``; one task per bucket then runs
:func:`pixsieve.dedup.exact.find_exact_duplicates` on its rows only. Every copy of an image
lands in the same bucket and the order keys (shard, position) are global, so each bucket's
answer is exactly the global answer restricted to its hashes. Both phases are resumable.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pixsieve.calls import MapCalls, serial_calls
from pixsieve.dedup.exact import find_exact_duplicates
from pixsieve.dedup.hashparts import bucket_groups, key_buckets
from pixsieve.dedup.memory import BASE_RESERVE, default_memory_limit

Progress = Callable[[str, int, int], None]

#: Bytes one hash row takes in memory when a bucket is decided (hash, keys, sort order).
ROW_BYTES: int = 256
COLUMNS = ["shard_index", "position", "key", "source", "hash"]


def partition_hash_file(path: str, index: int, work: str, n_buckets: int) -> int:
    """Split one hash table into bucket files; return its rows (0 for a file done before)."""
    final = Path(work) / "exact" / f"f{index:05d}"
    if final.exists():
        return 0
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    table = pq.read_table(path, columns=COLUMNS)
    bucket = key_buckets(table.column("hash"), n_buckets)
    for part in bucket_groups(bucket):
        pq.write_table(table.take(pa.array(part)), tmp / f"b{int(bucket[part[0]]):04d}.parquet")
    tmp.rename(final)
    return table.num_rows


def exact_bucket(work: str, bucket: int) -> int:
    """Decide one bucket: write ``exact-out/bBBBB.parquet``; return its duplicates."""
    final = Path(work) / "exact-out" / f"b{bucket:04d}.parquet"
    if final.exists():
        return pq.ParquetFile(final).metadata.num_rows
    files = sorted(str(p) for p in Path(work).glob(f"exact/f*/b{bucket:04d}.parquet"))
    empty = pa.table({"hash": pa.array([], pa.binary(16))})
    table = ds.dataset(files, format="parquet").to_table() if files else empty
    dups = find_exact_duplicates(table)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(dups, tmp)
    tmp.rename(final)
    return dups.num_rows


def _same_plan(work: Path, n_buckets: int) -> None:
    """Keep earlier partitions only when they were cut into the same number of buckets."""
    marker = work / "exact-plan.json"
    if marker.exists() and json.loads(marker.read_text()).get("buckets") != n_buckets:
        shutil.rmtree(work / "exact", ignore_errors=True)
        shutil.rmtree(work / "exact-out", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"buckets": n_buckets}))


def exact_duplicates_partitioned(
    files: Sequence[str | Path],
    work: str | Path,
    *,
    memory_limit: int | None = None,
    n_buckets: int | None = None,
    map_calls: MapCalls | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Find exact duplicates over many hash tables in bounded memory.

    Args:
        files: hash tables (columns ``shard_index``, ``position``, ``key``, ``source``,
            ``hash``), one per shard; the largest must fit in memory on its own.
        work: directory for the partitions and the per-bucket results (resumable).
        memory_limit: bytes (default: half the machine's memory); sets the bucket count.
        n_buckets: override the bucket count.
        map_calls: runs the tasks (``map_calls(fn, argument_tuples)``); serial by default.
        progress: called as ``progress(phase, done, total)``.

    Returns:
        The per-bucket result files: together, one row per duplicate exactly as
        :func:`pixsieve.dedup.exact.find_exact_duplicates` over all files would return.
    """
    run = map_calls or serial_calls
    paths = [str(f) for f in files]
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    if n_buckets is None:
        limit = memory_limit or default_memory_limit()
        n_buckets = max(1, math.ceil(rows * ROW_BYTES / max(1, (limit - BASE_RESERVE) // 2)))
    _same_plan(Path(work), n_buckets)
    work = str(work)
    calls = [(p, i, work, n_buckets) for i, p in enumerate(paths)]
    for done, _ in enumerate(run(partition_hash_file, calls), start=1):
        if progress:
            progress("exact partition", done, len(calls))
    outs = []
    for done, _ in enumerate(run(exact_bucket, [(work, b) for b in range(n_buckets)]), start=1):
        outs.append(Path(work) / "exact-out" / f"b{done - 1:04d}.parquet")
        if progress:
            progress("exact buckets", done, n_buckets)
    return outs
