"""Read-ahead across shards: the next shard is decoded while the current one is scored."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import ClassVar

from pixsieve import Pipeline
from pixsieve.batch import ImageBatch
from pixsieve.io.limits import READ_BUDGET
from pixsieve.stages.base import Stage
from pixsieve.stages.decode import DecodeStage

LOG: list[tuple[str, int, int]] = []
LOCK = threading.Lock()


class _CpuProbe(Stage):
    name = "cpu_probe"
    copies: ClassVar[set[int]] = set()

    def process(self, batch: ImageBatch) -> ImageBatch:
        self.copies.add(id(self))
        with LOCK:
            LOG.append(("cpu", batch.shard_index, int(batch.position[0])))
        return batch


class _SlowModel(Stage):
    name = "slow_model"
    is_model = True

    def process(self, batch: ImageBatch) -> ImageBatch:
        time.sleep(0.1)
        with LOCK:
            LOG.append(("model", batch.shard_index, int(batch.position[0])))
        return batch


def test_next_shard_is_read_and_decoded_while_the_current_one_is_scored(good_shards, tmp_path):
    LOG.clear()
    _CpuProbe.copies = set()
    shards = [str(p) for p in good_shards]
    pipe = Pipeline([DecodeStage(), _CpuProbe(), _SlowModel()], batch_size=2, exact_dedup=False)
    result = pipe.run(shards, str(tmp_path / "out"), report=False)
    last_model_of_first = max(i for i, e in enumerate(LOG) if e[:2] == ("model", 0))
    first_cpu_of_second = min(i for i, e in enumerate(LOG) if e[:2] == ("cpu", 1))
    assert first_cpu_of_second < last_model_of_first  # decoded ahead, across the boundary
    models = [e for e in LOG if e[0] == "model"]
    assert models == sorted(models)  # the model still takes shards and batches in order
    assert len(_CpuProbe.copies) == 2  # the two producers never share a stage copy
    assert len(models) == sum(1 for e in LOG if e[0] == "cpu")  # every batch scored once
    assert result.counts["input"] > 0
    assert READ_BUDGET._used == 0  # every byte read ahead was given back


def test_a_failed_pass_closes_the_feed_read_ahead(good_shards, tmp_path):
    class Boom(_SlowModel):
        def process(self, batch: ImageBatch) -> ImageBatch:
            raise KeyboardInterrupt  # ends the pass (not a shard error)

    shards = [str(p) for p in good_shards]
    pipe = Pipeline([DecodeStage(), Boom()], batch_size=2, exact_dedup=False)
    with contextlib.suppress(KeyboardInterrupt):
        pipe.run(shards, str(tmp_path / "out"), report=False)
    assert READ_BUDGET._used == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("pixsieve-read-")]
