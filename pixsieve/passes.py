"""The pass sequence of a run: scan → score → semantic dedup → export, startable at any pass.

:class:`Passes` is what :meth:`pixsieve.Pipeline.run` runs, and what
:func:`pixsieve.refilter.refilter` runs from ``semantic`` on (after writing the sample caches
that scan and score would have written). Every pass places its tasks through the one executor
it is given; the passes themselves (:mod:`pixsieve.run`) never import an executor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pixsieve.executors import Executor, TaskResult
from pixsieve.io.limits import ReadLimits
from pixsieve.io.schemas import stage_columns
from pixsieve.io.shards import ShardRef, partition_by_bytes
from pixsieve.progress import PassProgress
from pixsieve.run.export import ExportWorker
from pixsieve.run.layout import RunLayout
from pixsieve.run.scan import ScanWorker, exact_duplicates
from pixsieve.run.score import ScoreWorker
from pixsieve.run.semantic import run_semantic_dedup
from pixsieve.run.summary import build_run_record
from pixsieve.stages.base import StageLike

PASSES: tuple[str, ...] = ("scan", "score", "semantic", "export")
"""The passes of a run, in order (the names :meth:`Passes.run` starts from)."""


@dataclass
class Passes:
    """The passes of one run, in order, sharing its layout, shards, executor and bars.

    Settings mirror :class:`pixsieve.Pipeline`'s. ``columns`` are the stage columns the
    run records (default: those ``stages`` declare; ``refilter`` gives the earlier run's).
    ``results`` (task results per pass that
    ran), ``semantic`` (the semantic pass's summary) and ``timings`` fill in as passes run.
    """

    layout: RunLayout
    shards: list[ShardRef]
    executor: Executor
    stages: list[StageLike] = field(default_factory=list)
    exact_dedup: bool = True
    semantic_dedup: Any = None
    batch_size: int = 256
    samples_per_shard: int = 1000
    partition_bytes: int = 2 << 30
    retries: int = 1
    read_limits: ReadLimits = field(default_factory=ReadLimits)
    columns: dict[str, Any] | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    memory_limit: int | None = None
    bars: PassProgress = field(default_factory=lambda: PassProgress(False))
    results: dict[str, list[TaskResult]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    semantic: dict[str, Any] | None = None

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start

    def run(self, start: str = "scan") -> None:
        """Run the passes from ``start`` on: scan (when exact dedup is on) → score → semantic
        dedup (when set) → export.

        A global step is redone whenever a task before it ran in this invocation (after an
        interruption, or to retry a shard that failed last time), so its decision always
        covers every shard. Starting after ``score`` means the caller wrote the sample caches
        anew, so everything after them is redone.
        """
        if start not in PASSES:
            raise ValueError(f"unknown pass {start!r}; passes: {', '.join(PASSES)}")
        first = PASSES.index(start)
        total = self.scan() if first == 0 and self.exact_dedup else None
        fresh = self.score(total) if first <= 1 else True
        if fresh:
            self._forget("semantic")
            self._drop(self.layout.semantic_dir())
        if self.semantic_dedup is not None:
            with self._timed("semantic_dedup"):
                self.semantic = run_semantic_dedup(
                    self.layout,
                    self.shards,
                    self.semantic_dedup,
                    map_calls=self.executor.map_calls,
                    memory_limit=self.memory_limit,
                    workers=self._workers(),
                )
        if fresh:
            self._forget("export")
        self.export(total)

    def _workers(self) -> int:
        """Tasks that run at once (the semantic pass splits its memory budget by them)."""
        return int(self.executor.describe().get("workers") or os.cpu_count() or 1)

    def _forget(self, pass_name: str) -> None:
        """Drop a pass's completion markers so it runs again."""
        self._drop(self.layout.done_dir(pass_name))

    def _drop(self, path: str) -> None:
        if self.layout.fs.exists(path):
            self.layout.fs.rm(path, recursive=True)

    def _ran(self, pass_name: str) -> bool:
        return any(not r.resumed for r in self.results[pass_name])

    def scan(self) -> int:
        """Hash every image; decide exact duplicates; return the number of samples."""
        n = len(self.shards)
        with self._timed("scan"):
            worker = ScanWorker(self.layout, self.shards, self.storage_options, self.read_limits)
            bar = self.bars.bar("scan", None)
            self.results["scan"] = list(
                self.executor.map(worker, range(n), retries=self.retries, progress=bar)
            )
            if self._ran("scan"):  # new hashes: decide exact duplicates again
                self._drop(self.layout.marker("scan", "exact"))
                self._drop(self.layout.exact_work())
            exact_duplicates(
                self.layout, n, memory_limit=self.memory_limit, map_calls=self.executor.map_calls
            )
        return sum(int(r.summary.get("samples", 0)) for r in self.results["scan"])

    def score(self, total: int | None) -> bool:
        """Run the stages over every shard (one worker when a stage runs a model).

        Returns whether any shard was scored in this invocation (not resumed).
        """
        has_model = any(getattr(s, "is_model", False) for s in self.stages)
        worker = ScoreWorker(
            self.layout,
            self.shards,
            self.stages,
            self.batch_size,
            self.storage_options,
            self.exact_dedup,
            limits=self.read_limits,
        )
        with self._timed("score"):
            self.results["score"] = list(
                self.executor.map(
                    worker,
                    range(len(self.shards)),
                    retries=self.retries,
                    progress=self.bars.bar("score", total),
                    parallel=not has_model,
                    resources=_resources(self.stages),
                )
            )
        return self._ran("score")

    def export(self, total: int | None) -> None:
        """Copy kept samples into output shards by partition; write the manifest."""
        parts = partition_by_bytes(self.shards, self.partition_bytes)
        worker = ExportWorker(
            self.layout,
            self.shards,
            parts,
            self.samples_per_shard,
            self.storage_options,
            self.semantic is not None,
            limits=self.read_limits,
            columns=self.columns if self.columns is not None else stage_columns(self.stages),
        )
        with self._timed("export"):
            total_shards = worker.plan()
            stale = [n for n in self.layout.output_numbers() if n >= total_shards]
            self.layout.drop_output_shards(stale)  # left by an earlier run with more shards
            self.results["export"] = list(
                self.executor.map(
                    worker,
                    range(len(parts)),
                    retries=self.retries,
                    progress=self.bars.bar("export", total),
                )
            )

    def record(
        self,
        *,
        config: dict[str, Any],
        stages: list[dict[str, Any]],
        decoder: str,
        started: float,
        earlier: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write and return ``run.json`` for what these passes did (see
        :func:`pixsieve.run.summary.build_run_record`), plus the ``extra`` entries."""
        record = build_run_record(
            self.layout,
            self.shards,
            config=config,
            stages=stages,
            decoder=decoder,
            semantic_config=self.semantic_dedup,
            executor=self.executor.describe(),
            results=self.results,
            semantic=self.semantic,
            timings=self.timings,
            started=started,
            earlier=earlier,
        )
        record.update(extra or {})
        self.layout.write_json(self.layout.run_json(), record)
        return record


def _resources(stages: list[StageLike]) -> dict[str, float]:
    """The most CPUs and GPUs any single stage asks for."""
    cpus = max((getattr(getattr(s, "resources", None), "cpus", 1.0) for s in stages), default=1.0)
    gpus = max((getattr(getattr(s, "resources", None), "gpus", 0.0) for s in stages), default=0.0)
    return {"cpus": float(cpus), "gpus": float(gpus)}
