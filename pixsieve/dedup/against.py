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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pixsieve.dedup.crossassign import cross_assign_file, earlier_counts
from pixsieve.dedup.index import EarlierRun, earlier_radius, vectors_path
from pixsieve.dedup.partition import FileTask, unpack_into
from pixsieve.dedup.sources import Source

#: Rows of each side multiplied at once (a 4096² float32 block is 64 MiB).
BLOCK: int = 4096
#: New rows multiplied at once with the earlier rows in their centroid-cosine window.
NEW_BLOCK: int = 256
#: Candidates: float16-stored products this close below the threshold are recomputed in float64
#: from the float32 store. Rounding a unit vector to float16 moves it by at most 2⁻¹¹ (4.9e-4)
#: of its length, so its cosine to a unit vector moves by at most that, plus float32 rounding.
MARGIN: float = 1e-3
#: Added to the centroid-cosine window ``sqrt(2 (1 - threshold))`` against float32 rounding.
WINDOW_SLACK: float = 1e-3


@dataclass
class _Best:
    """Per new membership, its most similar earlier membership so far (file, position, cosine)."""

    sim: np.ndarray
    file: np.ndarray
    pos: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Best:
        """No match yet for ``n`` new memberships."""
        return cls(np.full(n, -np.inf), np.full(n, -1, np.int64), np.full(n, -1, np.int64))

    def update(self, rows: np.ndarray, file: np.ndarray, pos: np.ndarray, sim: np.ndarray) -> None:
        """Take the pairs ``(rows[i], file[i], pos[i], sim[i])`` that beat the best so far."""
        if not len(rows):
            return
        order = np.lexsort((-sim, rows))
        rows, file, pos, sim = rows[order], file[order], pos[order], sim[order]
        first = np.r_[True, rows[1:] != rows[:-1]]
        rows, file, pos, sim = rows[first], file[first], pos[first], sim[first]
        better = sim > self.sim[rows]
        rows = rows[better]
        self.sim[rows], self.file[rows], self.pos[rows] = sim[better], file[better], pos[better]


def _candidates(
    xn: np.ndarray,
    new_rows: np.ndarray,
    new_sim: np.ndarray,
    xo: np.ndarray,
    old_sim: np.ndarray,
    cut: float,
    window: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs ``(new row, row of xo)`` whose float32 product is at least ``cut``, multiplying a
    block of new rows only with the rows of ``xo`` whose centroid cosine (``old_sim``,
    ascending) is within ``window`` of the block's (``new_sim``). Returns also the products."""
    found_i, found_j = [], []
    compared = 0
    order = np.argsort(new_sim, kind="stable")
    new_rows, new_sim = new_rows[order], new_sim[order]
    for i0 in range(0, len(new_rows), NEW_BLOCK):
        rows = new_rows[i0 : i0 + NEW_BLOCK]
        lo = np.searchsorted(old_sim, new_sim[i0] - window)
        hi = np.searchsorted(old_sim, new_sim[i0 : i0 + NEW_BLOCK][-1] + window, "right")
        a = xn[rows]
        for j0 in range(lo, hi, BLOCK):
            block = xo[j0 : min(hi, j0 + BLOCK)]
            i, j = np.nonzero(a @ block.T >= cut)
            compared += len(rows) * len(block)
            found_i.append(rows[i])
            found_j.append(j0 + j)
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), compared
    return np.concatenate(found_i), np.concatenate(found_j), compared


def _gather_f32(pieces: list[np.ndarray], perm: np.ndarray) -> np.ndarray:
    """Rows ``perm`` of the float16 ``pieces`` (one after the other) as one float32 array:
    the rows are moved as float16 and converted once, contiguously (a casting scatter or a
    float32 copy before the reordering costs twice as much)."""
    return np.concatenate(pieces)[perm].astype(np.float32)


def _exact(
    xn: np.ndarray, i: np.ndarray, f: np.ndarray, pos: np.ndarray, f32: list[np.ndarray]
) -> np.ndarray:
    """Float64 cosines of new rows ``i`` and earlier float32 rows ``pos`` of stores ``f``."""
    out = np.empty(len(i))
    for file in np.unique(f):
        sel = np.flatnonzero(f == file)
        xo = f32[file][pos[sel]].astype(np.float64)
        out[sel] = np.einsum("ij,ij->i", xn[i[sel]].astype(np.float64), xo)
    return out


def _earlier_files(
    earlier: list[tuple[int, str, int, int]], lo: int, hi: int
) -> Iterator[tuple[int, Path]]:
    """``(run position, kept part)`` of every earlier index part holding clusters ``lo..hi-1``."""
    for position, kept_dir, buckets, k in earlier:
        first, last = lo * buckets // k, (hi - 1) * buckets // k
        for b in range(first, last + 1):
            for part in sorted((Path(kept_dir) / f"b{b:04d}").glob("f*.parquet")):
                yield position, part


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

    Reads, of each earlier index part, the ``cluster`` and ``secondary`` columns, and the
    float16 embeddings of only the clusters that have new memberships (float32 ones only for
    candidates within :data:`MARGIN` of the threshold). ``earlier``: ``(position, kept
    directory, buckets, clusters)`` of each earlier index.
    """
    final = Path(work) / "cross" / f"b{bucket:04d}.parquet"
    if final.exists():
        return json.loads(final.with_suffix(".json").read_text())
    files = sorted(str(p) for p in Path(work).glob(f"assign/f*/b{bucket:04d}.parquet"))
    rows_out, runs_out, ids_out, sims_out = [], [], [], []
    compared = 0
    if files and hi > lo:
        sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
        xn = np.empty((sum(sizes), dim), np.float32)  # one file decoded at a time
        parts_new = []
        for f, at in zip(files, np.cumsum([0, *sizes[:-1]]), strict=True):
            table = pq.read_table(f, columns=["row", "cluster", "secondary", "embedding"])
            unpack_into(table.column("embedding"), xn, np.arange(at, at + len(table)))
            parts_new.append(table.drop_columns(["embedding"]))
        meta = pa.concat_tables(parts_new)
        n_row, n_cl = meta.column("row").to_numpy(), meta.column("cluster").to_numpy()
        n_sec = meta.column("secondary").to_numpy(zero_copy_only=False)
        order = np.lexsort((n_sec, n_cl))
        n_sorted = n_cl[order]
        clusters = np.unique(n_sorted)
        best = _Best.empty(len(n_row))
        parts = list(_earlier_files(earlier, lo, hi))
        spans, f16, f32, csim = [], [], [], []
        centroids = np.load(Path(work) / "centroids.npy")
        window = math.sqrt(max(0.0, 2.0 * (1.0 - threshold))) + WINDOW_SLACK
        for _, part in parts:
            meta = pq.read_table(part, columns=["cluster", "secondary", "centroid_sim"])
            csim.append(meta.column("centroid_sim").to_numpy())
            o_cl = meta.column("cluster").to_numpy()
            primaries = np.r_[
                0, np.cumsum(~meta.column("secondary").to_numpy(zero_copy_only=False))
            ]
            start, end = np.searchsorted(o_cl, clusters), np.searchsorted(o_cl, clusters, "right")
            spans.append((start, start + primaries[end] - primaries[start], end))
            f16.append(np.load(vectors_path(part, "f16"), mmap_mode="r"))
            f32.append(np.load(vectors_path(part, "f32"), mmap_mode="r"))
        new_lo = np.searchsorted(n_sorted, clusters)
        new_hi = np.searchsorted(n_sorted, clusters, "right")
        for ci in range(len(clusters)):
            # the cluster's earlier memberships from every part, primaries first
            pieces = [(f, sp[0][ci], sp[1][ci]) for f, sp in enumerate(spans)]
            pieces += [(f, sp[1][ci], sp[2][ci]) for f, sp in enumerate(spans)]
            pieces = [(f, x, y) for f, x, y in pieces if y > x]
            if not pieces:
                continue
            n_prim = sum(int(sp[1][ci] - sp[0][ci]) for sp in spans)
            so = np.concatenate([csim[f][x:y] for f, x, y in pieces])
            perm = np.r_[np.argsort(so[:n_prim]), n_prim + np.argsort(so[n_prim:])]
            src = np.concatenate([np.full(y - x, f) for f, x, y in pieces])
            pos = np.concatenate([np.arange(x, y) for f, x, y in pieces])
            xo = _gather_f32([f16[f][x:y] for f, x, y in pieces], perm)
            src, pos, so = src[perm], pos[perm], so[perm]
            ni = order[new_lo[ci] : new_hi[ci]]
            prim, sec = ni[~n_sec[ni]], ni[n_sec[ni]]
            for rows, m_lo, m_hi in ((prim, 0, n_prim), (prim, n_prim, len(xo)), (sec, 0, n_prim)):
                if len(rows) and m_hi > m_lo:
                    i, j, n = _candidates(
                        xn, rows, xn[rows] @ centroids[clusters[ci]], xo[m_lo:m_hi],
                        so[m_lo:m_hi], threshold - MARGIN, window,
                    )  # fmt: skip
                    compared += n
                    j += m_lo
                    sim = _exact(xn, i, src[j], pos[j], f32)
                    hit = sim >= threshold
                    best.update(i[hit], src[j[hit]], pos[j[hit]], sim[hit])
        hit = np.flatnonzero(best.file >= 0)
        for f in np.unique(best.file[hit]):
            mine = hit[best.file[hit] == f]
            position, part = parts[f]
            ids = pq.read_table(part, columns=["id"]).column("id").combine_chunks()
            rows_out.append(n_row[mine])
            runs_out.append(np.full(len(mine), position, np.int32))
            ids_out.append(ids.take(pa.array(best.pos[mine])))
            sims_out.append(best.sim[mine])
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


def search_earlier(
    run: Any,
    work: Path,
    task: FileTask,
    sources: list[Source],
    earlier: list[EarlierRun],
    centroids_path: Path,
    n_buckets: int,
    border: tuple[Any, ...],
    threshold: float,
) -> tuple[pa.Table, dict[str, int]]:
    """The earlier phase: for each centroid set of the earlier runs (a prefix of this run's,
    :mod:`pixsieve.dedup.recluster`), the new items' cross-search memberships
    (:mod:`pixsieve.dedup.crossassign`, into ``work/xK``), then :func:`cross_bucket` over every
    bucket.

    Args:
        run: a ``map_calls``.
        border: ``(border candidates, threshold, slack)``.
    Returns:
        :func:`earlier_matches` and counts: ``earlier_similarities``, ``earlier_memberships``
        (new items' cross-search memberships), ``earlier_by_radius`` (new items searched by the
        radius scheme).
    """
    centroids = np.load(centroids_path)
    groups: dict[int, list[tuple[int, EarlierRun]]] = {}
    for position, r in enumerate(earlier):
        groups.setdefault(int(r.meta["clusters"]), []).append((position, r))
    crossed, works = [], []
    counts = {"earlier_memberships": 0, "earlier_by_radius": 0}
    for k_r, runs in sorted(groups.items()):
        bucket_of = (np.arange(k_r, dtype=np.int64) * n_buckets // k_r).astype(np.int64)
        base = work / f"x{k_r}"
        base.mkdir(exist_ok=True)
        path, costs = base / "centroids.npy", base / "costs.npz"
        if not costs.exists():
            np.save(path, centroids[:k_r])
            members, primaries = earlier_counts([r for _, r in runs], k_r)
            radius = earlier_radius([r for _, r in runs], k_r)
            np.savez(base / "costs.tmp.npz", members=members, primaries=primaries, radius=radius)
            (base / "costs.tmp.npz").rename(costs)
        mine = replace(task, work=str(base), read=task.read or task.work)
        calls = [
            (mine, s, i, str(path), bucket_of, *border, str(costs)) for i, s in enumerate(sources)
        ]
        assigned = list(run(cross_assign_file, calls))
        spec = [(position, str(r.kept_dir), r.buckets, k_r) for position, r in runs]
        bounds = [np.searchsorted(bucket_of, [b, b + 1]) for b in range(n_buckets)]
        calls = [
            (str(base), b, int(lo), int(hi), spec, threshold, task.dim)
            for b, (lo, hi) in enumerate(bounds)
        ]
        crossed += list(run(cross_bucket, calls))
        counts["earlier_memberships"] += sum(a["memberships"] for a in assigned)
        counts["earlier_by_radius"] += sum(a["by_radius"] for a in assigned)
        works.append(base)
    counts["earlier_similarities"] = sum(c["similarities_computed"] for c in crossed)
    return earlier_matches(works, n_buckets), counts


def earlier_matches(work: Path | list[Path], buckets: int) -> pa.Table:
    """Per new row matched in any bucket (of any of the ``work`` directories), its most
    similar earlier kept item, by row."""
    works = work if isinstance(work, list) else [work]
    files = [str(w / "cross" / f"b{b:04d}.parquet") for w in works for b in range(buckets)]
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
