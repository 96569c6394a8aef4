"""``curate --against`` writing its output on ``s3://`` (a local moto server): the same
outputs as on disk, and an index beside them (earlier outputs are read from local disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from executors.helpers import ThumbnailEmbedder, assert_same_outputs, read_manifest

from pixsieve.dedup import SemanticDedupConfig
from pixsieve.errors import InputError
from pixsieve.pipeline import Pipeline
from pixsieve.run.earlier import open_outputs


def test_against_with_the_output_on_s3(
    s3_server: dict[str, Any], good_shards: list[Path], tmp_path: Path
) -> None:
    import s3fs

    def pipeline(against: tuple[str, ...] = ()) -> Pipeline:
        config = SemanticDedupConfig(threshold=0.97, keep="first")
        return Pipeline([ThumbnailEmbedder()], semantic_dedup=config, against=against)

    fs = s3fs.S3FileSystem(**s3_server)
    fs.mkdir("pixsieve-against")
    earlier = str(tmp_path / "A")
    pipeline().run([str(good_shards[0])], earlier, "local", report=False)
    inputs = [str(p) for p in good_shards]
    here, there = str(tmp_path / "B"), "s3://pixsieve-against/B"
    pipeline((earlier,)).run(inputs, here, "local", report=False)
    pipeline((earlier,)).run(inputs, there, "local", storage_options=s3_server, report=False)
    assert_same_outputs(here, there, None, s3_server)
    assert "duplicate_of_earlier" in read_manifest(there, s3_server)["reason"].to_pylist()
    assert fs.exists("pixsieve-against/B/index/curate.json")
    assert fs.exists("pixsieve-against/B/index/index.json")


def test_against_an_earlier_output_on_s3(
    s3_server: dict[str, Any], good_shards: list[Path], tmp_path: Path, monkeypatch: Any
) -> None:
    """An earlier output on ``s3://`` is read from a local copy (``$PIXSIEVE_CACHE/against``,
    fetched once): the same fates as against the same output on disk, recorded under its URL
    (``duplicate_of_run``, the new index's ``parents``)."""
    import json

    import s3fs

    def pipeline(against: tuple[str, ...] = ()) -> Pipeline:
        config = SemanticDedupConfig(threshold=0.97, keep="first")
        return Pipeline([ThumbnailEmbedder()], semantic_dedup=config, against=against)

    monkeypatch.setenv("PIXSIEVE_CACHE", str(tmp_path / "cache"))
    fs = s3fs.S3FileSystem(**s3_server)
    fs.mkdir("pixsieve-earlier")
    local_a, remote_a = str(tmp_path / "A"), "s3://pixsieve-earlier/A"
    pipeline().run([str(good_shards[0])], local_a, "local", report=False)
    pipeline().run(
        [str(good_shards[0])], remote_a, "local", storage_options=s3_server, report=False
    )
    inputs = [str(p) for p in good_shards]
    here, there = "s3://pixsieve-earlier/B", "s3://pixsieve-earlier/C"
    pipeline((local_a,)).run(inputs, here, "local", storage_options=s3_server, report=False)
    pipeline((remote_a,)).run(inputs, there, "local", storage_options=s3_server, report=False)
    a, b = read_manifest(here, s3_server), read_manifest(there, s3_server)
    for column in ("status", "reason", "duplicate_of", "similarity"):
        assert a[column].equals(b[column])
    runs = set(b["duplicate_of_run"].to_pylist()) - {None}
    assert "duplicate_of_earlier" in b["reason"].to_pylist() and runs == {remote_a}
    fs.invalidate_cache()
    assert json.loads(fs.cat_file("pixsieve-earlier/C/index/curate.json"))["parents"] == [remote_a]
    assert len(list((tmp_path / "cache" / "against").iterdir())) == 1  # fetched once, reused
    fs.mkdir("pixsieve-earlier/empty")
    fs.pipe("pixsieve-earlier/empty/x", b"")
    for url, says in (("nothing", "no such directory"), ("empty", "not a finished curate")):
        with pytest.raises(InputError, match=f"--against s3://pixsieve-earlier/{url}: {says}"):
            open_outputs([f"s3://pixsieve-earlier/{url}"], s3_server)
