"""Exact dedup partitioned by hash gives the global answer, bucket by bucket, and resumes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixsieve.dedup.exact import content_hash, find_exact_duplicates
from pixsieve.dedup.exact_parts import exact_duplicates_partitioned
from pixsieve.dedup.hashparts import key_buckets


def _shards(tmp_path, n_shards: int = 6, per_shard: int = 400, distinct: int = 900):
    rng = np.random.default_rng(0)
    paths, tables = [], []
    for s in range(n_shards):
        content = rng.integers(0, distinct, per_shard)
        table = pa.table(
            {
                "shard_index": pa.array([s] * per_shard, pa.int64()),
                "position": pa.array(np.arange(per_shard) * 2, pa.int64()),
                "key": [f"s{s}-{p}" for p in range(per_shard)],
                "source": [f"shard-{s}.tar"] * per_shard,
                "hash": pa.array([content_hash(str(c).encode()) for c in content], pa.binary(16)),
            }
        )
        path = tmp_path / f"h{s}.parquet"
        pq.write_table(table, path)
        paths.append(path)
        tables.append(table)
    return paths, pa.concat_tables(tables)


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


@pytest.mark.parametrize("n_buckets", [1, 7, 64])
def test_partitioned_equals_global(tmp_path, n_buckets):
    paths, whole = _shards(tmp_path)
    expected = find_exact_duplicates(whole)
    assert expected.num_rows > 1000
    outs = exact_duplicates_partitioned(paths, tmp_path / "work", n_buckets=n_buckets)
    got = pa.concat_tables([pq.read_table(p) for p in outs])
    assert _rows(got) == _rows(expected)


def test_resume_skips_finished_partitions(tmp_path):
    paths, whole = _shards(tmp_path, n_shards=3)
    work = tmp_path / "work"
    exact_duplicates_partitioned(paths, work, n_buckets=5)
    done = sorted(work.glob("exact-out/*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in done]
    (work / "exact-out" / "b0002.parquet").unlink()  # as if interrupted before bucket 2
    outs = exact_duplicates_partitioned(paths, work, n_buckets=5)
    assert [p.stat().st_mtime_ns for p in done if p.name != "b0002.parquet"] == [
        s for p, s in zip(done, stamps, strict=True) if p.name != "b0002.parquet"
    ]
    got = pa.concat_tables([pq.read_table(p) for p in outs])
    assert _rows(got) == _rows(find_exact_duplicates(whole))


def test_memory_limit_sets_the_bucket_count(tmp_path):
    paths, whole = _shards(tmp_path, n_shards=2)
    outs = exact_duplicates_partitioned(paths, tmp_path / "w", memory_limit=(400 << 20) + 200_000)
    assert len(outs) > 1
    got = pa.concat_tables([pq.read_table(p) for p in outs])
    assert _rows(got) == _rows(find_exact_duplicates(whole))


def test_key_buckets_equal_values_meet():
    values = pa.array(["a", "bb", "", "a", None, "bb", "ccc"] * 3)
    b = key_buckets(values, 5)
    assert b[0] == b[3] and b[1] == b[5] and len(set(b.tolist())) > 1
    sliced = key_buckets(values.slice(3), 5)
    np.testing.assert_array_equal(sliced, b[3:])
    ints = key_buckets(pa.array([7, 8, 7]), 97)
    assert ints[0] == ints[2]
