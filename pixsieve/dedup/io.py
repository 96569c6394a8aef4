"""Parquet in and out for semantic dedup: embeddings computed anywhere, duplicates as a table.

Input is a Parquet file or directory with an id column and an embedding column (``list`` or
``fixed_size_list`` of numbers, e.g. NeMo Curator's ``image_embedding``). It is streamed batch by
batch into one preallocated float32 array. Output is ``duplicates.parquet``: one row per removed
id with the id it duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pixsieve.dedup.result import DedupResult
from pixsieve.errors import InputError

Progress = Callable[[str, int, int], None]

DUPLICATES_FILE: str = "duplicates.parquet"
SUMMARY_FILE: str = "dedup.json"


@dataclass
class EmbeddingTable:
    """Embeddings read from Parquet with their ids and optional keep-policy columns."""

    ids: pa.Array
    embeddings: np.ndarray
    aesthetic: np.ndarray | None = None
    resolution: np.ndarray | None = None


def _open(path: str | Path) -> ds.Dataset:
    try:
        dataset = ds.dataset(str(path), format="parquet")
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"cannot read Parquet from {path}: {exc}") from exc
    if not dataset.files:
        raise InputError(f"no Parquet files under {path}")
    return dataset


def _embedding_dim(dataset: ds.Dataset, column: str) -> int:
    kind = dataset.schema.field(column).type
    if pa.types.is_fixed_size_list(kind):
        value_type, dim = kind.value_type, kind.list_size
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        value_type, dim = kind.value_type, -1
    else:
        raise InputError(f"column {column!r} must be a list of floats, got {kind}")
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise InputError(f"column {column!r} must hold numbers, got list of {value_type}")
    if dim < 0:
        for batch in dataset.to_batches(columns=[column], batch_size=1024):
            lengths = pc.list_value_length(batch.column(0)).drop_null()
            if len(lengths):
                dim = int(lengths[0].as_py())
                break
    return max(dim, 0)


def _float_column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    col = pc.cast(batch.column(name), pa.float64(), safe=False)
    return col.fill_null(np.nan).to_numpy(zero_copy_only=False)


def read_embeddings(
    path: str | Path,
    *,
    id_column: str = "id",
    embedding_column: str = "embedding",
    score_column: str | None = None,
    width_column: str | None = None,
    height_column: str | None = None,
    progress: Progress | None = None,
) -> EmbeddingTable:
    """Read ids, embeddings and optional score / size columns from Parquet.

    Raises:
        InputError: missing column, embeddings that are not numeric lists, rows of another
            dimension, null or NaN/inf embeddings, null or repeated ids.
    """
    dataset = _open(path)
    wanted = [id_column, embedding_column, score_column, width_column, height_column]
    columns = [c for c in dict.fromkeys(wanted) if c]
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(map(repr, missing))} in {path}; "
            f"available: {', '.join(dataset.schema.names)}"
        )
    n = dataset.count_rows()
    dim = _embedding_dim(dataset, embedding_column)
    emb = np.empty((n, dim), dtype=np.float32)
    extra: dict[str, np.ndarray] = {c: np.empty(n) for c in columns[2:]}
    ids: list[pa.Array] = []
    pos = 0
    for batch in dataset.to_batches(columns=columns, batch_size=65536):
        rows = batch.num_rows
        bid = batch.column(id_column)
        col = batch.column(embedding_column)

        def where(mask: np.ndarray, bid: pa.Array = bid) -> str:
            first = int(np.argmax(mask))
            return f"{int(mask.sum())} row(s), first id {bid[first].as_py()!r}"

        if col.null_count:
            raise InputError(f"null embeddings in {where(col.is_null().to_numpy(False))}")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if (lengths != dim).any():
            bad = lengths != dim
            raise InputError(
                f"embeddings must all have {dim} dimensions; {where(bad)} has "
                f"{int(lengths[np.argmax(bad)])}"
            )
        values = col.flatten()
        if values.null_count:
            raise InputError(f"embedding column {embedding_column!r} contains null values")
        block = np.asarray(values.to_numpy(zero_copy_only=False)).reshape(rows, dim)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            raise InputError(f"NaN or inf in embeddings: {where(~finite)}")
        emb[pos : pos + rows] = block
        for name, out in extra.items():
            out[pos : pos + rows] = _float_column(batch, name)
        ids.append(bid if isinstance(bid, pa.Array) else pa.concat_arrays(bid.chunks))
        pos += rows
        if progress:
            progress("read", pos, n)
    id_type = dataset.schema.field(id_column).type
    id_array = pa.concat_arrays(ids) if ids else pa.array([], type=id_type)
    if id_array.null_count:
        raise InputError(f"id column {id_column!r} has {id_array.null_count} null value(s)")
    if n and pc.count_distinct(id_array).as_py() != n:
        raise InputError(f"id column {id_column!r} has repeated values; ids must be unique")
    resolution = None
    if width_column and height_column:
        resolution = np.stack([extra[width_column], extra[height_column]], axis=1)
    return EmbeddingTable(
        ids=id_array,
        embeddings=emb,
        aesthetic=extra.get(score_column) if score_column else None,
        resolution=resolution,
    )


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
    pq.write_table(duplicates_table(ids, result), target)
    summary = {**(extra or {}), **result.summary()}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return target
