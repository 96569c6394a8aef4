"""Exact dedup: the first occurrence in input order wins, across shards."""

from __future__ import annotations

import pyarrow as pa

from pixsieve.dedup.exact import content_hash, find_exact_duplicates


def test_first_occurrence_in_input_order_wins():
    h = {c: content_hash(c.encode()) for c in "xyz"}
    table = pa.table(
        {
            "shard_index": [1, 0, 0, 1, 2],
            "position": [0, 5, 1, 1, 0],
            "key": ["b0", "a5", "a1", "b1", "c0"],
            "source": ["B", "A", "A", "B", "C"],
            "hash": [h["x"], h["x"], h["y"], h["y"], h["z"]],
        }
    )
    got = sorted(
        (r["shard_index"], r["position"], r["duplicate_of"], r["duplicate_of_source"])
        for r in find_exact_duplicates(table).to_pylist()
    )
    assert got == [(1, 0, "a5", "A"), (1, 1, "a1", "A")]


def test_no_rows_and_no_duplicates():
    empty = pa.table({"shard_index": pa.array([], pa.int64()), "hash": pa.array([], pa.binary(16))})
    assert find_exact_duplicates(empty).num_rows == 0
    one = pa.table(
        {
            "shard_index": [0],
            "position": [0],
            "key": ["a"],
            "source": ["A"],
            "hash": [content_hash(b"a")],
        }
    )
    assert find_exact_duplicates(one).num_rows == 0


def test_hash_is_16_bytes_and_content_sensitive():
    assert len(content_hash(b"abc")) == 16
    assert content_hash(b"abc") != content_hash(b"abd")
