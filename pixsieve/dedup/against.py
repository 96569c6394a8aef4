"""Dedup against earlier runs: new items compared with the items earlier runs kept.

New items are assigned to the earlier runs' centroids with the border rule (the same
:func:`pixsieve.dedup.partition.assign_file`), so a new item and an earlier kept item at or
above the threshold always share a cluster where one of them is a primary member: the earlier
index stores the border memberships of its kept items too. :func:`cross_bucket` compares, for
one bucket of clusters, the new memberships with the earlier kept memberships of the same
clusters (never two secondaries) and writes, per new row, its most similar earlier kept item at
or above the threshold to ``cross/bBBBB.parquet``. Earlier items are only read: the earlier
outputs never change and their kept items always survive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pixsieve.calls import uses_torch
from pixsieve.dedup.crossassign import CrossPlan, cross_assign_file
from pixsieve.dedup.crossmatch import Best, Keys, Search, match_cluster
from pixsieve.dedup.index import bucket_parts, part_ids
from pixsieve.dedup.quant import load_torch, quantize
from pixsieve.dedup.readphase import gather_rows
from pixsieve.dedup.scratch import rows_buffer
from pixsieve.dedup.sources import Source
from pixsieve.dedup.taskfiles import FileTask
from pixsieve.dedup.windowstore import Stores, Window


def _earlier_files(
    earlier: list[tuple[int, str, int, int]], lo: int, hi: int
) -> Iterator[tuple[int, Path]]:
    """``(run position, kept part)`` of every earlier index part holding clusters ``lo..hi-1``."""
    for position, kept_dir, buckets, k in earlier:
        first, last = lo * buckets // k, (hi - 1) * buckets // k
        for b in range(first, last + 1):
            for part in bucket_parts(Path(kept_dir), b):
                yield position, part


@uses_torch
def cross_bucket(
    task: FileTask,
    starts: np.ndarray,
    bucket: int,
    lo: int,
    hi: int,
    earlier: list[tuple[int, str, int, int]],
    threshold: float,
) -> dict[str, Any]:
    """Match the new memberships of one bucket (clusters ``lo..hi-1``, in ``task.work``) with
    the earlier kept ones; write ``cross/bBBBB.parquet``: per new row matched, its most similar
    earlier kept membership (``row``, ``run``, ``part`` and ``pos``: the index part and the
    position in it, ``similarity``; :func:`earlier_matches` looks up the ids).

    Reads each new row of the bucket once from the read phase (``starts``: the first global
    row of each input file), of each earlier index part the ``cluster``, ``secondary`` and
    ``centroid_sim`` columns, and of its search store (int8 in version 6,
    :mod:`pixsieve.dedup.windowstore`) only the rows of clusters with new memberships whose
    centroid cosine lies in a new row's window. ``earlier``: ``(position, kept directory,
    buckets, clusters)`` of each earlier index.
    """
    final = Path(task.work) / "cross" / f"b{bucket:04d}.parquet"
    if final.exists():
        return json.loads(final.with_suffix(".json").read_text())
    files = sorted(Path(task.work).glob(f"assign/f*/b{bucket:04d}.parquet"))
    rows_out, runs_out, parts_out, pos_out, sims_out = [], [], [], [], []
    compared = 0
    if files and hi > lo:
        columns = ["row", "cluster", "secondary"]
        meta = pa.concat_tables([pq.ParquetFile(f).read(columns=columns) for f in files])
        rows, n_cl = meta.column("row").to_numpy(), meta.column("cluster").to_numpy()
        n_sec = meta.column("secondary").to_numpy(zero_copy_only=False)
        n_row, at = np.unique(rows, return_inverse=True)  # each new row once
        xn = rows_buffer(len(n_row), task.dim)  # the thread's reused buffer
        gather_rows(task, starts, n_row, xn)
        new_q, new_meta = quantize(xn[: len(n_row)])
        order = np.lexsort((n_sec, n_cl))
        n_sorted = n_cl[order]
        clusters = np.unique(n_sorted)
        parts = list(_earlier_files(earlier, lo, hi))
        spans, columns = [], []
        centroids = np.load(Path(task.work) / "centroids.npy")
        for _, part in parts:  # ParquetFile: read_table's dataset layer costs 2.5x per file
            meta = pq.ParquetFile(part).read(columns=["cluster", "secondary", "centroid_sim"])
            o_cl = meta.column("cluster").to_numpy()
            o_sec = meta.column("secondary").to_numpy(zero_copy_only=False)
            columns.append((o_cl, o_sec, meta.column("centroid_sim").to_numpy()))
            start, end = np.searchsorted(o_cl, clusters), np.searchsorted(o_cl, clusters, "right")
            spans.append((start, end))
        first, last = np.stack([sp[0] for sp in spans]), np.stack([sp[1] for sp in spans])
        search = Search(
            keys=Keys(columns, hi),
            stores=Stores([part for _, part in parts]),
            window=math.acos(min(1.0, threshold)),
            threshold=threshold,
            buf=Window(task.dim),
            best=Best.empty(len(n_row)),
            new_q=new_q,
            new_meta=new_meta,
        )
        del columns
        new_lo = np.searchsorted(n_sorted, clusters)
        new_hi = np.searchsorted(n_sorted, clusters, "right")
        try:
            for ci in range(len(clusters)):
                here = np.flatnonzero(last[:, ci] > first[:, ci])  # one earlier bucket's parts
                search.stores.use(set(here.tolist()))
                ni = order[new_lo[ci] : new_hi[ci]]
                if len(here):
                    new = (at[ni[~n_sec[ni]]], at[ni[n_sec[ni]]])
                    c = int(clusters[ci])
                    compared += match_cluster(xn, new, centroids[c], c, here, search)
        finally:
            search.stores.close()
        best = search.best
        hit = np.flatnonzero(best.file >= 0)
        for f in np.unique(best.file[hit]).tolist():
            mine = hit[best.file[hit] == f]
            position, part = parts[f]
            rows_out.append(n_row[mine])
            runs_out.append(np.full(len(mine), position, np.int32))
            parts_out.append(pa.array([str(part)] * len(mine), pa.string()))
            pos_out.append(best.pos[mine])
            sims_out.append(best.sim[mine])
    table = pa.table(
        {
            "row": np.concatenate(rows_out) if rows_out else np.empty(0, np.int64),
            "run": np.concatenate(runs_out) if runs_out else np.empty(0, np.int32),
            "part": pa.concat_arrays(parts_out) if parts_out else pa.array([], pa.string()),
            "pos": np.concatenate(pos_out) if pos_out else np.empty(0, np.int64),
            "similarity": np.concatenate(sims_out) if sims_out else np.empty(0),
        }
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(table, tmp, compression="none")
    counts = {"matched_rows": len(table), "similarities_computed": compared}
    final.with_suffix(".json").write_text(json.dumps(counts))
    tmp.rename(final)
    return counts


def search_earlier(
    run: Any,
    task: FileTask,
    sources: list[Source],
    plans: list[CrossPlan],
    border: tuple[Any, ...],
) -> tuple[pa.Table, dict[str, int]]:
    """The earlier phase: for each centroid set of the earlier runs (a prefix of this run's,
    :mod:`pixsieve.dedup.recluster`), the new items' cross-search memberships
    (:func:`pixsieve.dedup.crossassign.cross_assign_file` for the files whose assign task did
    not write them), then :func:`cross_bucket` over every bucket.

    Args:
        run: a ``map_calls``.
        plans: :func:`pixsieve.dedup.crossassign.cross_plans`.
        border: ``(border candidates, threshold, slack)``.
    Returns:
        :func:`earlier_matches` and counts: ``earlier_similarities``, ``earlier_memberships``
        (new items' cross-search memberships), ``earlier_by_radius`` (new items searched by the
        radius scheme).
    """
    load_torch()
    crossed, works = [], []
    counts = {"earlier_memberships": 0, "earlier_by_radius": 0}
    for plan in plans:
        mine = replace(task, work=plan.work, read=task.read or task.work)
        calls = [(mine, s, i, plan, *border) for i, s in enumerate(sources)]
        assigned = list(run(cross_assign_file, calls))
        spec = [(position, str(r.kept_dir), r.buckets, plan.k) for position, r in plan.runs]
        n_buckets = plan.buckets
        bounds = [np.searchsorted(plan.bucket_of, [b, b + 1]) for b in range(n_buckets)]
        starts = np.array([s.offset for s in sources], np.int64)
        calls = [
            (mine, starts, b, int(lo), int(hi), spec, plan.threshold)
            for b, (lo, hi) in enumerate(bounds)
        ]
        crossed += list(run(cross_bucket, calls))
        counts["earlier_memberships"] += sum(a["memberships"] for a in assigned)
        counts["earlier_by_radius"] += sum(a["by_radius"] for a in assigned)
        works.append((Path(plan.work), n_buckets))
    counts["earlier_similarities"] = sum(c["similarities_computed"] for c in crossed)
    return earlier_matches(works), counts


def earlier_matches(works: list[tuple[Path, int]]) -> pa.Table:
    """Per new row matched in any bucket (of any of the ``(work directory, buckets)``), its
    most similar earlier kept item, by row: ``row``, ``run``, ``duplicate_of`` (its id, looked
    up here for every bucket at once: each ids file is read once) and ``similarity``."""
    files = [str(w / "cross" / f"b{b:04d}.parquet") for w, n in works for b in range(n)]
    table = ds.dataset(files, format="parquet").to_table() if files else None
    if table is None or not len(table):
        return pa.table(
            {
                "row": pa.array([], pa.int64()),
                "run": pa.array([], pa.int32()),
                "duplicate_of": pa.array([], pa.string()),
                "similarity": pa.array([], pa.float64()),
            }
        )
    row, sim = table.column("row").to_numpy(), table.column("similarity").to_numpy()
    order = np.lexsort((-sim, row))
    first = order[np.r_[True, row[order][1:] != row[order][:-1]]]
    table = table.take(pa.array(first))
    part = table.column("part").combine_chunks().dictionary_encode()
    names, code = part.dictionary.to_pylist(), part.indices.to_numpy()
    pos = table.column("pos").to_numpy()
    groups = [np.flatnonzero(code == i) for i in range(len(names))]
    ids = part_ids([(Path(name), pos[g]) for name, g in zip(names, groups, strict=True)])
    back = np.argsort(np.concatenate(groups)) if groups else np.empty(0, np.int64)
    found = pa.concat_arrays(ids).take(pa.array(back)) if ids else pa.array([], pa.string())
    return pa.table(
        {
            "row": table.column("row"),
            "run": table.column("run"),
            "duplicate_of": found,
            "similarity": table.column("similarity"),
        }
    )
