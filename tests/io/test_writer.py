"""Output shards: full across calls, deterministic, atomic, original bytes."""

from __future__ import annotations

import tarfile
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from pixsieve.io.writer import ShardWriter


def write_all(directory, n, per_shard):
    fs = fsspec.filesystem("file")
    w = ShardWriter(fs, str(directory), "part-00000", per_shard)
    names = [
        w.write([(f"{i:04d}.jpg", bytes([i]) * 10), (f"{i:04d}.txt", b"cap")], {"key": f"{i:04d}"})
        for i in range(n)
    ]
    return w.close(), names


def test_shards_fill_across_calls_and_hold_original_bytes(tmp_path):
    written, names = write_all(tmp_path, 25, 10)
    assert [p.rsplit("/", 1)[1] for p in written] == [f"part-00000-{i:05d}.tar" for i in range(3)]
    assert names[:10] == ["part-00000-00000.tar"] * 10 and names[-1] == "part-00000-00002.tar"
    with tarfile.open(written[0]) as tf:
        members = tf.getmembers()
        assert [m.name for m in members[:2]] == ["0000.jpg", "0000.txt"]
        assert tf.extractfile(members[2]).read() == bytes([1]) * 10
    meta = pq.read_table(str(tmp_path / "part-00000-00002.parquet"))
    assert meta["key"].to_pylist() == [f"{i:04d}" for i in range(20, 25)]
    assert not list(tmp_path.glob("*.tmp"))


def test_deterministic_bytes(tmp_path):
    a, _ = write_all(tmp_path / "a", 5, 10)
    b, _ = write_all(tmp_path / "b", 5, 10)
    assert Path(a[0]).read_bytes() == Path(b[0]).read_bytes()


def test_refuses_unsafe_names(tmp_path):
    w = ShardWriter(fsspec.filesystem("file"), str(tmp_path), "p", 10)
    with pytest.raises(ValueError, match="unsafe"):
        w.write([("../evil.jpg", b"x")], {})


def test_abort_leaves_nothing(tmp_path):
    w = ShardWriter(fsspec.filesystem("file"), str(tmp_path), "p", 10)
    w.write([("a.jpg", b"x")], {"key": "a"})
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_repeated_key_starts_a_new_shard(tmp_path):
    w = ShardWriter(fsspec.filesystem("file"), str(tmp_path), "p", 10)
    names = [w.write([(f"{k}.jpg", b"x")], {"key": k}, key=k) for k in ("a", "b", "a", "c")]
    w.close()
    assert names == ["p-00000.tar", "p-00000.tar", "p-00001.tar", "p-00001.tar"]
