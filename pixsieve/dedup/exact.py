"""Exact deduplication by a hash of the image bytes, decided before anything is decoded."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa


def content_hash(data: bytes) -> bytes:
    """16-byte BLAKE2b digest of the image bytes."""
    return hashlib.blake2b(data, digest_size=16).digest()


def find_exact_duplicates(hashes: pa.Table) -> pa.Table:
    """Mark every repeat of an image hash as a duplicate of its first occurrence.

    ``hashes`` has columns ``shard_index``, ``position``, ``key``, ``source`` and ``hash``
    (16-byte binary) in input order. Returns one row per duplicate: ``shard_index``,
    ``position``, ``duplicate_of`` (key of the first occurrence) and ``duplicate_of_source``.
    """
    empty = pa.table(
        {
            "shard_index": pa.array([], pa.int64()),
            "position": pa.array([], pa.int64()),
            "duplicate_of": pa.array([], pa.string()),
            "duplicate_of_source": pa.array([], pa.string()),
        }
    )
    if hashes.num_rows == 0:
        return empty
    order = np.lexsort((hashes["position"].to_numpy(), hashes["shard_index"].to_numpy()))
    hashes = hashes.take(pa.array(order))
    column = hashes["hash"].combine_chunks()
    n = len(column)
    if pa.types.is_fixed_size_binary(column.type):  # a view of Arrow's buffer, no copy
        width = column.type.byte_width
        data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
        raw = data[column.offset * width : (column.offset + n) * width].view(f"V{width}")
    else:
        raw = np.frombuffer(b"".join(column.to_pylist()), dtype="V16")
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    del raw, column
    winner = first[inverse]
    del first, inverse
    dup = np.flatnonzero(winner != np.arange(n))
    if len(dup) == 0:
        return empty
    of = pa.array(winner[dup])
    return pa.table(
        {
            "shard_index": pa.array(hashes["shard_index"].to_numpy()[dup], pa.int64()),
            "position": pa.array(hashes["position"].to_numpy()[dup], pa.int64()),
            "duplicate_of": hashes["key"].take(of).cast(pa.string()).combine_chunks(),
            "duplicate_of_source": hashes["source"].take(of).cast(pa.string()).combine_chunks(),
        }
    )
