"""Score pass: decode, filter, embed and score every sample of a shard; cache the results.

CPU stages (decode and anything before the first model stage) run in a producer thread that
reads ahead a bounded number of batches, so decoding overlaps the model and memory stays flat.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pixsieve.batch import ERROR, ImageBatch
from pixsieve.executors.base import Progress
from pixsieve.io.shards import ShardRef
from pixsieve.io.tables import batch_to_table
from pixsieve.io.tar_reader import RawSample, TarShardReader
from pixsieve.run.layout import RunLayout, shard_id
from pixsieve.stages.base import Stage, StageLike, StageStats, run_stage, stage_name

PASS = "score"
_END = object()


class ExactDuplicateStage(Stage):
    """Remove samples the scan pass found to be byte-identical to an earlier one."""

    name: ClassVar[str] = "exact_dedup"

    def __init__(self, duplicates: dict[int, tuple[str, str]]) -> None:
        self.duplicates = duplicates

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Mark duplicates (``reason=exact_duplicate``) and release their bytes."""
        hit = np.array([int(p) in self.duplicates for p in batch.position], dtype=bool)
        of = np.full(len(batch), None, dtype=object)
        src = np.full(len(batch), None, dtype=object)
        for i in np.flatnonzero(hit):
            of[i], src[i] = self.duplicates[int(batch.position[i])]
            batch.image_bytes[i] = None
        batch.drop(hit, "exact_duplicate")
        batch.set_column("duplicate_of", of)
        batch.set_column("duplicate_of_source", src)
        return batch


def _read_stats(batch: ImageBatch, stats: StageStats) -> None:
    stats.counts["in"] += len(batch)
    stats.counts["kept"] += int(batch.alive.sum())
    for i in np.flatnonzero(batch.status == ERROR):
        code = (batch.reason[i] or "unknown").split(":", 1)[0]
        stats.counts[f"errors_{code}"] += 1


def shard_error_row(source: str, error: str) -> pa.Table:
    """One manifest row for a shard in which no sample could be identified."""
    return pa.table(
        {
            "position": pa.array([-1], pa.int64()),
            "key": pa.array([None], pa.string()),
            "members": pa.array([[]], pa.list_(pa.string())),
            "status": ["error"],
            "reason": [f"shard_error: {error}"],
        }
    )


class ScoreWorker:
    """Run the stage list over one input shard and cache its per-sample table."""

    def __init__(
        self,
        layout: RunLayout,
        shards: list[ShardRef],
        stages: list[StageLike],
        batch_size: int,
        storage_options: dict[str, Any],
        exact: bool,
        prefetch: int = 2,
    ) -> None:
        self.layout = layout
        self.shards = shards
        self.stages = stages
        self.batch_size = batch_size
        self.storage_options = storage_options
        self.exact = exact
        self.prefetch = prefetch
        self._duplicates: dict[int, dict[int, tuple[str, str]]] = {}
        self._ready = False

    def setup(self) -> None:
        """Load models (each stage's ``setup``) and the exact-duplicate decisions once."""
        if self._ready:
            return
        for stage in self.stages:
            stage.setup()
        if self.exact:
            dups = self.layout.read_table(self.layout.path("cache", "exact_duplicates.parquet"))
            for row in dups.to_pylist():
                self._duplicates.setdefault(row["shard_index"], {})[row["position"]] = (
                    row["duplicate_of"],
                    row["duplicate_of_source"],
                )
        self._ready = True

    def _path(self, index: int) -> str:
        return self.layout.path("cache", "samples", f"{shard_id(index)}.parquet")

    def done(self, index: int) -> dict[str, Any] | None:
        """Saved summary when this shard was already scored."""
        return self.layout.read_json(self.layout.marker(PASS, shard_id(index)))

    def _split(self) -> int:
        """Index of the first model stage: stages before it run in the producer thread."""
        for i, stage in enumerate(self.stages):
            if getattr(stage, "is_model", False):
                return i
        return len(self.stages)

    def _batches(self, reader: TarShardReader, index: int) -> Iterator[ImageBatch]:
        chunk: list[RawSample] = []
        for sample in reader:
            chunk.append(sample)
            if len(chunk) >= self.batch_size:
                yield ImageBatch.from_samples(chunk, reader.url, index)
                chunk = []
        if chunk:
            yield ImageBatch.from_samples(chunk, reader.url, index)

    def run(self, index: int, progress: Progress) -> dict[str, Any]:
        """Score one shard; write ``cache/samples/SSSSS.parquet`` and its marker."""
        self.setup()
        url = self.shards[index].url
        reader = TarShardReader(url, self.storage_options)
        exact = ExactDuplicateStage(self._duplicates.get(index, {}))
        split = self._split()
        cpu_stages: list[StageLike] = [exact, *self.stages[:split]]
        model_stages = self.stages[split:]
        stats = {"read": StageStats(), **{stage_name(s): StageStats() for s in cpu_stages}}
        stats.update({stage_name(s): StageStats() for s in model_stages})
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in self._batches(reader, index):
                    _read_stats(batch, stats["read"])
                    for stage in cpu_stages:
                        batch = run_stage(stage, batch, stats[stage_name(stage)])
                    while not stop.is_set():
                        try:
                            q.put(batch, timeout=0.5)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(_END)
            except BaseException as e:  # hand the failure to the consumer
                q.put(e)

        thread = threading.Thread(target=produce, name=f"pixsieve-read-{index}", daemon=True)
        thread.start()
        tables: list[pa.Table] = []
        try:
            while True:
                item = q.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                batch = item
                for stage in model_stages:
                    batch = run_stage(stage, batch, stats[stage_name(stage)])
                batch.release_bytes()
                tables.append(batch_to_table(batch))
                progress(len(batch))
        finally:
            stop.set()
            thread.join()
        samples = sum(t.num_rows for t in tables)
        if reader.error is not None and samples == 0:
            tables.append(shard_error_row(url, reader.error))
        table = pa.concat_tables(tables, promote_options="permissive") if tables else None
        if table is not None:
            self.layout.write_table(self._path(index), table)
        summary = {
            "samples": samples,
            "error": reader.error,
            "stats": {name: s.to_dict() for name, s in stats.items()},
        }
        self.layout.write_json(self.layout.marker(PASS, shard_id(index)), summary)
        return summary

    def fail(self, index: int, error: str) -> dict[str, Any]:
        """Record every identifiable sample of a shard that kept failing as an error."""
        url = self.shards[index].url
        reader = TarShardReader(url, self.storage_options)
        rows: list[RawSample] = []
        try:
            rows = list(reader)
        except Exception:  # the reader itself never raises, but be safe
            rows = []
        reason = f"shard_error: {error}"
        if rows:
            batch = ImageBatch.from_samples(rows, url, index)
            batch.drop(np.ones(len(batch), dtype=bool), reason, status=ERROR)
            table = batch_to_table(batch)
        else:
            table = shard_error_row(url, error)
        self.layout.write_table(self._path(index), table)
        read = StageStats()
        read.counts.update({"in": len(rows), "errors_shard_error": len(rows)})
        summary = {"samples": len(rows), "error": error, "stats": {"read": read.to_dict()}}
        self.layout.write_json(self.layout.marker(PASS, shard_id(index)), summary)
        return summary
