"""Per-bucket tasks of partitioned dedup: each reads only its own partition files.

* :func:`bucket_edges` reads the memberships of one bucket of clusters and runs the same
  per-cluster search as the in-memory path (:func:`pixsieve.dedup.pairs.cluster_edges`, or
  :func:`pixsieve.dedup.pairs.semdedup_cluster` in ``semdedup`` mode); it writes the edges to
  ``edges/bBBBB.parquet``. A bucket larger than the task's share of memory is read a few
  clusters at a time.
* :func:`resolve_bucket` reads the grouped rows of one group bucket and decides, per group, the
  survivor(s) and every removed row's ``duplicate_of`` and exact similarity
  (:func:`resolve_groups`, shared with the in-memory path); it writes ``resolved/gGGGG.parquet``.

Outputs are written to a temporary name and renamed, so an existing output marks a done task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pixsieve.calls import uses_torch
from pixsieve.dedup.config import SemanticDedupConfig
from pixsieve.dedup.keep import representatives
from pixsieve.dedup.packing import read_partitions_into, read_rows
from pixsieve.dedup.pairs import cluster_edges, exact_cosine, semdedup_cluster
from pixsieve.dedup.readphase import from_read_phase, gather_rows
from pixsieve.dedup.scratch import rows_buffer
from pixsieve.dedup.taskfiles import FileTask
from pixsieve.dedup.witness import witness_groups


def _write(table: pa.Table, final: Path, counts: dict[str, Any]) -> dict[str, Any]:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(table, tmp, compression="none")
    final.with_suffix(".json").write_text(json.dumps(counts, default=int))
    tmp.rename(final)
    return counts


def _cluster_groups(sizes: dict[int, int], budget_rows: int) -> list[list[int]]:
    """Clusters packed in id order into groups of at most ``budget_rows`` rows (at least one)."""
    groups: list[list[int]] = [[]]
    total = 0
    for cluster, size in sorted(sizes.items()):
        if groups[-1] and total + size > budget_rows:
            groups.append([])
            total = 0
        groups[-1].append(cluster)
        total += size
    return groups


def _sorted_vectors(
    files: list[str], where: np.ndarray, rows: np.ndarray, reads: tuple[FileTask, np.ndarray]
) -> np.ndarray:
    """``(len(rows), dim)`` embeddings of one pass, in the thread's reused buffer
    (:mod:`pixsieve.dedup.scratch`: the only full copy held): row ``k`` of the partitions
    ``files`` (their rows one file after the other) lands at ``where[k]`` (skipped when
    negative); or, where :func:`pixsieve.dedup.readphase.from_read_phase` says so, slot ``i``
    gets global row ``rows[i]`` from the read phase (``reads``: the task and every input file's
    first global row, then the run's rows)."""
    task, starts = reads
    x = rows_buffer(len(rows), task.dim)
    if from_read_phase(len(rows), int(starts[-1])):
        by_row = np.argsort(rows, kind="stable")
        gather_rows(task, starts, rows[by_row], x, direct=True, dest=by_row)
    else:
        read_partitions_into(files, where, x)
    return x


def _kept(rows: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """``rows`` not in the sorted array ``skip``, as a mask."""
    if not len(skip):
        return np.ones(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(skip, rows), len(skip) - 1)
    return skip[at] != rows


@uses_torch
def bucket_edges(
    reads: tuple[FileTask, np.ndarray],
    bucket: int,
    config: SemanticDedupConfig,
    budget_rows: int,
    excluded: str | None = None,
) -> dict[str, Any]:
    """Find the duplicate edges of every cluster of one bucket; write ``edges/bBBBB.parquet``.

    ``reads``: the run's file task and every input file's first global row, then the run's
    rows (:func:`_sorted_vectors`).

    ``excluded``: a ``.npy`` of rows left out of the search (new items already removed as
    duplicates of an earlier run's kept item).

    Columns ``a``, ``b``: a star forest per cluster (``components``/``witness``) or SemDeDup's
    ``(removed member, most similar higher-ranked member)`` links (``semdedup``). With
    ``config.return_pairs`` every pair is also written to ``pairs/bBBBB.parquet``.
    """
    work = reads[0].work
    final = Path(work) / "edges" / f"b{bucket:04d}.parquet"
    if final.exists():
        return json.loads(final.with_suffix(".json").read_text())
    files = sorted(str(p) for p in Path(work).glob(f"assign/f*/b{bucket:04d}.parquet"))
    a_parts, b_parts, pair_parts, sim_parts = [], [], [], []
    counts = {"pairs_found": 0, "similarities_computed": 0, "clusters": 0, "passes": 0}
    if files:
        skip = np.load(excluded) if excluded else np.empty(0, np.int64)  # sorted
        meta = ds.dataset(files, format="parquet").to_table(
            columns=["row", "cluster", "secondary", "priority"]
        )  # ~21 bytes per membership; the embeddings are streamed per pass
        row_all, cluster_all = meta.column("row").to_numpy(), meta.column("cluster").to_numpy()
        secondary_all = meta.column("secondary").to_numpy(zero_copy_only=False)
        prio_all = meta.column("priority").to_numpy()
        kept_all = _kept(row_all, skip)
        ids, sizes = np.unique(cluster_all[kept_all], return_counts=True)
        groups = _cluster_groups(dict(zip(ids.tolist(), sizes.tolist(), strict=True)), budget_rows)
        for group in groups:
            counts["passes"] += 1
            chosen = kept_all if len(groups) == 1 else kept_all & np.isin(cluster_all, group)
            kept = np.flatnonzero(chosen)
            order = kept[np.lexsort((row_all[kept], secondary_all[kept], cluster_all[kept]))]
            where = np.full(len(row_all), -1, np.int64)
            where[order] = np.arange(len(order))
            row, cluster = row_all[order], cluster_all[order]
            x = _sorted_vectors(files, where, row, reads)
            secondary, prio = secondary_all[order], prio_all[order]
            cuts = np.flatnonzero(np.diff(cluster)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(row)], strict=True):
                members, n_primary = row[lo:hi], int((~secondary[lo:hi]).sum())
                counts["clusters"] += 1
                if not n_primary or hi - lo < 2:
                    continue
                if config.mode == "semdedup":
                    out = semdedup_cluster(members, x[lo:hi], prio[lo:hi], config)
                    a_parts.append(members[out.removed])
                    b_parts.append(out.parent[out.removed])
                else:
                    out = cluster_edges(members, n_primary, x[lo:hi], config)
                    a_parts.append(out.a)
                    b_parts.append(out.b)
                    counts["pairs_found"] += out.n_pairs
                    if out.pairs is not None:
                        pair_parts.append(out.pairs)
                        sim_parts.append(out.pair_sims)
                counts["similarities_computed"] += out.n_compared
            del x  # the thread's buffer may be remade larger for the next group
    empty = np.empty(0, dtype=np.int64)
    if config.return_pairs and config.mode != "semdedup":
        pairs = np.concatenate(pair_parts) if pair_parts else np.empty((0, 2), dtype=np.int64)
        sims = np.concatenate(sim_parts) if sim_parts else np.empty(0, dtype=np.float32)
        pair_table = pa.table({"i": pairs[:, 0], "j": pairs[:, 1], "similarity": sims})
        _write(pair_table, Path(work) / "pairs" / final.name, {})
    edges = pa.table(
        {
            "a": np.concatenate(a_parts) if a_parts else empty,
            "b": np.concatenate(b_parts) if b_parts else empty,
        }
    )
    return _write(edges, final, counts)


def resolve_groups(
    rows: np.ndarray,
    labels: np.ndarray,
    vectors: np.ndarray,
    prio: np.ndarray,
    child: np.ndarray,
    config: SemanticDedupConfig,
    vector_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Decide every grouped row's representative and its exact similarity to it.

    Args:
        rows: ``(G,)`` global indices of rows in groups of two or more.
        labels: ``(G,)`` their component labels.
        vectors: their unit embeddings (or a larger array, see ``vector_index``).
        prio: ``(G,)`` keep priority.
        child: ``(G,)`` SemDeDup removed the row (``semdedup`` mode; its component is its tree).
        config: mode and threshold.
        vector_index: row of each item in ``vectors`` (default ``0..G-1``).

    Returns:
        ``(rep, similarity, n_compared)``: ``rep`` is the global index of the row it is a
        duplicate of (itself when kept), ``similarity`` the exact cosine to it (NaN when kept).
    """
    vi = np.arange(len(rows)) if vector_index is None else vector_index
    if config.mode == "witness":
        out = witness_groups(rows, labels, vectors, prio, config.threshold, vector_index=vi)
        rep = np.where(out.witness >= 0, out.witness, rows)
        return rep, out.similarity, out.n_compared
    dense = np.unique(labels, return_inverse=True)[1]
    if config.mode == "semdedup":  # the one member of each tree that SemDeDup kept
        root = np.full(dense.max() + 1 if len(dense) else 0, -1, dtype=np.int64)
        root[dense[~child]] = np.flatnonzero(~child)
        best = root[dense]
    else:
        best = representatives(dense, prio)
    removed = best != np.arange(len(rows))
    sim = np.full(len(rows), np.nan)
    idx = np.flatnonzero(removed)
    sim[idx] = exact_cosine(vectors, vi[idx], vectors, vi[best[idx]])
    return rows[best], sim, len(idx)


def resolve_bucket(work: str, bucket: int, config: SemanticDedupConfig, dim: int) -> dict[str, Any]:
    """Resolve the groups of one group bucket; write ``resolved/gGGGG.parquet``
    (``row``, ``rep``, ``similarity``)."""
    final = Path(work) / "resolved" / f"g{bucket:04d}.parquet"
    if final.exists():
        return json.loads(final.with_suffix(".json").read_text())
    files = sorted(str(p) for p in Path(work).glob(f"gather/f*/g{bucket:04d}.parquet"))
    if files:
        table = pa.concat_tables([pq.ParquetFile(f).read() for f in files])
        rows = table.column("row").to_numpy()
        vectors = np.concatenate([read_rows(f, dim) for f in files])
        rep, sim, n_compared = resolve_groups(
            rows,
            table.column("label").to_numpy(),
            vectors,
            table.column("priority").to_numpy(),
            table.column("child").to_numpy(zero_copy_only=False),
            config,
        )
    else:
        rows = rep = np.empty(0, dtype=np.int64)
        sim, n_compared = np.empty(0), 0
    out = pa.table({"row": rows, "rep": rep, "similarity": sim})
    return _write(out, final, {"rows": len(rows), "similarities_computed": n_compared})
