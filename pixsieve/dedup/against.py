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
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pixsieve.dedup.partition import unpacked

#: Rows of each side multiplied at once (a 4096² float32 block is 64 MiB).
BLOCK: int = 4096
#: float32 products this close below the threshold are recomputed in float64.
SLACK: float = 1e-4


def _earlier_memberships(
    earlier: list[tuple[int, str, int, int]], lo: int, hi: int, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array, np.ndarray]:
    """``(run, cluster, secondary, id, embedding)`` of the earlier kept memberships of
    clusters ``lo..hi-1``, read from the buckets of each earlier index that hold them."""
    runs, clusters, secondary, ids, vectors = [], [], [], [], []
    flt = (pc.field("cluster") >= lo) & (pc.field("cluster") < hi)
    for position, kept_dir, buckets, k in earlier:
        first, last = lo * buckets // k, (hi - 1) * buckets // k
        files = [
            str(f)
            for b in range(first, last + 1)
            for f in sorted((Path(kept_dir) / f"b{b:04d}").glob("f*.parquet"))
        ]
        if not files:
            continue
        table = ds.dataset(files, format="parquet").to_table(filter=flt)
        runs.append(np.full(len(table), position, dtype=np.int32))
        clusters.append(table.column("cluster").to_numpy())
        secondary.append(table.column("secondary").to_numpy(zero_copy_only=False))
        ids.append(table.column("id").combine_chunks())
        vectors.append(unpacked(table.column("embedding"), dim))
    if not runs:
        none = np.empty(0, dtype=np.int32)
        return none, none, np.empty(0, bool), pa.array([], pa.string()), np.empty((0, dim))
    return (
        np.concatenate(runs),
        np.concatenate(clusters),
        np.concatenate(secondary),
        pa.concat_arrays(ids),
        np.concatenate(vectors),
    )


def _best_matches(
    xn: np.ndarray, sn: np.ndarray, xo: np.ndarray, so: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """For each new row, its most similar earlier row at or above ``threshold`` (exact cosine),
    never pairing two secondaries. Returns ``(index into old or -1, similarity, compared)``."""
    best = np.full(len(xn), -1, dtype=np.int64)
    best_sim = np.full(len(xn), -np.inf)
    for i0 in range(0, len(xn), BLOCK):
        a = xn[i0 : i0 + BLOCK]
        for j0 in range(0, len(xo), BLOCK):
            s = a @ xo[j0 : j0 + BLOCK].T
            both = sn[i0 : i0 + BLOCK, None] & so[None, j0 : j0 + BLOCK]
            s[both] = -np.inf
            i, j = np.nonzero(s >= threshold - SLACK)
            if not len(i):
                continue
            exact = np.einsum("ij,ij->i", a[i].astype(np.float64), xo[j0 + j].astype(np.float64))
            hit = exact >= threshold
            for ii, jj, v in zip(i[hit] + i0, j[hit] + j0, exact[hit], strict=True):
                if v > best_sim[ii]:
                    best[ii], best_sim[ii] = jj, v
    return best, np.where(best >= 0, best_sim, np.nan), len(xn) * len(xo)


def cross_bucket(
    work: str,
    bucket: int,
    lo: int,
    hi: int,
    earlier: list[tuple[int, str, int, int]],
    threshold: float,
    dim: int,
) -> dict[str, Any]:
    """Match the new memberships of one bucket (clusters ``lo..hi-1``) with the earlier kept
    ones; write ``cross/bBBBB.parquet`` (``row``, ``run``, ``duplicate_of``, ``similarity``).

    ``earlier``: ``(position, kept directory, buckets, clusters)`` of each earlier index.
    """
    final = Path(work) / "cross" / f"b{bucket:04d}.parquet"
    if final.exists():
        return json.loads(final.with_suffix(".json").read_text())
    files = sorted(str(p) for p in Path(work).glob(f"assign/f*/b{bucket:04d}.parquet"))
    rows_out, runs_out, ids_out, sims_out = [], [], [], []
    compared = 0
    if files and hi > lo:
        new = ds.dataset(files, format="parquet").to_table(
            columns=["row", "cluster", "secondary", "embedding"]
        )
        n_row, n_cl = new.column("row").to_numpy(), new.column("cluster").to_numpy()
        n_sec = new.column("secondary").to_numpy(zero_copy_only=False)
        xn = unpacked(new.column("embedding"), dim)
        del new
        o_run, o_cl, o_sec, o_id, xo = _earlier_memberships(earlier, lo, hi, dim)
        n_order, o_order = np.argsort(n_cl, kind="stable"), np.argsort(o_cl, kind="stable")
        n_sorted, o_sorted = n_cl[n_order], o_cl[o_order]
        for c in np.intersect1d(n_sorted, o_sorted):
            ni = n_order[np.searchsorted(n_sorted, c) : np.searchsorted(n_sorted, c, "right")]
            oi = o_order[np.searchsorted(o_sorted, c) : np.searchsorted(o_sorted, c, "right")]
            best, sim, n = _best_matches(xn[ni], n_sec[ni], xo[oi], o_sec[oi], threshold)
            compared += n
            hit = best >= 0
            if hit.any():
                rows_out.append(n_row[ni[hit]])
                runs_out.append(o_run[oi[best[hit]]])
                ids_out.append(o_id.take(pa.array(oi[best[hit]])))
                sims_out.append(sim[hit])
    table = pa.table(
        {
            "row": np.concatenate(rows_out) if rows_out else np.empty(0, np.int64),
            "run": np.concatenate(runs_out) if runs_out else np.empty(0, np.int32),
            "duplicate_of": pa.concat_arrays(ids_out) if ids_out else pa.array([], pa.string()),
            "similarity": np.concatenate(sims_out) if sims_out else np.empty(0),
        }
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(table, tmp, compression="none")
    counts = {"matched_memberships": len(table), "similarities_computed": compared}
    final.with_suffix(".json").write_text(json.dumps(counts))
    tmp.rename(final)
    return counts


def earlier_matches(work: Path, buckets: int) -> pa.Table:
    """Per new row matched in any bucket, its most similar earlier kept item, by row."""
    files = [str(work / "cross" / f"b{b:04d}.parquet") for b in range(buckets)]
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
    return table.take(pa.array(first))
