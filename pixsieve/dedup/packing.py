"""Embeddings in partition files: one fixed-size binary value per row (``packed``), and the
readers that turn such a column back into float32 rows without a per-number decode.

A flat fixed-size column decodes as one memory copy, where a Parquet list column costs a
repetition and definition level per number.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def fixed_list(x: np.ndarray) -> pa.Array:
    """``(n, D)`` float32 rows as a fixed-size list array (no copy of the values)."""
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


def packed(x: np.ndarray) -> pa.Array:
    """``(n, D)`` float32 rows as one fixed-size binary value each (no copy of the values).

    Partition files store embeddings this way: a flat column decodes as one memory copy,
    where a Parquet list column costs a repetition and definition level per number.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    width = 4 * x.shape[1]
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(x), [None, pa.py_buffer(x.reshape(-1))]
    )


def unpack_into(column: pa.ChunkedArray | pa.Array, out: np.ndarray, rows: np.ndarray) -> None:
    """Write the packed embeddings of ``column`` into ``out[rows]`` chunk by chunk."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    dim = out.shape[1]
    pos = 0
    for chunk in chunks:
        n = len(chunk)
        if n:
            data = np.frombuffer(chunk.buffers()[1], dtype=np.float32)
            data = data[chunk.offset * dim : (chunk.offset + n) * dim].reshape(n, dim)
            out[rows[pos : pos + n]] = data
        pos += n


def read_packed_into(path: str, out: np.ndarray, where: np.ndarray, batch_rows: int = 8192) -> None:
    """Stream the packed ``embedding`` column of one Parquet file in batches and write its row
    ``r`` into ``out[where[r]]`` (rows with ``where[r] < 0`` are skipped). Batches keep the
    temporary memory small and reused: reading the whole column first costs a fresh copy of it
    (page faults that cost more system time than the copies)."""
    pos = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["embedding"]):
        n = len(batch)
        w = where[pos : pos + n]
        take = np.flatnonzero(w >= 0)
        if len(take):
            chunk = batch.column(0)
            data = np.frombuffer(chunk.buffers()[1], dtype=np.float32)
            data = data[chunk.offset * out.shape[1] : (chunk.offset + n) * out.shape[1]]
            data = data.reshape(n, out.shape[1])
            if len(take) == n:
                out[w] = data
            else:
                out[w[take]] = data[take]
        pos += n


def unpacked(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """The packed embeddings of ``column`` as one ``(n, dim)`` float32 array."""
    out = np.empty((len(column), dim), dtype=np.float32)
    unpack_into(column, out, np.arange(len(column)))
    return out
