"""Launching model work ahead and landing it later gives the same columns as ``process``."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures_data import AESTHETIC_PTH, NSFW_PTH

from pixsieve import Pipeline
from pixsieve.batch import ImageBatch
from pixsieve.stages.base import Stage, StageStats
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.embed import ClipEmbedder
from pixsieve.stages.launch import land, launch, launchers
from pixsieve.stages.scoring import AestheticFilter, NSFWFilter


def _batch(n: int, decoded: np.ndarray) -> ImageBatch:
    rng = np.random.default_rng(0)
    batch = ImageBatch(
        source="mem",
        shard_index=0,
        key=np.array([f"k{i}" for i in range(n)], dtype=object),
        position=np.arange(n),
        members=[[] for _ in range(n)],
        image_name=[None] * n,
        image_bytes=[None] * n,
        sidecars=[{} for _ in range(n)],
        status=np.zeros(n, dtype=np.int8),
        reason=[None] * n,
    )
    batch.pixels = rng.integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)
    batch.width = np.where(decoded, 300, 0)
    batch.height = np.where(decoded, 200, 0)
    return batch


def test_launched_columns_equal_the_processed_ones(tiny_clip_dir):
    stages = [
        ClipEmbedder(model=str(tiny_clip_dir), device="cpu", batch_size=4),
        AestheticFilter(min_score=5.0, weights=AESTHETIC_PTH),
        NSFWFilter(weights=NSFW_PTH),
    ]
    for s in stages:
        s.setup()
    decoded = np.array([True, False, True, True, True, False, True])
    plain = _batch(7, decoded)
    for s in stages:
        plain = s.process(plain)
    ahead = _batch(7, decoded)
    stats = {s.name: StageStats() for s in stages}
    copy = launch(ahead, launchers(stages), stats)
    assert ahead.launched == {} and copy is not None
    land(ahead, copy)
    assert ahead.landed == {"embedding", "aesthetic_score", "nsfw_prob"}
    for s in stages:
        ahead = s.process(ahead)
    for name in ("embedding", "aesthetic_score", "nsfw_prob"):
        np.testing.assert_allclose(ahead.columns[name], plain.columns[name], atol=1e-5)
        assert np.isnan(ahead.columns[name][~decoded]).all()
    assert ahead.reason == plain.reason and (ahead.status == plain.status).all()


class _Recorder(Stage):
    """A model stage that logs when each batch is launched and when it is processed."""

    name = "recorder"
    is_model = True
    log: ClassVar[list[tuple[str, int]]] = []
    delay: ClassVar[float] = 0.0

    def launch(self, batch: ImageBatch) -> None:
        self.log.append(("launch", int(batch.position[0])))

    def process(self, batch: ImageBatch) -> ImageBatch:
        time.sleep(self.delay)
        self.log.append(("process", int(batch.position[0])))
        return batch


def test_score_pass_launches_the_next_batch_before_it_consumes_one(good_shards, tmp_path):
    _Recorder.log = []
    _Recorder.delay = 0.05  # a model slower than decoding: the next batch is always waiting
    result = Pipeline([DecodeStage(), _Recorder()], batch_size=2, exact_dedup=False).run(
        [str(good_shards[0])], str(tmp_path / "out"), report=False
    )
    n = result.counts["input"]
    starts = list(range(0, n, 2))
    log = _Recorder.log
    assert [p for kind, p in log if kind == "process"] == starts  # consumed in order
    assert [p for kind, p in log if kind == "launch"] == starts
    ahead = sum(
        log.index(("launch", starts[k + 1])) < log.index(("process", starts[k]))
        for k in range(len(starts) - 1)
    )
    assert ahead >= len(starts) - 2  # batch k+1 queued before batch k was consumed
    table = pq.read_table(next((tmp_path / "out").rglob("samples/*.parquet")))
    assert table.num_rows == n


def test_launchers_stop_at_the_first_stage_that_cannot_launch():
    class Plain(Stage):
        name = "plain"

        def process(self, batch: ImageBatch) -> ImageBatch:
            return batch

    a, b = _Recorder(), _Recorder()
    assert launchers([a, Plain(), b]) == [a]
    assert launchers([Plain(), a]) == []


@pytest.mark.gpu
def test_launched_on_cuda_matches_the_cpu(tiny_clip_dir):
    decoded = np.array([True, True, False, True])
    out = {}
    for device in ("cpu", "cuda"):
        stages = [
            ClipEmbedder(model=str(tiny_clip_dir), device=device, precision="fp32"),
            AestheticFilter(weights=AESTHETIC_PTH),
            NSFWFilter(weights=NSFW_PTH),
        ]
        batch = _batch(4, decoded)
        copy = launch(batch, launchers(stages), {s.name: StageStats() for s in stages})
        if device == "cuda":
            assert copy is not None and copy.event is not None
            assert all(t.is_pinned() for t in copy.host.values())
            assert stages[1]._head.device.type == "cuda"  # the head ran on the GPU
        land(batch, copy)
        out[device] = batch.columns
    for name in ("embedding", "aesthetic_score", "nsfw_prob"):
        np.testing.assert_allclose(out["cuda"][name], out["cpu"][name], atol=2e-3)
