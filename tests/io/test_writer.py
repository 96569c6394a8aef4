"""Output shards: full across calls, deterministic, atomic, original bytes, numbered."""

from __future__ import annotations

import tarfile
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from pixsieve.io.writer import ShardWriter, shards_needed


def writer(directory: Path, per_shard: int, first: int = 0) -> ShardWriter:
    return ShardWriter(
        fsspec.filesystem("file"),
        lambda n: f"{directory}/shards/{n:05d}.tar",
        lambda n: f"{directory}/metadata/{n:05d}.parquet",
        per_shard,
        first=first,
    )


def write_all(directory, n, per_shard, first=0):
    w = writer(directory, per_shard, first)
    numbers = [
        w.write([(f"{i:04d}.jpg", bytes([i]) * 10), (f"{i:04d}.txt", b"cap")], {"key": f"{i:04d}"})
        for i in range(n)
    ]
    return w.close(), numbers


def test_shards_fill_across_calls_and_hold_original_bytes(tmp_path):
    written, numbers = write_all(tmp_path, 25, 10, first=7)
    assert [p.rsplit("/", 1)[1] for p in written] == ["00007.tar", "00008.tar", "00009.tar"]
    assert numbers[:10] == [7] * 10 and numbers[-1] == 9
    with tarfile.open(written[0]) as tf:
        members = tf.getmembers()
        assert [m.name for m in members[:2]] == ["0000.jpg", "0000.txt"]
        assert tf.extractfile(members[2]).read() == bytes([1]) * 10
    meta = pq.read_table(str(tmp_path / "metadata" / "00009.parquet"))
    assert meta["key"].to_pylist() == [f"{i:04d}" for i in range(20, 25)]
    assert not list(tmp_path.rglob("*.tmp"))
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "00007.tar",
        "00008.tar",
        "00009.tar",
    ]  # tars only: WebDataset readers can be pointed at the folder


def test_deterministic_bytes(tmp_path):
    a, _ = write_all(tmp_path / "a", 5, 10)
    b, _ = write_all(tmp_path / "b", 5, 10)
    assert Path(a[0]).read_bytes() == Path(b[0]).read_bytes()


def test_refuses_unsafe_names(tmp_path):
    w = writer(tmp_path, 10)
    with pytest.raises(ValueError, match="unsafe"):
        w.write([("../evil.jpg", b"x")], {})


def test_abort_leaves_nothing(tmp_path):
    w = writer(tmp_path, 10)
    w.write([("a.jpg", b"x")], {"key": "a"})
    w.abort()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_repeated_key_starts_a_new_shard(tmp_path):
    w = writer(tmp_path, 10)
    numbers = [w.write([(f"{k}.jpg", b"x")], {"key": k}, key=k) for k in ("a", "b", "a", "c")]
    w.close()
    assert numbers == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "keys, per_shard",
    [
        ([], 3),
        (list("abcdefg"), 3),
        (list("abcabc"), 10),
        (list("aabba"), 2),
        (list("abcdabcd"), 4),
        ([f"k{i % 5}" for i in range(40)], 7),
    ],
)
def test_shards_needed_is_the_writers_own_count(tmp_path, keys, per_shard):
    w = writer(tmp_path, per_shard)
    for k in keys:
        w.write([(f"{k}.jpg", b"x")], {"key": k}, key=k)
    assert len(w.close()) == shards_needed(keys, per_shard)
