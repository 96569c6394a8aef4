"""Arrow conversions for batches and cached per-sample tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pixsieve.batch import STATUS_NAMES, ImageBatch, split_reason
from pixsieve.io.schemas import sample_id


def array_to_arrow(values: np.ndarray) -> pa.Array:
    """Convert a per-sample column to Arrow; 2-D float arrays become fixed-size lists.

    Rows of a 2-D column that are all NaN (nothing computed for that sample) become nulls.
    """
    values = np.asarray(values)
    if values.ndim == 2:
        flat = pa.array(values.astype(np.float32, copy=False).reshape(-1))
        arr = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        missing = np.isnan(values).all(axis=1) if values.dtype.kind == "f" else None
        if missing is not None and missing.any():
            arr = pa.FixedSizeListArray.from_arrays(flat, values.shape[1], mask=pa.array(missing))
        return arr
    if values.dtype == object:
        items = values.tolist()
        if all(v is None for v in items):
            return pa.nulls(len(items))  # null type: unifies with whatever other batches hold
        return pa.array(items)
    if values.dtype.kind == "f":
        return pa.array(values, from_pandas=True)  # NaN → null
    return pa.array(values)


def embeddings_from_arrow(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Convert a (fixed-size) list column of floats to an ``(N, D)`` float32 array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
        return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    if column.null_count == 0:
        lengths = column.value_lengths().to_numpy(zero_copy_only=False)
        if (lengths == lengths[0]).all():
            values = column.flatten().to_numpy(zero_copy_only=False)
            return values.astype(np.float32, copy=False).reshape(-1, int(lengths[0]))
    return np.stack([np.asarray(v, dtype=np.float32) for v in column.to_pylist()])


def reason_columns(reasons: list[str | None]) -> tuple[pa.Array, pa.Array]:
    """The ``reason`` (stable code) and ``reason_detail`` (free text) columns of ``reasons``."""
    pairs = [split_reason(r) for r in reasons]
    return (
        pa.array([c for c, _ in pairs], pa.string()),
        pa.array([d for _, d in pairs], pa.string()),
    )


def set_fates(table: pa.Table, status: list[str], reasons: list[str | None]) -> pa.Table:
    """``table`` with its ``status``, ``reason`` and ``reason_detail`` columns replaced.

    ``reasons`` are full reasons (``"decode_error: ..."``), split by :func:`reason_columns`.
    """
    code, detail = reason_columns(reasons)
    for name, values in (("status", pa.array(status, pa.string())), ("reason", code)):
        table = table.set_column(table.column_names.index(name), name, values)
    if "reason_detail" in table.column_names:
        return table.set_column(table.column_names.index("reason_detail"), "reason_detail", detail)
    return table.add_column(table.column_names.index("reason") + 1, "reason_detail", detail)


def full_reasons(table: pa.Table) -> list[str | None]:
    """The full reasons of ``table``'s rows: ``reason`` and ``reason_detail`` joined again."""
    codes = table["reason"].to_pylist()
    if "reason_detail" not in table.column_names:
        return codes
    details = table["reason_detail"].to_pylist()
    return [
        c if d is None or c is None else f"{c}: {d}" for c, d in zip(codes, details, strict=True)
    ]


def batch_to_table(batch: ImageBatch) -> pa.Table:
    """The per-sample record of a processed batch (no bytes, no pixels)."""
    n = len(batch)
    code, detail = reason_columns(batch.reason)
    data: dict[str, pa.Array] = {
        "sample_id": pa.array([sample_id(batch.shard_index, int(p)) for p in batch.position]),
        "position": pa.array(batch.position),
        "key": pa.array(batch.key.tolist(), pa.string()),
        "members": pa.array(batch.members, pa.list_(pa.string())),
        "status": pa.array([STATUS_NAMES[s] for s in batch.status], pa.string()),
        "reason": code,
        "reason_detail": detail,
        "width": pa.array(batch.width if batch.width is not None else np.zeros(n, np.int32)),
        "height": pa.array(batch.height if batch.height is not None else np.zeros(n, np.int32)),
    }
    for name, values in batch.columns.items():
        data[name] = array_to_arrow(values)
    return pa.table(data)


def mark_errors(table: pa.Table, reason: str, keys: set[str] | None = None) -> pa.Table:
    """Rows not already errors become errors with ``reason`` (``{key}`` is filled in).

    All rows, or only those whose key is in ``keys`` (nothing to do for an empty set).
    """
    if (keys is not None and not keys) or table.num_rows == 0:
        return table
    status = table["status"].to_pylist()
    reasons = full_reasons(table)
    for i, key in enumerate(table["key"].to_pylist()):
        if status[i] != "error" and (keys is None or key in keys):
            status[i], reasons[i] = "error", reason.replace("{key}", str(key))
    return set_fates(table, status, reasons)
