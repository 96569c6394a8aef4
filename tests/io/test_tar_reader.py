"""The streaming reader: WebDataset grouping and every structural problem as a reason."""

from __future__ import annotations

from pathlib import Path

from fixtures_shards import make_tar

from pixsieve.io.limits import ReadLimits
from pixsieve.io.tar_reader import TarShardReader, is_unsafe_name, split_name


def read(path: Path) -> tuple[dict[str, object], TarShardReader]:
    reader = TarShardReader(str(path))
    return {s.key: s for s in reader}, reader


def test_split_name_follows_webdataset_rules():
    assert split_name("a/b/000.jpg") == ("a/b/000", "jpg")
    assert split_name("000.seg.png") == ("000", "seg.png")
    assert split_name("dir.v2/x.JPG") == ("dir.v2/x", "JPG")
    assert split_name("README") == ("README", "")


def test_unsafe_names():
    for name in ("../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "C:/x.jpg", "a\\b.jpg", ""):
        assert is_unsafe_name(name), name
    for name in ("a/b.jpg", "x..y.jpg", "..x.jpg"):
        assert not is_unsafe_name(name), name


def test_groups_members_and_keeps_every_sidecar(good_shards):
    samples, reader = read(good_shards[0])
    assert reader.error is None
    first = samples["s0-000"]
    assert first.names == ["s0-000.jpg", "s0-000.txt", "s0-000.json"]
    assert first.reason is None and first.image_index == 0
    assert [s.position for s in samples.values()] == list(range(len(samples)))


def test_bad_shard_reasons(bad_shard):
    samples, reader = read(bad_shard)
    assert reader.error is None
    reasons = {k: s.reason for k, s in samples.items()}
    assert reasons["014-noimage"] == "missing_image"
    assert reasons["015-dupmember"].startswith("duplicate_member")
    assert reasons["../016-escape"].startswith("unsafe_name")
    assert reasons["/abs/017-abs"].startswith("unsafe_name")
    assert reasons["012-upper"] is None  # upper-case .JPG is an image
    assert reasons["011-webp"] is None
    assert reasons["013-badjson"].startswith("invalid_json: 013-badjson.json")  # loaders raise


def test_invalid_sidecars_kept_with_a_warning_on_request(bad_shard):
    reader = TarShardReader(str(bad_shard), limits=ReadLimits(keep_invalid_sidecars=True))
    samples = {s.key: s for s in reader}
    assert "invalid_json" in samples["013-badjson"].warnings[0]
    assert samples["013-badjson"].reason is None  # the image is still usable
    assert len(samples) == 20


def test_duplicate_key_and_special_members(tmp_path):
    import io
    import tarfile

    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tf:
        for name in ("a.jpg", "b.jpg", "a.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        link = tarfile.TarInfo("c.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    reader = TarShardReader(str(path))
    samples = list(reader)
    assert [s.key for s in samples] == ["a", "b", "a", "c"]
    assert samples[2].reason == "duplicate_key: a (first at position 0)"
    assert reader.repeated_keys == {"a"}  # the score pass turns the first group into an error
    assert samples[3].reason.startswith("unsupported_member: c.jpg (symlink)")
    assert reader.skipped_members == 1


def test_truncated_tar_keeps_samples_before_the_cut(truncated_shard, good_shards):
    full, _ = read(good_shards[0])
    samples, reader = read(truncated_shard)
    assert reader.error.startswith("truncated_shard")
    keys = list(samples)
    cut = samples[keys[-1]]
    assert cut.reason.startswith("truncated_shard")
    for key in keys[:-1]:
        assert samples[key].reason is None
        assert samples[key].data == full[key].data


def test_not_a_tar(not_a_tar):
    samples, reader = read(not_a_tar)
    assert samples == {}
    assert reader.error.startswith("not_a_tar")


def test_gzip_and_memory_filesystem(good_shards):
    import gzip

    import fsspec

    data = gzip.compress(good_shards[1].read_bytes())
    with fsspec.open("memory://gz/shard.tar.gz", "wb") as f:
        f.write(data)
    samples = list(TarShardReader("memory://gz/shard.tar.gz"))
    plain = list(TarShardReader(str(good_shards[1])))
    assert [s.key for s in samples] == [s.key for s in plain]
    assert samples[0].data == plain[0].data


def test_empty_tar(tmp_path):
    path = make_tar(tmp_path / "empty.tar", [])
    samples, reader = read(path)
    assert samples == {} and reader.error is None


def _reader(tmp_path, name, data, **kw):
    path = tmp_path / name
    path.write_bytes(data)
    reader = TarShardReader(str(path), **kw)
    return list(reader), reader


def test_a_corrupt_header_mid_tar_is_skipped_and_reported(tmp_path):
    from hostile.inputs import flipped_checksum

    shard = flipped_checksum()
    samples, reader = _reader(tmp_path, shard.name, shard.data)
    assert [s.key for s in samples] == shard.keys  # the damaged header's member keeps its row
    assert samples[2].reason.startswith("corrupt_header")
    assert [s.reason for s in samples[3:]] == [None] * 3
    assert reader.error.startswith("corrupt_header") and len(reader.lost) == 1


def test_negative_pax_size_is_a_corrupt_header_not_a_truncation(tmp_path):
    from hostile.inputs import pax_negative_size

    shard = pax_negative_size()
    samples, reader = _reader(tmp_path, shard.name, shard.data)
    assert [s.key for s in samples] == shard.keys
    assert samples[1].reason == "corrupt_header: member pax1.jpg declares size -5"
    assert [s.reason for s in samples if s.key != "pax1"] == [None] * 3
    assert not reader.lost


def test_limits_are_checked_from_the_header_before_reading(tmp_path):
    from hostile.inputs import big_sidecar_and_many_members, sparse_3gb

    samples, _ = _reader(tmp_path, "sparse.tar", sparse_3gb().data)
    assert samples[1].reason.startswith("too_large: sp1.jpg declares 3221225472 bytes")
    assert samples[1].data == [b""] and samples[2].reason is None
    samples, _ = _reader(tmp_path, "sizes.tar.gz", big_sidecar_and_many_members().data)
    assert samples[0].reason.startswith("too_large: sidecar bs0.txt")
    assert samples[1].reason.startswith("too_large: more than max_sample_members=256")
    assert len(samples[1].names) == 256 and samples[2].reason is None
    samples, _ = _reader(
        tmp_path, "small.tar", sparse_3gb().data, limits=ReadLimits(max_sample_bytes=100)
    )
    assert all(s.reason.startswith("too_large") for s in samples)


def test_nothing_a_sidecar_parser_throws_escapes(tmp_path):
    from hostile.inputs import deep_json_and_bad_sidecars

    samples, reader = _reader(tmp_path, "s.tar", deep_json_and_bad_sidecars().data)
    assert reader.error is None
    assert samples[0].reason == "invalid_json: dj0.json: nested too deeply"
    assert samples[1].reason.startswith("invalid_json: dj1.json")
    assert samples[2].reason == "invalid_utf8: dj2.txt"


def test_an_unexpected_exception_keeps_the_samples_read_so_far(tmp_path, monkeypatch):
    from pixsieve.io import tar_reader

    members = [(f"k{i}.jpg", b"x") for i in range(3)] + [("k3.json", b"{}")]
    path = make_tar(tmp_path / "x.tar", members)

    def explode(name: str, ext: str, data: bytes) -> None:
        if ext == "json":  # k3's sidecar: k0..k2 are read, k3 is being read
            raise MemoryError("boom")

    monkeypatch.setattr(tar_reader, "sidecar_warning", explode)
    reader = TarShardReader(str(path))
    samples = list(reader)
    assert [s.key for s in samples] == ["k0", "k1", "k2", "k3"]
    assert reader.lost == ["read_error: MemoryError: boom"]


def test_a_fifo_is_never_opened(tmp_path):
    import os

    os.mkfifo(tmp_path / "b.tar")
    reader = TarShardReader(str(tmp_path / "b.tar"))
    assert list(reader) == [] and reader.error.startswith("not_a_file")
