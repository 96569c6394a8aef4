"""``curate --against`` writing its output on ``s3://`` (a local moto server): the same
outputs as on disk, and an index beside them (earlier outputs are read from local disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from executors.helpers import ThumbnailEmbedder, assert_same_outputs, read_manifest

from pixsieve.dedup import SemanticDedupConfig
from pixsieve.pipeline import Pipeline


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
