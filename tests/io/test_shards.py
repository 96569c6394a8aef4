"""Input discovery and partitioning."""

from __future__ import annotations

import fsspec
import pytest
from fixtures_shards import make_tar

from pixsieve.io.shards import (
    InputError,
    ShardRef,
    discover_shards,
    expand_braces,
    partition_by_size,
)


def test_brace_expansion():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}/{1..2}") == ["a/1", "a/2", "b/1", "b/2"]
    assert expand_braces("plain.tar") == ["plain.tar"]


@pytest.fixture
def tree(tmp_path):
    for i in range(4):
        make_tar(tmp_path / "d" / f"shard-{i:03d}.tar", [(f"{i}.txt", b"x" * (i + 1))])
    (tmp_path / "d" / "notes.md").write_text("not a shard")
    make_tar(tmp_path / "d" / "sub" / "deep.tar", [])
    return tmp_path


def test_files_dirs_globs_braces_are_sorted_and_deduplicated(tree):
    d = tree / "d"
    by_dir = discover_shards([str(d)])
    names = [r.url.rsplit("/", 1)[1] for r in by_dir]
    assert sorted(names) == sorted([f"shard-{i:03d}.tar" for i in range(4)] + ["deep.tar"])
    assert [r.url for r in by_dir] == sorted(r.url for r in by_dir)
    assert all(r.url.startswith("file://") for r in by_dir)
    by_glob = discover_shards([str(d / "shard-*.tar")])
    by_brace = discover_shards([str(d / "shard-{000..003}.tar")])
    by_both = discover_shards([str(d / "shard-{003..000}.tar"), str(d / "shard-00[01].tar")])
    assert by_glob == by_brace == by_both
    assert [r.size for r in by_glob] == sorted(r.size for r in by_glob)


def test_fsspec_urls(good_shards):
    with fsspec.open("memory://in/a.tar", "wb") as f:
        f.write(good_shards[0].read_bytes())
    refs = discover_shards(["memory://in/"])
    assert len(refs) == 1 and refs[0].url.startswith("memory://")
    assert refs[0].url.endswith("/in/a.tar") and refs[0].size == good_shards[0].stat().st_size


def test_errors_are_clear(tree):
    with pytest.raises(InputError, match="not found"):
        discover_shards([str(tree / "missing.tar")])
    with pytest.raises(InputError, match="no files match"):
        discover_shards([str(tree / "nothing-*.tar")])
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \.tar shards"):
        discover_shards([str(tree / "empty")])


def test_partition_balances_bytes_and_keeps_order():
    sizes = [100, 1, 1, 1, 1, 100, 50, 50]
    shards = [ShardRef(str(i), s) for i, s in enumerate(sizes)]
    parts = partition_by_size(shards, 3)
    assert [i for p in parts for i in p] == list(range(len(sizes)))
    weights = [sum(sizes[i] for i in p) for p in parts]
    assert max(weights) <= 110
    assert partition_by_size(shards, 100) == [[i] for i in range(len(sizes))]
    assert partition_by_size(shards, 1) == [list(range(len(sizes)))]


def test_resolved_shards_pass_through_without_a_second_listing(tree):
    refs = discover_shards([str(tree / "d" / "shard-*.tar")])
    (tree / "d" / "shard-000.tar").unlink()  # a second listing would no longer find it
    assert discover_shards(refs) == refs


def test_a_huge_brace_range_is_refused_not_expanded():
    with pytest.raises(InputError, match="expands to 100,000,000 names"):
        expand_braces("x/{00000000..99999999}.tar")
    assert len(expand_braces("{0..999}/{0..99}")) == 100_000


def test_only_regular_files_are_shards(tmp_path, caplog):
    import os

    (tmp_path / "a.tar").write_bytes(b"x")
    os.mkfifo(tmp_path / "b.tar")
    os.symlink("/dev/zero", tmp_path / "c.tar")
    found = discover_shards([str(tmp_path)])
    assert [s.url.rsplit("/", 1)[1] for s in found] == ["a.tar"]
    assert "b.tar: not a regular file" in caplog.text and "c.tar" in caplog.text
    with pytest.raises(InputError, match="no input shards"):
        discover_shards([str(tmp_path / "b.tar")])


def test_a_rewrite_in_place_changes_the_version(tmp_path):
    import os

    path = tmp_path / "a.tar"
    path.write_bytes(b"12345")
    before = discover_shards([str(path)])[0]
    assert before.explicit and before.version
    stat = path.stat()
    path.write_bytes(b"54321")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    after = discover_shards([str(path)])[0]
    assert after.size == before.size and after.version != before.version
    assert not discover_shards([str(tmp_path)])[0].explicit
