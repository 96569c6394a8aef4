"""Fault tolerance: failing shards are retried then recorded; a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from executors.helpers import (
    EXIT_AT_SHARD,
    EXIT_CODE,
    FailingStage,
    assert_same_outputs,
    attempts,
    conformance_stages,
    read_manifest,
    read_output_shards,
    slow_pipeline,
    synthetic_shards,
)

from pixsieve.pipeline import Pipeline

TESTS = Path(__file__).resolve().parents[1]


def _executor(name: str) -> Any:
    if name == "ray":
        from pixsieve.executors.ray import RayExecutor

        return RayExecutor(workers=2)
    return "local"


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_failing_shard_is_retried_then_recorded(
    executor: str, request: pytest.FixtureRequest, good_shards: list[Path], tmp_path: Path
) -> None:
    if executor == "ray":
        request.getfixturevalue("ray_session")
    counter = str(tmp_path / "attempts")
    stages = [*conformance_stages(), FailingStage(good_shards[1].name, counter)]
    pipeline = Pipeline(stages, retries=2, samples_per_shard=4, partition_bytes=300_000)
    out = str(tmp_path / "out")
    result = pipeline.run([str(p) for p in good_shards], out, _executor(executor))

    assert len(attempts(counter)) == 3  # the first try and two retries, then give up
    manifest = read_manifest(out)
    bad = manifest.filter([s.endswith(good_shards[1].name) for s in manifest["source"].to_pylist()])
    assert bad.num_rows == 10 and set(bad["status"].to_pylist()) == {"error"}
    assert set(bad["reason"].to_pylist()) == {"shard_error"}
    assert set(bad["reason_detail"].to_pylist()) == {"RuntimeError: boom in shard-001.tar"}
    good = manifest.filter(
        [s.endswith(good_shards[0].name) for s in manifest["source"].to_pylist()]
    )
    assert "kept" in good["status"].to_pylist() and "error" not in good["status"].to_pylist()
    errors = result.shard_errors
    assert [(e["pass"], Path(e["task"]).name) for e in errors] == [("score", "shard-001.tar")]
    assert result.counts["error"] == 10


@pytest.fixture(scope="module")
def slow_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six shards of eight images: a score pass of a few seconds with a slow stage."""
    root = tmp_path_factory.mktemp("slow")
    synthetic_shards(root / "in", shards=6, per_shard=8)
    return root / "in"


SLOW = 0.05  # seconds per batch (one batch per shard)
DIE_AT = 3  # the killed run dies in the score pass on this shard (so 3 shards are done)


@pytest.fixture(scope="module")
def uninterrupted(slow_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("whole") / "out")
    slow_pipeline(SLOW).run([str(slow_inputs)], out, "local", workers=1)
    return out


def _die_during_score(inputs: Path, out: Path) -> int:
    """Run the curate in a subprocess that kills itself (``os._exit``) on shard ``DIE_AT``.

    The score pass runs its shards one after the other there (local, one worker), so exactly
    ``DIE_AT`` shards are finished when it dies: no race against a timer.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        EXIT_AT_SHARD: str(DIE_AT),
    }
    code = "from executors.helpers import curate_main; curate_main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(inputs), str(out), str(SLOW)],
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert proc.returncode == EXIT_CODE, proc.stderr[-2000:]
    return len(list((out / "cache" / "done" / "score").glob("*.json")))


@pytest.mark.parametrize("resume_with", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_killed_run_resumes_to_the_same_outputs(
    resume_with: str,
    request: pytest.FixtureRequest,
    slow_inputs: Path,
    uninterrupted: str,
    tmp_path: Path,
) -> None:
    if resume_with == "ray":
        request.getfixturevalue("ray_session")
    out = tmp_path / "out"
    assert _die_during_score(slow_inputs, out) == DIE_AT  # died part-way through the score pass
    assert not (out / "manifest").exists() and not (out / "run.json").exists()

    result = slow_pipeline(SLOW).run([str(slow_inputs)], str(out), _executor(resume_with))
    tasks = result.record["tasks"]
    assert tasks["scan"] == {"total": 6, "resumed": 6}
    assert tasks["score"] == {"total": 6, "resumed": DIE_AT}
    assert_same_outputs(uninterrupted, str(out))
    assert read_output_shards(uninterrupted) == read_output_shards(str(out))
    whole = json.loads((Path(uninterrupted) / "run.json").read_text())
    assert result.counts == whole["totals"]
    assert _same_counts(result.record["counters"], whole["counters"])


def _same_counts(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Stage counters equal, ignoring timings."""
    return {k: v["counts"] for k, v in a.items()} == {k: v["counts"] for k, v in b.items()}
