"""Arrow conversions for batches and cached per-sample tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pixsieve.batch import STATUS_NAMES, ImageBatch


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
    return np.stack([np.asarray(v, dtype=np.float32) for v in column.to_pylist()])


def batch_to_table(batch: ImageBatch) -> pa.Table:
    """The per-sample record of a processed batch (no bytes, no pixels)."""
    n = len(batch)
    data: dict[str, pa.Array] = {
        "position": pa.array(batch.position),
        "key": pa.array(batch.key.tolist(), pa.string()),
        "members": pa.array(batch.members, pa.list_(pa.string())),
        "status": pa.array([STATUS_NAMES[s] for s in batch.status], pa.string()),
        "reason": pa.array(batch.reason, pa.string()),
        "width": pa.array(batch.width if batch.width is not None else np.zeros(n, np.int32)),
        "height": pa.array(batch.height if batch.height is not None else np.zeros(n, np.int32)),
    }
    for name, values in batch.columns.items():
        data[name] = array_to_arrow(values)
    return pa.table(data)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder, cast and null-fill ``table`` to ``schema`` (extra columns are appended)."""
    n = table.num_rows
    columns, fields = [], []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.nulls(n, f.type))
        fields.append(f)
    for name in table.column_names:
        if name not in schema.names:
            columns.append(table[name])
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def mark_errors(table: pa.Table, reason: str, keys: set[str] | None = None) -> pa.Table:
    """Rows not already errors become errors with ``reason`` (``{key}`` is filled in).

    All rows, or only those whose key is in ``keys`` (nothing to do for an empty set).
    """
    if (keys is not None and not keys) or table.num_rows == 0:
        return table
    status = table["status"].to_pylist()
    reasons = table["reason"].to_pylist()
    for i, key in enumerate(table["key"].to_pylist()):
        if status[i] != "error" and (keys is None or key in keys):
            status[i], reasons[i] = "error", reason.replace("{key}", str(key))
    table = table.set_column(table.column_names.index("status"), "status", pa.array(status))
    return table.set_column(
        table.column_names.index("reason"), "reason", pa.array(reasons, pa.string())
    )
