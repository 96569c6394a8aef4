"""A shard's read → CPU stages (decode) in a thread of its own, ahead of the model.

A :class:`Feed` reads one shard, runs the CPU stages over each batch in its producer thread
and hands the batches on through a bounded queue (``prefetch`` batches), so decoding overlaps
the model. The score pass opens the next shard's feed while it consumes the current one
(read-ahead across shards: two readers at a time, the model never waits at a shard boundary);
sample bytes stay within the process-wide read budget either way.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pixsieve.batch import ImageBatch
from pixsieve.io.limits import READ_BUDGET
from pixsieve.io.tar_reader import TarShardReader
from pixsieve.stages.base import StageLike, StageStats, run_stage, stage_name

_END = object()
Batches = Callable[[TarShardReader, int], Iterator[tuple[ImageBatch, int]]]


class Feed:
    """Batches of one shard, read and CPU-staged by a producer thread (see the module)."""

    def __init__(
        self,
        index: int,
        reader: TarShardReader,
        batches: Batches,
        cpu_stages: list[StageLike],
        prefetch: int,
        on_read: Callable[[ImageBatch, StageStats], None],
    ) -> None:
        self.index = index
        self.reader = reader
        self.cpu_stages = cpu_stages
        self.stats = {"read": StageStats(), **{stage_name(s): StageStats() for s in cpu_stages}}
        self._batches = batches
        self._on_read = on_read
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, name=f"pixsieve-read-{index}", daemon=True
        )

    def start(self) -> Feed:
        """Start the producer thread."""
        self._thread.start()
        return self

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        held = 0
        try:
            for batch, held in self._batches(self.reader, self.index):
                self._on_read(batch, self.stats["read"])
                for stage in self.cpu_stages:
                    batch = run_stage(stage, batch, self.stats[stage_name(stage)])
                if not self._put((batch, held)):
                    READ_BUDGET.release(held)
                    return
                held = 0
            self._put(_END)
        except BaseException as e:  # hand the failure to the consumer
            READ_BUDGET.release(held)
            self._put(e)

    def __iter__(self) -> Iterator[tuple[ImageBatch, int]]:
        """``(batch, bytes held)`` in order; a failure of the producer is raised here. The
        receiver releases each batch's bytes from the read budget."""
        while (item := self._q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the producer and give back the bytes of batches nobody will score."""
        self._stop.set()  # the producer gives up on a full queue and ends
        self._thread.join()
        while not self._q.empty():
            left = self._q.get_nowait()
            if isinstance(left, tuple):
                READ_BUDGET.release(left[1])
