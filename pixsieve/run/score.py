"""Score pass: decode, filter, embed and score every sample of a shard; cache the results.

CPU stages (decode and anything before the first model stage) run in a producer thread
(:class:`~pixsieve.run.feed.Feed`) a bounded number of batches ahead, and on local runs the
next shard's feed opens while one is scored, so decoding overlaps the model across shards and
memory stays flat. Model stages launch batch k+1 before batch k lands
(:mod:`pixsieve.stages.launch`).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from pixsieve.batch import ERROR, ImageBatch
from pixsieve.devices import bound_device, model_device, place_stage
from pixsieve.io.limits import READ_BUDGET, ReadLimits
from pixsieve.io.schemas import conform, sample_id, samples_schema, stage_columns
from pixsieve.io.shards import ShardRef
from pixsieve.io.tables import batch_to_table, mark_errors, reason_columns
from pixsieve.io.tar_reader import RawSample, TarShardReader
from pixsieve.progress import Progress
from pixsieve.run.feed import Feed
from pixsieve.run.layout import RunLayout, shard_id
from pixsieve.stages.base import StageLike, StageStats, run_stage, stage_name
from pixsieve.stages.decode.base import find_decoder
from pixsieve.stages.exact import Duplicates, ExactDuplicateStage
from pixsieve.stages.launch import HostCopy, land, launch, launchers

PASS = "score"


_NOT_ADJACENT = "duplicate_key: {key} (its members are not adjacent in the shard)"
log = logging.getLogger(__name__)


def _read_stats(batch: ImageBatch, stats: StageStats) -> None:
    """Counters of reading: every sample entered; those the reader could not use are errors."""
    stats.count(np.ones(len(batch), dtype=bool), batch.alive, batch.status == ERROR, batch.reason)


def shard_error_row(index: int, error: str | list[str]) -> pa.Table:
    """One manifest row (``position = -1``, no key) per stretch of shard ``index`` that was
    unreadable; their ``sample_id`` numbers them ``-1, -2, ...``."""
    errors = [error] if isinstance(error, str) else list(error)
    n = len(errors)
    code, detail = reason_columns([f"shard_error: {e}" for e in errors])
    return pa.table(
        {
            "sample_id": pa.array([sample_id(index, -k) for k in range(1, n + 1)], pa.string()),
            "position": pa.array([-1] * n, pa.int64()),
            "key": pa.array([None] * n, pa.string()),
            "members": pa.array([[]] * n, pa.list_(pa.string())),
            "status": pa.array(["error"] * n, pa.string()),
            "reason": code,
            "reason_detail": detail,
        }
    )


class ScoreWorker:
    """Run the stage list over one input shard and cache its per-sample table.

    Each thread that runs tasks gets its own copy of the stages, set up once (a *worker* in
    the stage protocol's sense), so user stages with state are safe in parallel passes.
    """

    def __init__(
        self,
        layout: RunLayout,
        shards: list[ShardRef],
        stages: list[StageLike],
        batch_size: int,
        storage_options: dict[str, Any],
        exact: bool,
        prefetch: int = 2,
        limits: ReadLimits | None = None,
    ) -> None:
        self.layout = layout
        self.limits = limits or ReadLimits()
        self.shards = shards
        self.stages = stages
        self.batch_size = batch_size
        self.storage_options = storage_options
        self.exact = exact
        self.prefetch = prefetch
        self.replicas: list[str] = []  # devices of the model replicas (placement)
        self.read_ahead = False  # open the next shard's feed while scoring one (local runs)
        self._feeds: set[Feed] = set()  # feeds read ahead, not yet claimed
        self.schema = samples_schema(stage_columns(stages))
        self._duplicates: dict[int, Duplicates] | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_duplicates=None, _lock=None, _local=None, _feeds=set())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._local = threading.local()

    def setup(self) -> None:
        """Load the exact-duplicate decisions and this thread's stages (models) once."""
        with self._lock:
            if self._duplicates is None:
                self._duplicates = self._load_duplicates()
        self._thread_stages()

    def _load_duplicates(self) -> dict[int, Duplicates]:
        out: dict[int, Duplicates] = {}
        if self.exact:
            dups = self.layout.read_table(self.layout.exact_duplicates())
            for row in dups.to_pylist():
                out.setdefault(row["shard_index"], {})[row["position"]] = (
                    row["duplicate_of"],
                    row["duplicate_of_source"],
                    row.get("duplicate_of_run"),
                )
        return out

    def _thread_stages(self) -> list[StageLike]:
        stages = getattr(self._local, "stages", None)
        if stages is None:
            stages = copy.deepcopy(self.stages)
            device = bound_device()  # the replica's device, when an executor placed one
            for stage in stages:
                place_stage(stage, device, len(self.replicas))
                stage.setup()
            self._local.stages = stages
            self._local.device = device or model_device(stages)
        return stages

    def done(self, index: int) -> dict[str, Any] | None:
        """Saved summary when this shard was already scored."""
        return self.layout.read_json(self.layout.marker(PASS, shard_id(index)))

    def _batches(self, reader: TarShardReader, index: int) -> Iterator[tuple[ImageBatch, int]]:
        """Batches with the bytes they hold in :data:`READ_BUDGET` (the receiver releases them).

        When the budget is full, the batch being filled is handed on first, so a waiting
        reader holds nothing of the budget (no deadlock) but the one sample it just read.
        """
        chunk: list[RawSample] = []
        held = 0
        cap = self.limits.read_ahead_bytes
        try:
            for sample in reader:
                if not READ_BUDGET.try_acquire(sample.nbytes, cap):
                    if chunk:
                        out, chunk, held = (chunk, held), [], 0
                        yield ImageBatch.from_samples(out[0], reader.url, index), out[1]
                    READ_BUDGET.acquire(sample.nbytes, cap)
                chunk.append(sample)
                held += sample.nbytes
                if len(chunk) >= self.batch_size or held >= self.limits.batch_bytes:
                    out, chunk, held = (chunk, held), [], 0
                    yield ImageBatch.from_samples(out[0], reader.url, index), out[1]
            if chunk:
                out, chunk, held = (chunk, held), [], 0
                yield ImageBatch.from_samples(out[0], reader.url, index), out[1]
        finally:
            READ_BUDGET.release(held)  # what was read but never handed on

    def run(self, index: int, progress: Progress) -> dict[str, Any]:
        """Score one shard; write its sample cache (``layout.samples``) and marker."""
        self.setup()
        stages = self._thread_stages()
        split = next(
            (i for i, s in enumerate(stages) if getattr(s, "is_model", False)), len(stages)
        )
        model_stages = stages[split:]
        feed = self._claim(index, stages[:split])
        reader = feed.reader
        if self.read_ahead:
            self._read_ahead(feed, index, stages[:split])
        stats = {**feed.stats, **{stage_name(s): StageStats() for s in model_stages}}
        tables = self._pump(feed, model_stages, stats, progress)
        samples = sum(t.num_rows for t in tables)
        if reader.lost:
            tables.append(shard_error_row(index, reader.lost))
        table = pa.concat_tables(
            [conform(t, self.schema, warn=True) for t in tables] or [self.schema.empty_table()]
        )
        table = mark_errors(table, _NOT_ADJACENT, reader.repeated_keys)
        if reader.untrusted:
            table = mark_errors(table, f"shard_error: {reader.lost[-1]}")
        self.layout.write_table(self.layout.samples(index), table)
        summary = {
            "samples": samples,
            "error": reader.error,
            "device": self._local.device,
            "decoder": str(getattr(find_decoder(stages), "backend", "custom")),
            "stats": {name: s.to_dict() for name, s in stats.items()},
        }
        self.layout.write_json(self.layout.marker(PASS, shard_id(index)), summary)
        return summary

    def _open(self, index: int, cpu_stages: list[StageLike], start: bool = True) -> Feed:
        """Start the feed of shard ``index`` (reader + CPU stages in a producer thread)."""
        reader = TarShardReader(self.shards[index].url, self.storage_options, self.limits)
        staged = list(cpu_stages)
        if self.exact:
            assert self._duplicates is not None
            staged.insert(0, ExactDuplicateStage(self._duplicates.get(index, {})))
        feed = Feed(index, reader, self._batches, staged, self.prefetch, _read_stats)
        return feed.start() if start else feed

    def _claim(self, index: int, cpu_stages: list[StageLike]) -> Feed:
        """The feed read ahead for ``index`` by this thread, else a new one (a wrong guess is
        closed, its bytes given back)."""
        ahead = getattr(self._local, "ahead", None)
        self._local.ahead = None
        if ahead is not None:
            with self._lock:
                self._feeds.discard(ahead[0])
            if ahead[0].index == index:
                self._local.spare = cpu_stages  # the current slot is free for the next one
                return ahead[0].start()  # started already unless the last feed failed early
            ahead[0].close()
        return self._open(index, cpu_stages)

    def _read_ahead(self, current: Feed, index: int, cpu_stages: list[StageLike]) -> None:
        """Prepare the feed of the next shard not yet done, on the other copy of the CPU stages
        (two producers never share a stage); it starts when ``current`` has read its shard."""
        nxt = next((j for j in range(index + 1, len(self.shards)) if self.done(j) is None), None)
        if nxt is None:
            return
        spare = getattr(self._local, "spare", None)
        if spare is None or spare is cpu_stages:
            spare = copy.deepcopy(cpu_stages)
            for stage in spare:
                stage.setup()
        feed = self._open(nxt, spare, start=False)
        current.then(feed.start)
        self._local.ahead = (feed, spare)
        self._local.spare = cpu_stages
        with self._lock:
            self._feeds.add(feed)

    def close(self) -> None:
        """Close the feeds read ahead that no task claimed (the pass ended or failed)."""
        with self._lock:
            feeds, self._feeds = list(self._feeds), set()
        for feed in feeds:
            feed.close()

    def _pump(
        self,
        feed: Feed,
        model_stages: list[StageLike],
        stats: dict[str, StageStats],
        progress: Progress,
    ) -> list[pa.Table]:
        """Model stages here over the feed's batches, launched one batch ahead."""
        tables: list[pa.Table] = []
        ahead = launchers(model_stages)
        inflight: list[tuple[ImageBatch, int, HostCopy | None]] = []  # launched, not landed

        def finish(batch: ImageBatch, held: int, copy: HostCopy | None) -> None:
            try:
                land(batch, copy)
                for stage in model_stages:
                    batch = run_stage(stage, batch, stats[stage_name(stage)])
                batch.release_bytes()
            finally:
                READ_BUDGET.release(held)
            tables.append(batch_to_table(batch))
            progress(len(batch))

        try:
            while True:
                if inflight and not feed.ready():  # land k before waiting: never hold its
                    finish(*inflight.pop(0))  # bytes while the reader waits for budget
                if (item := feed.next()) is None:
                    break
                batch, held = item
                inflight.append((batch, held, None))
                inflight[-1] = (batch, held, launch(batch, ahead, stats))  # batch k+1 queued...
                if len(inflight) > 1:
                    finish(*inflight.pop(0))  # ...before batch k is consumed
            while inflight:
                finish(*inflight.pop(0))
        finally:
            feed.close()
            for left in inflight:  # launched batches nobody will land
                READ_BUDGET.release(left[1])
        return tables

    def fail(self, index: int, error: str) -> dict[str, Any]:
        """Record every identifiable sample of a shard that kept failing as an error.

        Streams the shard keeping names only (no bytes). Writes the cache table so the export
        pass accounts for the samples, but no completion marker: the next run retries. What
        cannot even be listed becomes one ``position = -1`` row; nothing here raises except a
        failure to write the table (which ends the run).
        """
        url = self.shards[index].url
        reason = f"shard_error: {error}"
        read = StageStats()
        tables: list[pa.Table] = []
        chunk: list[RawSample] = []

        def flush() -> None:
            batch = ImageBatch.from_samples(chunk, url, index)
            batch.drop(np.ones(len(batch), dtype=bool), reason, status=ERROR)
            _read_stats(batch, read)
            tables.append(batch_to_table(batch))
            chunk.clear()

        lost: list[str] = []
        try:
            reader = TarShardReader(url, self.storage_options, self.limits, check_sidecars=False)
            for sample in reader:
                sample.data = [b""] * len(sample.data)  # names are enough
                chunk.append(sample)
                if len(chunk) >= self.batch_size:
                    flush()
            if chunk:
                flush()
            lost = list(reader.lost)
        except Exception as e:  # the shard cannot even be listed to its end
            log.warning("listing %s after its failure failed too: %s", url, e)
            lost = [f"{error} (the rest could not be listed: {type(e).__name__}: {e})"[:1000]]
            try:
                if chunk:
                    flush()
            except Exception as e2:  # never let recording a failure fail
                log.warning("could not record the samples listed from %s: %s", url, e2)
        if lost or not tables:
            tables.append(shard_error_row(index, lost or [error]))
        table = pa.concat_tables([conform(t, self.schema) for t in tables])
        self.layout.write_table(self.layout.samples(index), table)
        return {"samples": read.counts["in"], "error": error, "stats": {"read": read.to_dict()}}
