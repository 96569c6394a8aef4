"""The public entry point: a list of stages run over input shards by an executor.

>>> from pixsieve import Pipeline
>>> from pixsieve.stages import DecodeStage, ImageSizeFilter
>>> Pipeline([DecodeStage(), ImageSizeFilter(min_side=64)]).run(["data/"], "out/")  # doctest: +SKIP

A run is a sequence of resumable passes (see ``docs/architecture.md``): *scan* (hash images for
exact dedup), *score* (decode, filter, embed, score), *semantic dedup* (global), *export* (copy
kept samples' original bytes, write the manifest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pixsieve.executors import Executor, TaskResult, make_executor
from pixsieve.io.limits import ReadLimits
from pixsieve.io.shards import InputError, ShardRef, discover_shards, partition_by_bytes
from pixsieve.progress import PassProgress
from pixsieve.run.export import ExportWorker
from pixsieve.run.layout import OutputError, RunLayout
from pixsieve.run.scan import ScanWorker, exact_duplicates
from pixsieve.run.score import ScoreWorker
from pixsieve.run.semantic import run_semantic_dedup
from pixsieve.run.summary import build_run_record, check_fingerprint
from pixsieve.stages.base import StageLike
from pixsieve.stages.decode import DecodeStage

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run produced: the ``run.json`` record and where outputs are."""

    output: str
    record: dict[str, Any]
    shard_errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Totals: ``input``, ``kept``, ``removed``, ``error``."""
        return self.record["totals"]


class Pipeline:
    """Stages plus the run-wide passes (exact and semantic dedup) and export settings.

    Args:
        stages: stage objects run on every batch in order. A decode stage is prepended when
            none is present. Any object with ``setup()`` and ``process(batch)`` works.
        exact_dedup: drop byte-identical images before decoding.
        semantic_dedup: a :class:`pixsieve.dedup.SemanticDedupConfig`, or ``None`` to skip.
        batch_size: samples per batch.
        samples_per_shard: samples per output tar.
        partition_bytes: input bytes per export partition (fixes output layout independent of
            the executor).
        retries: extra attempts for a failing shard before it is recorded as an error.
        read_limits: per-sample limits of the tar reader (``docs/limits.md``).
        config: the effective configuration to record in ``run.json``.
    """

    def __init__(
        self,
        stages: list[StageLike],
        *,
        exact_dedup: bool = True,
        semantic_dedup: Any = None,
        batch_size: int = 256,
        samples_per_shard: int = 1000,
        partition_bytes: int = 2 << 30,
        retries: int = 1,
        read_limits: ReadLimits | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        if not any(getattr(s, "name", None) == "decode" for s in stages):
            stages = [DecodeStage(), *stages]
        for s in stages:
            if not (callable(getattr(s, "setup", None)) and callable(getattr(s, "process", None))):
                raise TypeError(f"{s!r} is not a stage: it needs setup() and process(batch)")
        self.stages = stages
        self.exact_dedup = exact_dedup
        self.semantic_dedup = semantic_dedup
        self.batch_size = batch_size
        self.samples_per_shard = samples_per_shard
        self.partition_bytes = partition_bytes
        self.retries = retries
        self.read_limits = read_limits or ReadLimits()
        self.config = config or {}

    def run(
        self,
        inputs: list[str | ShardRef] | str,
        output: str,
        executor: str | Executor = "local",
        *,
        workers: int | None = None,
        storage_options: dict[str, Any] | None = None,
        progress: bool = False,
        overwrite: bool = False,
        report: bool = True,
    ) -> RunResult:
        """Curate ``inputs`` into ``output``; re-running resumes from completion markers.

        Writes ``OUT/report.html`` at the end unless ``report=False``.
        """
        started = time.time()
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        opts = storage_options or {}
        shards = discover_shards(inputs, opts)
        layout = RunLayout.open(output, opts)
        shards = _outside(shards, layout)
        with layout.locked():  # one run per output at a time
            check_fingerprint(layout, shards, self, overwrite)
            ex = make_executor(executor, workers)
            with PassProgress(progress) as bars:
                passes = _Passes(self, layout, shards, opts, ex, bars)
                try:
                    passes.run_all()
                finally:
                    ex.shutdown()
            record = build_run_record(
                layout, shards, self, ex, passes.results, passes.semantic, passes.timings, started
            )
            layout.write_json(layout.path("run.json"), record)
            if report:
                _write_report(output, opts)
        return RunResult(output=output, record=record, shard_errors=record["shard_errors"])


@dataclass
class _Passes:
    """The passes of one run, in order, sharing its layout, shards, executor and bars."""

    pipeline: Pipeline
    layout: RunLayout
    shards: list[ShardRef]
    opts: dict[str, Any]
    ex: Executor
    bars: PassProgress
    results: dict[str, list[TaskResult]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    semantic: dict[str, Any] | None = None

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start

    def run_all(self) -> None:
        """scan (when exact dedup is on) → score → semantic dedup (when set) → export.

        A global step is redone whenever a task before it ran in this invocation (after an
        interruption, or to retry a shard that failed last time), so its decision always
        covers every shard.
        """
        p = self.pipeline
        total = self.scan() if p.exact_dedup else None
        fresh = self.score(total)
        if fresh:
            self._forget("semantic")
        if p.semantic_dedup is not None:
            with self._timed("semantic_dedup"):
                self.semantic = run_semantic_dedup(
                    self.layout, self.shards, p.semantic_dedup, map_calls=self.ex.map_calls
                )
        if fresh:
            self._forget("export")
        self.export(total)

    def _forget(self, pass_name: str) -> None:
        """Drop a pass's completion markers so it runs again."""
        self._drop(self.layout.path("cache", "done", pass_name))

    def _drop(self, path: str) -> None:
        if self.layout.fs.exists(path):
            self.layout.fs.rm(path, recursive=True)

    def _ran(self, pass_name: str) -> bool:
        return any(not r.resumed for r in self.results[pass_name])

    def scan(self) -> int:
        """Hash every image; decide exact duplicates; return the number of samples."""
        n = len(self.shards)
        p = self.pipeline
        with self._timed("scan"):
            worker = ScanWorker(self.layout, self.shards, self.opts, p.read_limits)
            bar = self.bars.bar("scan", None)
            self.results["scan"] = list(
                self.ex.map(worker, range(n), retries=p.retries, progress=bar)
            )
            if self._ran("scan"):  # new hashes: decide exact duplicates again
                self._drop(self.layout.marker("scan", "exact"))
            exact_duplicates(self.layout, n)
        return sum(int(r.summary.get("samples", 0)) for r in self.results["scan"])

    def score(self, total: int | None) -> bool:
        """Run the stages over every shard (one worker when a stage runs a model).

        Returns whether any shard was scored in this invocation (not resumed).
        """
        p = self.pipeline
        has_model = any(getattr(s, "is_model", False) for s in p.stages)
        worker = ScoreWorker(
            self.layout,
            self.shards,
            p.stages,
            p.batch_size,
            self.opts,
            p.exact_dedup,
            limits=p.read_limits,
        )
        with self._timed("score"):
            self.results["score"] = list(
                self.ex.map(
                    worker,
                    range(len(self.shards)),
                    retries=p.retries,
                    progress=self.bars.bar("score", total),
                    parallel=not has_model,
                    resources=_resources(p.stages),
                )
            )
        return self._ran("score")

    def export(self, total: int | None) -> None:
        """Copy kept samples into output shards by partition; write the manifest."""
        p = self.pipeline
        parts = partition_by_bytes(self.shards, p.partition_bytes)
        worker = ExportWorker(
            self.layout,
            self.shards,
            parts,
            p.samples_per_shard,
            self.opts,
            self.semantic is not None,
            limits=p.read_limits,
        )
        with self._timed("export"):
            self.results["export"] = list(
                self.ex.map(
                    worker,
                    range(len(parts)),
                    retries=p.retries,
                    progress=self.bars.bar("export", total),
                )
            )


def _outside(shards: list[ShardRef], layout: RunLayout) -> list[ShardRef]:
    """Leave out shards under the output directory (an output inside an input directory).

    A file the user named explicitly that lies inside the output is refused instead.
    """
    prefix = layout.fs.unstrip_protocol(layout.root).rstrip("/") + "/"
    named = [s.url for s in shards if s.explicit and s.url.startswith(prefix)]
    if named:
        raise InputError(
            f"input {named[0]} lies inside the output directory {layout.url}; "
            "move it out or choose another output"
        )
    kept = [s for s in shards if not s.url.startswith(prefix)]
    if not kept:
        raise InputError(f"every input shard lies inside the output directory {layout.url}")
    return kept


def _write_report(output: str, storage_options: dict[str, Any]) -> None:
    """Write ``report.html``; a failure there is logged, never fails a finished run."""
    from pixsieve.report import write_report

    try:
        write_report(output, storage_options=storage_options)
    except Exception as e:
        log.warning("the run finished, but report.html could not be written: %s", e)


def _resources(stages: list[StageLike]) -> dict[str, float]:
    """The most CPUs and GPUs any single stage asks for."""
    cpus = max((getattr(getattr(s, "resources", None), "cpus", 1.0) for s in stages), default=1.0)
    gpus = max((getattr(getattr(s, "resources", None), "gpus", 0.0) for s in stages), default=0.0)
    return {"cpus": float(cpus), "gpus": float(gpus)}


__all__ = ["OutputError", "Pipeline", "RunResult"]
