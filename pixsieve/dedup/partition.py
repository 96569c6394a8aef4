"""Per-file tasks of partitioned dedup: each reads one input file's rows from the read phase
(:mod:`pixsieve.dedup.readphase`) and writes partition files.

* :func:`assign_file` finds every row's nearest centroids, applies the border rule
  (:mod:`pixsieve.dedup.border`) and writes each membership ``(row, cluster, secondary,
  priority, centroid_sim, embedding)`` into the file of its cluster's bucket,
  ``assign/fFFFFF/bBBBB.parquet`` (``centroid_sim``: the row's cosine to that centroid, from
  the search; the index sorts by it).
* :func:`gather_file` writes the rows that ended in a duplicate group, with their group label,
  into ``gather/fFFFFF/gGGGG.parquet`` (bucket = label modulo the bucket count).

Tasks follow :mod:`pixsieve.dedup.taskfiles` (a finished directory is never redone) and take
only plain arguments (paths, small arrays, frozen settings), so any executor's ``map`` can run
them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pixsieve.dedup.border import border_chunk, border_margin, centroid_cosines
from pixsieve.dedup.centroid_search import CentroidSearch
from pixsieve.dedup.component_parts import read_groups
from pixsieve.dedup.crossassign import CrossPlan, CrossWriter
from pixsieve.dedup.keep import priority
from pixsieve.dedup.readphase import READ_DIR, row_blocks, take_rows
from pixsieve.dedup.sources import Source
from pixsieve.dedup.taskfiles import FileTask, _begin, _done, _finish, _Writers, bucket_parts


def repeated_id(work: str, bucket: int) -> str | None:
    """The first id seen twice among the ids of one id bucket, as a message, or ``None``."""
    files = sorted(str(p) for p in Path(work).glob(f"{READ_DIR}/f*/i{bucket:04d}.parquet"))
    if not files:
        return None
    ids = pq.read_table(files[0]).column("id") if len(files) == 1 else None
    if ids is None:
        ids = pa.concat_tables([pq.read_table(f) for f in files]).column("id")
    if pc.count_distinct(ids).as_py() == len(ids):
        return None
    counts = pc.value_counts(ids)
    first = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
    return f"ids must be unique; {first!r} appears more than once"


def assign_file(
    task: FileTask,
    source: Source,
    index: int,
    centroids_path: str,
    bucket_of: np.ndarray,
    candidates: int,
    threshold: float,
    slack: float,
    radius_path: str | None = None,
    cross: CrossPlan | None = None,
) -> dict[str, Any]:
    """Assign the rows of one input file to clusters and write them into bucket partitions.

    Also writes ``own.npy`` (each row's own cluster), ``priority.npy`` (its keep priority) and
    ``minsim.npy`` (per cluster, the lowest cosine of a row of this file to it as its own).
    Returns counts: ``rows``, ``secondary`` (border memberships) and ``beyond`` (rows less
    similar to their own centroid than the radius in ``radius_path``, when given). ``cross``:
    an earlier centroid set equal to this run's, whose cross-search memberships
    (:class:`pixsieve.dedup.crossassign.CrossWriter`) are written from the same search.
    """
    final = Path(task.work) / "assign" / f"f{index:05d}"
    tmp = _begin(final)
    if tmp is None:
        return _done(final)
    centroids = np.load(centroids_path)
    k = len(centroids)
    search = CentroidSearch(centroids, candidates)
    m = search.m
    half = border_margin(threshold, slack) if m > 1 else 0.0
    cosines = centroid_cosines(centroids) if half > 0 else None
    own = np.empty(source.rows, dtype=np.int32)
    prio = np.empty(source.rows, dtype=np.float64)
    minsim = np.full(k, np.inf)
    radius = np.load(radius_path) if radius_path else None
    beyond = 0
    writers = _Writers(tmp, "b")
    n_secondary = 0
    crossing = CrossWriter(cross, index) if cross is not None else None
    crossing = None if crossing is None or crossing.done else crossing
    try:
        for start, x, aesthetic, resolution in row_blocks(task, index):
            sims, ids = search.search(x)
            r = len(x)
            own[start : start + r] = ids[:, 0]
            np.minimum.at(minsim, ids[:, 0], sims[:, 0])
            if radius is not None:
                beyond += int((sims[:, 0] < radius[ids[:, 0]]).sum())
            p = priority(
                task.policy,
                r,
                aesthetic=aesthetic,
                resolution=resolution,
                centroid_sim=sims[:, 0],
                start=source.offset + start,
            )
            prio[start : start + r] = p
            point, cluster = np.arange(r), ids[:, 0].astype(np.int64)
            secondary = np.zeros(r, dtype=bool)
            to_centroid = sims[:, 0]
            rows, other = np.empty(0, np.int64), np.empty(0, np.int64)
            if cosines is not None:
                rows, other = border_chunk(sims, ids, cosines, half)
                point = np.concatenate([point, rows])
                cluster = np.concatenate([cluster, other])
                secondary = np.concatenate([secondary, np.ones(len(rows), dtype=bool)])
                at = (ids[rows] == other[:, None]).argmax(axis=1)  # other's place among rows'
                to_centroid = np.concatenate([to_centroid, sims[rows, at]])
                n_secondary += len(rows)
            bucket = bucket_of[cluster]
            for part in bucket_parts(bucket):
                pts = point[part]
                table = pa.table(
                    {
                        "row": pa.array(source.offset + start + pts, pa.int64()),
                        "cluster": pa.array(cluster[part], pa.int32()),
                        "secondary": pa.array(secondary[part]),
                        "priority": pa.array(p[pts], pa.float64()),
                        "centroid_sim": pa.array(to_centroid[part], pa.float32()),
                    }
                )
                writers.write(int(bucket[part[0]]), table, x[pts])
            if crossing is not None:
                crossing.add(source.offset + start, sims, ids, rows, other)
        if crossing is not None:
            crossing.finish(source.rows)
    finally:
        writers.close()
        if crossing is not None:
            crossing.close()
        pa.default_memory_pool().release_unused()
    np.save(tmp / "own.npy", own)
    np.save(tmp / "priority.npy", prio)
    np.save(tmp / "minsim.npy", minsim)
    counts = {"rows": source.rows, "secondary": n_secondary, "beyond": beyond}
    return _finish(tmp, final, counts)


def gather_file(task: FileTask, source: Source, index: int, n_buckets: int) -> dict[str, Any]:
    """Write the grouped rows of one file with their group labels (read from the components
    phase's ``components/fFFFFF.npz``, :func:`pixsieve.dedup.component_parts.read_groups`).

    ``child`` marks rows that SemDeDup removed (``semdedup`` mode; all false otherwise).
    """
    final = Path(task.work) / "gather" / f"f{index:05d}"
    tmp = _begin(final)
    if tmp is None:
        return _done(final)
    prio = np.load(Path(task.work) / "assign" / f"f{index:05d}" / "priority.npy")
    local_rows, labels, child = read_groups(task.work, index)
    writers = _Writers(tmp, "g")
    lo = 0
    try:
        for x in take_rows(task, index, local_rows):
            hi = lo + len(x)
            take = local_rows[lo:hi]
            lab, bucket = labels[lo:hi], labels[lo:hi] % n_buckets
            for part in bucket_parts(bucket):
                table = pa.table(
                    {
                        "row": pa.array(source.offset + take[part], pa.int64()),
                        "label": pa.array(lab[part], pa.int64()),
                        "priority": pa.array(prio[take[part]], pa.float64()),
                        "child": pa.array(child[lo:hi][part]),
                    }
                )
                writers.write(int(bucket[part[0]]), table, x[part])
            lo = hi
    finally:
        writers.close()
        pa.default_memory_pool().release_unused()
    return _finish(tmp, final, {"rows": len(local_rows)})
