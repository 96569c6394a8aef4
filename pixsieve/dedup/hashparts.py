"""Partition rows by a hash of a key column, so equal keys always meet in one bucket.

Exact dedup (image content hashes) and the check that ids are unique both need "all rows with
this key" without holding every key in one process. :func:`key_buckets` maps each key to a
bucket with a vectorised 64-bit hash of its bytes (no Python loop); a per-file task writes its
rows into bucket files and a per-bucket task then sees every occurrence of its keys.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MUL = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: spreads every input bit over the whole word."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _powers(n: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = np.ones(max(n, 1), dtype=np.uint64)
        for i in range(1, len(out)):
            out[i] = out[i - 1] * _MUL
        return out


def key_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A ``uint64`` hash of every value (integers, strings, binary); nulls hash to 0."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    n = len(arr)
    if pa.types.is_integer(arr.type):
        h = _mix(np.asarray(arr.fill_null(0).to_numpy(), dtype=np.int64).view(np.uint64))
    elif pa.types.is_fixed_size_binary(arr.type):
        width = arr.type.byte_width
        data = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
        data = data[arr.offset * width : (arr.offset + n) * width].reshape(n, width)
        with np.errstate(over="ignore"):
            h = _mix((data.astype(np.uint64) * _powers(width)).sum(axis=1, dtype=np.uint64))
    else:
        if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
            arr = pc.cast(arr, pa.string()) if not pa.types.is_string(arr.type) else arr
            arr = arr.cast(pa.binary())
        arr = arr.cast(pa.large_binary())
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if n else np.empty(0, np.uint8)
        lengths = np.diff(offsets)
        body = data[offsets[0] : offsets[-1]].astype(np.uint64)
        pos = np.arange(len(body)) - np.repeat(offsets[:-1] - offsets[0], lengths)
        with np.errstate(over="ignore"):
            weighted = body * _powers(int(lengths.max()) if n else 1)[pos]
            cs = np.concatenate([[np.uint64(0)], np.cumsum(weighted, dtype=np.uint64)])
            ends = offsets[1:] - offsets[0]
            h = _mix((cs[ends] - cs[ends - lengths]) ^ lengths.astype(np.uint64))
    if arr.null_count:
        h = np.where(arr.is_null().to_numpy(zero_copy_only=False), np.uint64(0), h)
    return h


def key_buckets(values: pa.Array | pa.ChunkedArray, n_buckets: int) -> np.ndarray:
    """The bucket ``0..n_buckets-1`` of every value (equal values, equal buckets)."""
    return (key_hash(values) % np.uint64(max(1, n_buckets))).astype(np.int64)


def bucket_groups(bucket: np.ndarray) -> Iterator[np.ndarray]:
    """Positions into ``bucket`` grouped by its value, in value order (stable within a group)."""
    order = np.argsort(bucket, kind="stable")
    cuts = np.flatnonzero(np.diff(bucket[order])) + 1
    yield from np.split(order, cuts) if len(order) else []
