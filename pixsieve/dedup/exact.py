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
    raw = b"".join(hashes["hash"].to_pylist())
    digests = np.frombuffer(raw, dtype="V16")
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    winner = first[inverse]
    dup = np.flatnonzero(winner != np.arange(len(digests)))
    if len(dup) == 0:
        return empty
    keys = hashes["key"].to_numpy(zero_copy_only=False)
    sources = hashes["source"].to_numpy(zero_copy_only=False)
    return pa.table(
        {
            "shard_index": pa.array(hashes["shard_index"].to_numpy()[dup], pa.int64()),
            "position": pa.array(hashes["position"].to_numpy()[dup], pa.int64()),
            "duplicate_of": pa.array(keys[winner[dup]].tolist(), pa.string()),
            "duplicate_of_source": pa.array(sources[winner[dup]].tolist(), pa.string()),
        }
    )
