"""One pipeline, every executor, the same files (manifest rows, output samples, member bytes)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from executors.helpers import (
    assert_same_outputs,
    conformance_stages,
    read_manifest,
    read_output_shards,
)
from fixtures_shards import make_tar, sample_members

from pixsieve.pipeline import Pipeline


def _pipeline() -> Pipeline:
    # small partitions and output shards: several export tasks, several tars each
    return Pipeline(conformance_stages(), samples_per_shard=4, partition_bytes=300_000)


@pytest.fixture(scope="module")
def inputs(
    good_shards: list[Path], bad_shard: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    """The fixture shards plus one holding byte copies of two images (exact duplicates)."""
    with tarfile.open(good_shards[0]) as tf:
        jpegs = [tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".jpg")]
    members = sample_members("z-copy-0", jpegs[0]) + sample_members("z-copy-1", jpegs[1])
    dups = make_tar(tmp_path_factory.mktemp("dups") / "zz-dups.tar", members)
    return [str(p) for p in [*good_shards, bad_shard, dups]]


@pytest.fixture(scope="module")
def local_run(inputs: list[str], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("local") / "out")
    _pipeline().run(inputs, out, "local", workers=2)
    return out


def test_local_run_is_meaningful(local_run: str) -> None:
    """The conformance run exercises every fate: kept, removed by each filter, errors."""
    manifest = read_manifest(local_run)
    reasons = set(manifest["reason"].to_pylist())
    assert {None, "too_small", "too_dark", "exact_duplicate"} <= reasons
    assert "error" in manifest["status"].to_pylist()
    assert len(read_output_shards(local_run)) >= 3
    assert len(set(manifest["output_shard"].to_pylist()) - {None}) >= 3


def test_local_thread_count_does_not_change_outputs(
    inputs: list[str], local_run: str, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    _pipeline().run(inputs, out, "local", workers=1)
    assert_same_outputs(local_run, out)
    assert read_output_shards(local_run) == read_output_shards(out)


@pytest.mark.ray
def test_ray_matches_local(ray_session, inputs: list[str], local_run: str, tmp_path: Path) -> None:
    from pixsieve.executors.ray import RayExecutor

    out = str(tmp_path / "out")
    result = _pipeline().run(inputs, out, RayExecutor(workers=2))
    assert_same_outputs(local_run, out)
    assert read_output_shards(local_run) == read_output_shards(out)  # byte-identical tars
    assert result.record["executor"]["name"] == "ray"
    assert result.counts == read_counts(local_run)


def read_counts(output: str) -> dict[str, int]:
    """Totals recorded in ``run.json``."""
    import json

    return json.loads((Path(output) / "run.json").read_text())["totals"]
