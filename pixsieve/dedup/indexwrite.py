"""Writing a run's dedup index (layout and reading: :mod:`pixsieve.dedup.index`).

One task per input file writes its kept items' ids and float32 embeddings (``ids/``, from the
read phase); one task per bucket writes the kept memberships of the bucket's clusters from the
assignment partitions of every input file, sorted for later windows, with an int8 copy of
their embeddings (``kept/``, ``vectors/``). Every task is resumable (its files appear by
rename when complete); ``index.json`` is written last.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.calls import uses_torch
from pixsieve.dedup.index import (
    INDEX_DIR,
    INDEX_FILE,
    INDEX_VERSION,
    KEPT_SCHEMA,
    EarlierRun,
    ids_path,
    int8_path,
    items_path,
    scale_path,
)
from pixsieve.dedup.packing import read_partitions_into
from pixsieve.dedup.quant import load_torch, quantize
from pixsieve.dedup.readphase import (
    NpyReader,
    NpyWriter,
    from_read_phase,
    gather_rows,
    read_dir,
)
from pixsieve.dedup.scratch import rows_buffer
from pixsieve.dedup.sources import Source, read_ids
from pixsieve.dedup.taskfiles import FileTask

#: The run's removed rows while the bucket tasks run (:class:`RemovedRows`), under ``index/``.
REMOVED_FILE: str = ".removed.npy"


def _write_parquet(table: pa.Table, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(table, tmp, compression="none")
    tmp.rename(target)


def kept_local(source: Source, removed: np.ndarray) -> np.ndarray:
    """The kept rows of one input file, local and sorted (``removed``: sorted global rows)."""
    return np.setdiff1d(np.arange(source.rows), removed - source.offset)


def index_ids(
    task: FileTask, out: str, source: Source, index: int, id_column: str, removed: np.ndarray
) -> int:
    """Write ``ids/fFFFFF.parquet`` (``row``, ``id`` as string) and ``ids/fFFFFF.f32.npy``
    (their unit float32 embeddings, read from the read phase in batches) for the kept rows of
    one input file, by row. ``removed``: sorted global rows of this file that were removed.
    Returns the rows kept."""
    folder = Path(out) / INDEX_DIR
    target = ids_path(folder, index)
    if target.exists():
        return pq.ParquetFile(target).metadata.num_rows
    local = kept_local(source, removed)
    reader = NpyReader(read_dir(task, index) / "x.npy", direct=True)
    store = items_path(folder, index)
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(store.name + ".tmp")
    writer = NpyWriter(tmp, len(local), (task.dim,), np.float32, direct=True)
    step = max(1, task.batch_rows)
    buf = np.empty((min(step, source.rows), task.dim), np.float32)
    try:
        for lo in range(0, source.rows, step):
            got = reader.read(lo, min(lo + step, source.rows), buf)
            a, b = np.searchsorted(local, [lo, lo + step])
            writer.write(got[local[a:b] - lo])
    finally:
        writer.close()
        reader.close()
    tmp.rename(store)
    ids = read_ids(source.path, id_column).take(pa.array(local)).cast(pa.string())
    rows = pa.array(source.offset + local, pa.int64())
    _write_parquet(pa.table({"row": rows, "id": ids}), target)
    return len(local)


@dataclass(frozen=True)
class RemovedRows:
    """The rows a run removed (sorted, global) in an ``.npy`` file, read one input file's at a
    time (a bucket task needs every file's, but holding all of them would grow with N).

    Attributes:
        path: the ``.npy`` file.
        starts: the first global row of each input file.
        bounds: ``(files + 1,)``: file ``f``'s removed rows are entries ``bounds[f]`` up to
            ``bounds[f + 1]``.
        total: the run's rows.
    """

    path: str
    starts: np.ndarray
    bounds: np.ndarray
    total: int

    def of_file(self, f: int) -> np.ndarray:
        """The removed rows of input file ``f``."""
        reader = NpyReader(Path(self.path))
        try:
            return reader.read(int(self.bounds[f]), int(self.bounds[f + 1]))
        finally:
            reader.close()


@uses_torch
def index_bucket(
    task: FileTask, out: str, bucket: int, removed: RemovedRows, max_rows: int
) -> None:
    """Write ``kept/bBBBB.parquet`` (:data:`pixsieve.dedup.index.KEPT_SCHEMA`) and
    ``vectors/bBBBB.i8.npy``: every membership of a kept row in this bucket's assignment
    partitions (one per input file), sorted by cluster, primaries first, then by
    ``centroid_sim``, with an int8 copy of the embeddings in that order and their scales and
    error bounds (``vectors/bBBBB.i8s.npy``, :func:`pixsieve.dedup.quant.quantize`), at most
    ``max_rows`` at a time (:func:`_quantized`)."""
    work, dim = task.work, task.dim
    target = Path(out) / INDEX_DIR / "kept" / f"b{bucket:04d}.parquet"
    if target.exists():
        return
    parts = sorted(Path(work).glob(f"assign/f*/b{bucket:04d}.parquet"))
    columns = ["row", "cluster", "secondary", "centroid_sim"]
    tables, positions, stored = [], [], 0  # stored: rows of all the partitions
    for part in parts:  # the partition of input file F: its rows only
        table = pq.ParquetFile(part).read(columns=columns)
        f = int(part.parent.name[1:])
        gone = removed.of_file(f)
        row = table.column("row").to_numpy()
        keep = np.flatnonzero(~np.isin(row, gone))
        item = row[keep] - removed.starts[f] - np.searchsorted(gone, row[keep])
        table = table.take(pa.array(keep))
        table = table.append_column("file", pa.array(np.full(len(keep), f, np.int32)))
        tables.append(table.append_column("item", pa.array(item, pa.int64())))
        positions.append(stored + keep)  # place among all the partitions' rows
        stored += len(row)
    table = pa.concat_tables([t.cast(KEPT_SCHEMA) for t in tables] or [KEPT_SCHEMA.empty_table()])
    cluster = table.column("cluster").to_numpy()
    secondary = table.column("secondary").to_numpy(zero_copy_only=False)
    order = np.lexsort((table.column("centroid_sim").to_numpy(), secondary, cluster))
    place = np.concatenate(positions) if positions else np.empty(0, np.int64)
    store = int8_path(target)
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(store.name + ".tmp")
    writer = NpyWriter(tmp, len(order), (dim,), np.int8, direct=True)
    scales = np.empty((len(order), 2), np.float32)
    chunks = -(-len(order) // max(1, max_rows))  # of equal size, at most max_rows
    step = max(1, -(-len(order) // max(1, chunks)))
    rows = table.column("row").to_numpy()
    part = (task, parts, place, stored, removed)
    try:
        for lo in range(0, len(order), step):
            take = order[lo : lo + step]
            q, scales[lo : lo + len(take)] = _quantized(part, take, rows[take])
            writer.write(q)
    finally:
        writer.close()
    np.save(scale_path(store), scales)
    tmp.rename(store)
    meta = table.take(pa.array(order))
    k = len(np.load(Path(work) / "centroids.npy", mmap_mode="r"))
    members = np.stack(
        [
            np.bincount(cluster[order], minlength=k),
            np.bincount(cluster[order][~secondary[order]], minlength=k),
        ]
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target.parent / f".b{bucket:04d}.members.npy", members)
    _write_parquet(meta, target)


def _quantized(
    part: tuple[FileTask, list[Path], np.ndarray, int, RemovedRows],
    take: np.ndarray,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The int8 rows (:func:`pixsieve.dedup.quant.quantize`) of the memberships ``take`` (of
    global rows ``rows``): from the read phase, each item once, where
    :func:`pixsieve.dedup.readphase.from_read_phase` says so; else from the assignment
    partitions, one copy per membership (``place``: each membership's row among the ``stored``
    rows of all the partitions)."""
    task, parts, place, stored, removed = part
    if from_read_phase(len(take), removed.total):
        unique, back = np.unique(rows, return_inverse=True)
        buf = rows_buffer(len(unique), task.dim)
        gather_rows(task, removed.starts, unique, buf, direct=True)
        q, meta = quantize(buf)
        return q[back], meta[back]
    buf = rows_buffer(len(take), task.dim)
    where = np.full(stored, -1, np.int64)
    where[place[take]] = np.arange(len(take))
    read_partitions_into(parts, where, buf)
    return quantize(buf)


def write_meta(
    out: Path, centroids_path: Path, meta: dict[str, Any], kept: int, parents: list[EarlierRun]
) -> Path:
    """Write ``centroids.npy``, ``radius.npy``, ``members.npy`` (the sum of the per-bucket
    counts :func:`index_bucket` left) and ``index.json`` (last: the index is complete once it
    exists). ``meta``: ``run_id``, ``settings``, ``buckets`` and ``radius``."""
    folder = out / INDEX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(centroids_path, folder / "centroids.npy")
    np.save(folder / "radius.npy", meta["radius"])
    centroids = np.load(centroids_path, mmap_mode="r")
    members = np.zeros((2, len(centroids)), np.int64)
    markers = sorted((folder / "kept").glob(".b*.members.npy"))
    for marker in markers:
        members += np.load(marker)
    np.save(folder / "members.npy", members)
    for marker in markers:
        marker.unlink()
    info = {
        "version": INDEX_VERSION,
        "run_id": meta["run_id"],
        "settings": meta["settings"],
        "clusters": int(centroids.shape[0]),
        "buckets": meta["buckets"],
        "kept": kept,
        "parents": [{"run_id": p.run_id, "path": p.label} for p in parents],
    }
    tmp = folder / (INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.rename(folder / INDEX_FILE)
    return folder


def build_index(
    run: Any,
    task: FileTask,
    out: Path,
    sources: list[Source],
    id_column: str,
    removed: np.ndarray,
    meta: dict[str, Any],
    parents: list[EarlierRun],
) -> Path:
    """Write this run's index (see :mod:`pixsieve.dedup.index`): one task per input file for
    its kept items, one per bucket for the memberships.

    Args:
        run: a ``map_calls``.
        task: the run's file task (work and read directories, dimension, batch rows).
        removed: sorted global rows this run removed (within the run or as earlier duplicates).
        meta: ``run_id``, ``settings``, ``buckets``, ``radius`` (per-cluster array) and
            ``bucket_rows`` (most embeddings a bucket task holds at once).
    """
    load_torch()
    work = Path(task.work)
    calls = []
    for i, s in enumerate(sources):
        lo, hi = np.searchsorted(removed, [s.offset, s.offset + s.rows])
        calls.append((task, str(out), s, i, id_column, removed[lo:hi]))
    kept = sum(run(index_ids, calls))
    folder = out / INDEX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / REMOVED_FILE, removed)
    starts = np.array([s.offset for s in sources], np.int64)
    bounds = np.searchsorted(removed, np.r_[starts, starts[-1:] + sources[-1].rows])
    total = int(starts[-1] + sources[-1].rows)
    rows = RemovedRows(str(folder / REMOVED_FILE), starts, bounds, total)
    calls = [(task, str(out), b, rows, meta["bucket_rows"]) for b in range(meta["buckets"])]
    list(run(index_bucket, calls))
    (folder / REMOVED_FILE).unlink()
    radius = meta["radius"]
    for i in range(len(sources)):
        radius = np.minimum(radius, np.load(work / "assign" / f"f{i:05d}" / "minsim.npy"))
    return write_meta(out, work / "centroids.npy", {**meta, "radius": radius}, kept, parents)
