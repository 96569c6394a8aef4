"""Parquet in and out for semantic dedup: embeddings computed anywhere, duplicates as a table.

Input is a Parquet file or directory with an id column and an embedding column (``list`` or
``fixed_size_list`` of numbers, e.g. NeMo Curator's ``image_embedding``). It is streamed batch by
batch into one preallocated float32 array (:mod:`pixsieve.dedup.sources` checks each batch).
Output is ``duplicates.parquet``: one row per removed id with the id it duplicates, from an
in-memory result (:func:`write_duplicates`) or from the files of a partitioned run
(:func:`write_partitioned_output`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pixsieve.dedup.config import SemanticDedupConfig
from pixsieve.dedup.result import DedupResult, describe_groups
from pixsieve.dedup.sources import (
    Columns,
    InputError,
    Source,
    parquet_files,
    plan_sources,
    read_blocks,
    read_ids,
)
from pixsieve.io.schemas import conform, dedup_duplicates

Progress = Callable[[str, int, int], None]

DUPLICATES_FILE: str = "duplicates.parquet"
SUMMARY_FILE: str = "dedup.json"
#: ``reason`` of a row removed as a duplicate of an item kept in this run.
REASON_SEMANTIC: str = "semantic_duplicate"
#: ``reason`` of a new row removed as a duplicate of an item an earlier run kept (``--against``).
REASON_EARLIER: str = "duplicate_of_earlier"


@dataclass
class EmbeddingTable:
    """Embeddings read from Parquet with their ids and optional keep-policy columns."""

    ids: pa.Array
    embeddings: np.ndarray
    aesthetic: np.ndarray | None = None
    resolution: np.ndarray | None = None


def read_embeddings(
    path: str | Path | Sequence[str | Path],
    *,
    id_column: str = "id",
    embedding_column: str = "embedding",
    score_column: str | None = None,
    width_column: str | None = None,
    height_column: str | None = None,
    progress: Progress | None = None,
) -> EmbeddingTable:
    """Read ids, embeddings and optional score / size columns from Parquet into memory.

    ``path`` is a file, a directory, a glob or a list of them (:func:`parquet_files`).

    Raises:
        InputError: missing column, embeddings that are not numeric lists, rows of another
            dimension, null or NaN/inf embeddings, null or repeated ids.
    """
    columns = Columns(
        id=id_column,
        embedding=embedding_column,
        score=score_column,
        width=width_column if width_column and height_column else None,
        height=height_column if width_column and height_column else None,
    )
    sources, dim = plan_sources(parquet_files(path), columns)
    n = sum(s.rows for s in sources)
    emb = np.empty((n, dim), dtype=np.float32)
    aesthetic = np.empty(n) if columns.score else None
    resolution = np.empty((n, 2)) if columns.width else None
    ids: list[pa.Array] = []
    pos = 0
    for source in sources:
        for block in read_blocks(source.path, columns, dim, 65536):
            rows = len(block.embeddings)
            emb[pos : pos + rows] = block.embeddings
            if aesthetic is not None:
                aesthetic[pos : pos + rows] = block.aesthetic
            if resolution is not None:
                resolution[pos : pos + rows] = block.resolution
            bid = block.ids
            ids.append(bid if isinstance(bid, pa.Array) else pa.concat_arrays(bid.chunks))
            pos += rows
            if progress:
                progress("read", pos, n)
    id_array = pa.concat_arrays(ids) if ids else pa.array([], type=pa.string())
    if id_array.null_count:
        raise InputError(f"id column {id_column!r} has {id_array.null_count} null value(s)")
    if n and pc.count_distinct(id_array).as_py() != n:
        raise InputError(f"id column {id_column!r} has repeated values; ids must be unique")
    return EmbeddingTable(ids=id_array, embeddings=emb, aesthetic=aesthetic, resolution=resolution)


def duplicates_table(ids: pa.Array, result: DedupResult) -> pa.Table:
    """One row per removed item: its id, the id it duplicates and how the group looks."""
    idx = result.removed_indices()
    return pa.table(
        {
            "id": ids.take(pa.array(idx)),
            "duplicate_of": ids.take(pa.array(result.duplicate_of[idx])),
            "similarity": pa.array(result.similarity[idx], type=pa.float32()),
            "component_id": pa.array(result.component_id[idx], type=pa.int64()),
            "component_size": pa.array(result.component_size[idx], type=pa.int64()),
            "chained": pa.array(result.chained[idx], type=pa.bool_()),
            "reason": pa.array([REASON_SEMANTIC] * len(idx), pa.string()),
            "duplicate_of_run": pa.nulls(len(idx), pa.string()),
        }
    )


def write_duplicates(
    out_dir: str | Path, ids: pa.Array, result: DedupResult, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``duplicates.parquet`` and ``dedup.json`` (summary) under ``out_dir``; return the
    Parquet path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / DUPLICATES_FILE
    pq.write_table(conform(duplicates_table(ids, result), dedup_duplicates(ids.type)), target)
    summary = {**(extra or {}), **result.summary()}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return target


def resolved_rows(work: Path, g_buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, rep, similarity)`` of every grouped row, ascending by row."""
    files = [str(work / "resolved" / f"g{g:04d}.parquet") for g in range(g_buckets)]
    if not files:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0)
    table = ds.dataset(files, format="parquet").to_table()
    rows = table.column("row").to_numpy()
    order = np.argsort(rows, kind="stable")
    return (
        rows[order],
        table.column("rep").to_numpy()[order],
        table.column("similarity").to_numpy()[order],
    )


def write_partitioned_output(
    work: Path,
    out: Path,
    sources: list[Source],
    columns: Columns,
    config: SemanticDedupConfig,
    g_buckets: int,
    earlier: pa.Table | None = None,
    run_ids: Sequence[str] = (),
) -> dict[str, int]:
    """Write ``duplicates.parquet``: one row per removed id, ascending by input order.

    ``earlier``: new rows removed as duplicates of earlier runs' kept items (``row``, ``run``
    position in ``run_ids``, ``duplicate_of`` id, ``similarity``), see
    :func:`pixsieve.dedup.against.earlier_matches`.
    """
    rows, rep, sim = resolved_rows(work, g_buckets)
    desc = describe_groups(rows, rep, sim, config)
    removed = desc["removed"]
    r_rows, r_rep = rows[removed], rep[removed]
    ids = ids_of_rows(sources, columns.id, np.concatenate([r_rows, r_rep]))
    out.mkdir(parents=True, exist_ok=True)
    n_in = len(r_rows)
    table = pa.table(
        {
            "id": ids[:n_in],
            "duplicate_of": ids[n_in:],
            "similarity": pa.array(sim[removed], type=pa.float32()),
            "component_id": pa.array(desc["component_id"][removed], type=pa.int64()),
            "component_size": pa.array(desc["component_size"][removed], type=pa.int64()),
            "chained": pa.array(desc["chained"][removed], type=pa.bool_()),
            "reason": pa.array([REASON_SEMANTIC] * n_in, pa.string()),
            "duplicate_of_run": pa.nulls(n_in, pa.string()),
        }
    )
    n_earlier = 0 if earlier is None else len(earlier)
    if n_earlier:
        e_rows = earlier.column("row").to_numpy()
        names = np.asarray(list(run_ids), dtype=object)[earlier.column("run").to_numpy()]
        cross = pa.table(
            {
                "id": ids_of_rows(sources, columns.id, e_rows),
                "duplicate_of": earlier.column("duplicate_of"),
                "similarity": earlier.column("similarity").cast(pa.float32()),
                "component_id": pa.nulls(n_earlier, pa.int64()),
                "component_size": pa.nulls(n_earlier, pa.int64()),
                "chained": pa.array(np.zeros(n_earlier, bool)),
                "reason": pa.array([REASON_EARLIER] * n_earlier, pa.string()),
                "duplicate_of_run": pa.array(names.tolist(), pa.string()),
            }
        )
        order = np.argsort(np.concatenate([r_rows, e_rows]), kind="stable")
        try:  # earlier ids are stored as strings; they take this run's id type
            cross = cross.cast(table.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(
                f"ids of an earlier run do not convert to this run's id type {table.schema[0].type}"
            ) from exc
        table = pa.concat_tables([table, cross]).take(pa.array(order))
    tmp = out / (DUPLICATES_FILE + ".tmp")
    pq.write_table(conform(table, dedup_duplicates(table.schema.field("id").type)), tmp)
    tmp.rename(out / DUPLICATES_FILE)
    return {
        "components": desc["n_components"],
        "removed": int(removed.sum()) + n_earlier,
        "removed_in_run": int(removed.sum()),
        "removed_as_earlier": n_earlier,
        "chained_components": desc["n_chained"],
    }


def ids_of_rows(sources: list[Source], column: str, rows: np.ndarray) -> pa.Array:
    """The ids of global ``rows`` (any order), reading one file's id column at a time."""
    order = np.argsort(rows, kind="stable")
    parts: list[pa.Array] = []
    sorted_rows = rows[order]
    for source in sources:
        lo, hi = np.searchsorted(sorted_rows, [source.offset, source.offset + source.rows])
        if hi > lo:
            ids = read_ids(source.path, column)
            parts.append(ids.take(pa.array(sorted_rows[lo:hi] - source.offset)))
    if not parts:  # no rows: an empty array of the id column's own type
        kind = pq.read_schema(sources[0].path).field(column).type if sources else pa.string()
        return pa.array([], kind)
    merged = pa.concat_arrays(parts)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return merged.take(pa.array(inverse))
