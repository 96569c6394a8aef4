"""Inputs and every output on ``s3://`` (a local moto server), with each executor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from executors.helpers import assert_same_outputs, conformance_stages, read_output_shards

from pixsieve.pipeline import Pipeline


def _pipeline() -> Pipeline:
    return Pipeline(conformance_stages(), samples_per_shard=4, partition_bytes=300_000)


@pytest.fixture(scope="module")
def s3_inputs(s3_server: dict[str, Any], good_shards: list[Path], bad_shard: Path) -> str:
    """The fixture shards uploaded to ``s3://pixsieve-in/shards/``."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server)
    fs.mkdir("pixsieve-in")
    fs.mkdir("pixsieve-out")
    for p in [*good_shards, bad_shard]:
        fs.put_file(str(p), f"pixsieve-in/shards/{p.name}")
    return "s3://pixsieve-in/shards/"


@pytest.fixture(scope="module")
def disk_run(
    good_shards: list[Path], bad_shard: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The same shards copied to one local directory and curated there (the reference)."""
    root = tmp_path_factory.mktemp("s3ref")
    (root / "in").mkdir()
    for p in [*good_shards, bad_shard]:
        (root / "in" / p.name).write_bytes(p.read_bytes())
    _pipeline().run([str(root / "in")], str(root / "out"), "local")
    return str(root / "out")


@pytest.fixture(scope="module")
def s3_local_run(s3_server: dict[str, Any], s3_inputs: str) -> str:
    out = "s3://pixsieve-out/local"
    _pipeline().run([s3_inputs], out, "local", storage_options=s3_server)
    return out


def _run_json(output: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    import fsspec

    with fsspec.open(f"{output}/run.json", "rb", **storage_options) as f:
        return json.loads(f.read())


def test_local_executor_on_s3(s3_server: dict[str, Any], s3_local_run: str, disk_run: str) -> None:
    assert_same_outputs(disk_run, s3_local_run, None, s3_server, same_sources=False)
    assert read_output_shards(disk_run) == read_output_shards(s3_local_run, s3_server)
    record = _run_json(s3_local_run, s3_server)
    assert record["inputs"]["shards"] == 3
    assert record["totals"]["kept"] > 0


def test_resume_on_s3_skips_everything(
    s3_server: dict[str, Any], s3_local_run: str, s3_inputs: str
) -> None:
    """Completion markers on S3 are found again: a second run redoes no task."""
    result = _pipeline().run([s3_inputs], s3_local_run, "local", storage_options=s3_server)
    tasks = result.record["tasks"]
    assert all(t["resumed"] == t["total"] for t in tasks.values()), tasks


@pytest.mark.ray
def test_ray_executor_on_s3(
    ray_session, s3_server: dict[str, Any], s3_inputs: str, s3_local_run: str
) -> None:
    from pixsieve.executors.ray import RayExecutor

    out = "s3://pixsieve-out/ray"
    _pipeline().run([s3_inputs], out, RayExecutor(workers=2), storage_options=s3_server)
    assert_same_outputs(s3_local_run, out, s3_server, s3_server)
    assert read_output_shards(s3_local_run, s3_server) == read_output_shards(out, s3_server)
    assert _run_json(out, s3_server)["executor"]["name"] == "ray"


def test_cli_storage_options_from_flags_and_config(
    s3_server: dict[str, Any], s3_inputs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--storage-option`` (JSON values, dotted keys) and ``[storage.options]`` reach s3fs."""
    from click.testing import CliRunner

    from pixsieve.cli import main

    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    endpoint = s3_server["client_kwargs"]["endpoint_url"]
    flags = [
        "--storage-option", f"client_kwargs.endpoint_url={endpoint}",
        "--storage-option", 'key="x"', "--storage-option", "secret=y",
    ]  # fmt: skip
    out = "s3://pixsieve-out/cli-flags"
    args = ["curate", s3_inputs, "-o", out, "--skip", "embed", "--no-progress"]
    result = CliRunner().invoke(main, [*args, *flags])
    assert result.exit_code == 0, result.output
    record = _run_json(out, s3_server)
    assert record["totals"]["kept"] > 0
    assert record["config"]["storage"]["options"] == {
        "client_kwargs": {"endpoint_url": endpoint}, "key": "<redacted>", "secret": "<redacted>",
    }  # fmt: skip
    config = tmp_path / "s3.toml"
    config.write_text(f'[storage.options]\nendpoint_url = "{endpoint}"\nkey = "x"\n')
    out = "s3://pixsieve-out/cli-config"
    args = ["curate", s3_inputs, "-o", out, "--skip", "embed", "--no-progress"]
    result = CliRunner().invoke(
        main, [*args, "--config", str(config), "--storage-option", "secret=y"]
    )
    assert result.exit_code == 0, result.output
    assert _run_json(out, s3_server)["totals"] == record["totals"]
