"""A shard's read → CPU stages (decode) in a thread of its own, ahead of the model.

A :class:`Feed` reads one shard, runs the CPU stages over each batch in its producer thread
and hands the batches on through a bounded queue (``prefetch`` batches), so decoding overlaps
the model. The score pass prepares the next shard's feed while it consumes the current one
and starts it as soon as the current feed has read its shard (:meth:`Feed.then`), so the next
shard is read and decoded while the model finishes this one and never waits at a shard
boundary; only one feed at a time takes from the process-wide read budget, so no feed waits
for bytes another holds.
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
        self._guard = threading.Lock()
        self._started = self._read = False
        self._then: Callable[[], Any] | None = None

    def start(self) -> Feed:
        """Start the producer thread (once)."""
        with self._guard:
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    def then(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` once this feed has read its whole shard (now, if it already has).

        The next shard's feed starts so: while it reads, this feed takes no more of the read
        budget, so neither can wait for bytes the other holds.
        """
        with self._guard:
            if not self._read:
                self._then = fn
                return
        fn()

    def _finished_reading(self) -> None:
        with self._guard:
            self._read, fn, self._then = True, self._then, None
        if fn is not None:
            fn()

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
            self._finished_reading()
            self._put(_END)
        except BaseException as e:  # hand the failure to the consumer
            READ_BUDGET.release(held)
            self._finished_reading()
            self._put(e)

    def ready(self) -> bool:
        """Whether the next item is already waiting (taking it will not block)."""
        return not self._q.empty()

    def next(self) -> tuple[ImageBatch, int] | None:
        """The next ``(batch, bytes held)``, ``None`` at the end; a failure of the producer is
        raised here. The receiver releases each batch's bytes from the read budget."""
        item = self._q.get()
        if item is _END:
            self._q.put(_END)  # stays the answer
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the producer and give back the bytes of batches nobody will score."""
        self._stop.set()  # the producer gives up on a full queue and ends
        with self._guard:
            started, self._then = self._started, None
        if started:
            self._thread.join()
        while not self._q.empty():
            left = self._q.get_nowait()
            if isinstance(left, tuple):
                READ_BUDGET.release(left[1])
