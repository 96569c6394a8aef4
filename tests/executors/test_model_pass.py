"""A model pass (tiny random CLIP, CPU) on Ray: one model actor, same embeddings as local."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from executors.helpers import read_manifest

from pixsieve.pipeline import Pipeline
from pixsieve.stages.decode import DecodeStage


def _pipeline(model_dir: Path) -> Pipeline:
    from pixsieve.stages.embed import ClipEmbedder

    return Pipeline(
        [DecodeStage(threads=2), ClipEmbedder(str(model_dir), device="cpu", batch_size=8)],
        samples_per_shard=8,
        partition_bytes=300_000,
    )


def _embeddings(output: str) -> np.ndarray:
    out = Path(output) / "cache" / "samples"
    import pyarrow.parquet as pq

    rows = [pq.read_table(p).column("embedding").to_pylist() for p in sorted(out.glob("*.parquet"))]
    return np.array([e for part in rows for e in part if e is not None], dtype=np.float32)


@pytest.mark.ray
def test_model_pass_on_ray_matches_local(
    ray_session, tiny_clip_dir: Path, good_shards: list[Path], tmp_path: Path
) -> None:
    from pixsieve.executors.ray import RayExecutor

    inputs = [str(p) for p in good_shards]
    local, remote = str(tmp_path / "local"), str(tmp_path / "ray")
    _pipeline(tiny_clip_dir).run(inputs, local, "local")
    ex = RayExecutor()
    result = _pipeline(tiny_clip_dir).run(inputs, remote, ex)

    score_pool = {k: v for k, v in result.record["executor"]["pools"][1].items() if k != "start_s"}
    # a CPU model pass on a 2-CPU machine: one model copy holding both CPUs, started after
    # the scan pass's two 1-CPU actors were released (else it would wait for ever)
    assert score_pool == {"tasks": 2, "size": 1, "num_cpus": 2.0, "num_gpus": 0.0}
    a, b = _embeddings(local), _embeddings(remote)
    assert a.shape == b.shape and a.shape[0] == 21
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    ma, mb = read_manifest(local), read_manifest(remote)
    assert ma["key"].to_pylist() == mb["key"].to_pylist()
    assert ma["status"].to_pylist() == mb["status"].to_pylist()
