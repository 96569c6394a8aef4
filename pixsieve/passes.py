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

from pixsieve.devices import replica_devices
from pixsieve.executors import Executor, TaskResult
from pixsieve.io.limits import ReadLimits
from pixsieve.io.schemas import stage_columns
from pixsieve.io.shards import ShardRef, partition_by_bytes
from pixsieve.progress import PassProgress
from pixsieve.run.against import earlier_exact
from pixsieve.run.earlier import EarlierOutput, check_outputs, open_outputs
from pixsieve.run.export import ExportWorker
from pixsieve.run.index import write_index
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
    ``against``: earlier curate outputs to deduplicate against (``curate --against``);
    ``model``: the embedding model's id, recorded in the run's index (``OUT/index``).
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
    against: tuple[str, ...] = ()
    model: str | None = None
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
        earlier = open_outputs(list(self.against), self.storage_options)
        indexes = check_outputs(earlier, self.model, self.semantic_dedup, self.exact_dedup)
        total = self.scan(earlier) if first == 0 and self.exact_dedup else None
        fresh = self.score(total) if first <= 1 else True
        if fresh:
            self._forget("semantic")
            self._drop(self.layout.semantic_dir())
            self._drop(self.layout.index_dir())
        if self.semantic_dedup is not None:
            with self._timed("semantic_dedup"):
                self.semantic = run_semantic_dedup(
                    self.layout,
                    self.shards,
                    self.semantic_dedup,
                    map_calls=self.executor.map_calls,
                    memory_limit=self.memory_limit,
                    workers=self._workers(),
                    against=[o.path for o in indexes],
                    against_names={o.path: o.label for o in indexes},
                    model=self.model,
                )
        if fresh:
            self._forget("export")
        self.export(total)
        self.index([o.label for o in earlier])

    def index(self, parents: list[str]) -> None:
        """Write the run's index for later runs ``--against`` it (``OUT/index``)."""
        if self._ran("export"):
            self._drop(self.layout.index_meta())
        kept = sum(int(r.summary.get("kept", 0)) for r in self.results["export"])
        settings = {
            "model": self.model,
            "exact": self.exact_dedup,
            "semantic": self.semantic_dedup is not None,
        }
        with self._timed("index"):
            write_index(
                self.layout, self._partitions(), kept, settings, parents, self.executor.map_calls
            )

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

    def scan(self, earlier: list[EarlierOutput] | None = None) -> int:
        """Hash every image; decide exact duplicates (and, with ``earlier`` outputs, which
        images they kept); return the number of samples."""
        n = len(self.shards)
        with self._timed("scan"):
            worker = ScanWorker(self.layout, self.shards, self.storage_options, self.read_limits)
            bar = self.bars.bar("scan", None)
            self.results["scan"] = list(
                self.executor.map(worker, range(n), retries=self.retries, progress=bar)
            )
            if self._ran("scan"):  # new hashes: decide exact duplicates again
                self._drop(self.layout.marker("scan", "exact"))
                self._drop(self.layout.marker("scan", "earlier"))
                self._drop(self.layout.exact_work())
            exact_duplicates(
                self.layout, n, memory_limit=self.memory_limit, map_calls=self.executor.map_calls
            )
            if earlier:
                earlier_exact(self.layout, n, earlier, self.executor.map_calls)
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
        local = self.executor.name == "local"
        worker.replicas = _replicas(self.stages) if local else []
        # one local model thread takes the shards in order: read the next one ahead
        worker.read_ahead = local and has_model and len(worker.replicas) <= 1
        with self._timed("score"):
            try:
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
            finally:
                worker.close()  # feeds read ahead that no task claimed
        return self._ran("score")

    def export(self, total: int | None) -> None:
        """Copy kept samples into output shards by partition; write the manifest."""
        parts = self._partitions()
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

    def _partitions(self) -> list[list[int]]:
        """The export partitions (input shard indexes; fixed by the input sizes)."""
        return partition_by_bytes(self.shards, self.partition_bytes)

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
        ran = [r.summary for r in self.results.get("score", []) if r.summary.get("device")]
        record["devices"] = sorted({str(s["device"]) for s in ran})  # where models ran
        chosen = sorted({str(s["decoder"]) for s in ran if s.get("decoder")})
        if decoder == "auto" and chosen:  # chosen on the workers
            record["decoder"] = chosen[0] if len(chosen) == 1 else chosen
        record.update(extra or {})
        self.layout.write_json(self.layout.run_json(), record)
        return record


def _resources(stages: list[StageLike]) -> dict[str, float]:
    """The most CPUs and GPUs any single stage asks for."""
    cpus = max((getattr(getattr(s, "resources", None), "cpus", 1.0) for s in stages), default=1.0)
    gpus = max((getattr(getattr(s, "resources", None), "gpus", 0.0) for s in stages), default=0.0)
    return {"cpus": float(cpus), "gpus": float(gpus)}


def _replicas(stages: list[StageLike]) -> list[str]:
    """One model replica per visible GPU for a model stage on ``auto`` / ``cuda``."""
    model = next((s for s in stages if getattr(s, "is_model", False)), None)
    if model is None:
        return []
    return replica_devices(str(getattr(model, "device", "cpu")))
