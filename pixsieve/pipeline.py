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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pixsieve.executors import Executor, make_executor
from pixsieve.io.limits import ReadLimits
from pixsieve.io.shards import InputError, ShardRef, discover_shards
from pixsieve.passes import Passes
from pixsieve.progress import PassProgress
from pixsieve.run.claim import claim_output
from pixsieve.run.earlier import EarlierOutput, check_outputs, open_outputs
from pixsieve.run.index import embedding_model
from pixsieve.run.layout import OutputError, RunLayout
from pixsieve.run.summary import describe_stage, fingerprint
from pixsieve.stages.base import StageLike
from pixsieve.stages.decode import DecodeStage, find_decoder

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
        memory_limit: bytes the exact and semantic dedup steps may use (``None``: half the
            machine's memory); sets their partition sizes, never their answers.
        read_limits: per-sample limits of the tar reader (``docs/limits.md``).
        against: earlier curate outputs (local directories) whose kept samples this run's
            exact and semantic dedup remove new copies of (``duplicate_of_earlier``); they
            are only read (``docs/dedup.md``).
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
        memory_limit: int | None = None,
        read_limits: ReadLimits | None = None,
        against: tuple[str, ...] | list[str] = (),
        config: dict[str, Any] | None = None,
    ) -> None:
        if find_decoder(stages) is None:
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
        self.memory_limit = memory_limit
        self.read_limits = read_limits or ReadLimits()
        self.against = tuple(str(a) for a in against)
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
        if self.against:  # before anything is written: a mismatch is one line
            earlier = open_outputs(list(self.against), opts)
            check_outputs(earlier, self.model, self.semantic_dedup, self.exact_dedup)
            _not_earlier(output, opts, earlier)
        layout = RunLayout.open(output, opts)
        shards = _outside(shards, layout)
        with layout.locked():  # one run per output at a time
            claim_output(layout, fingerprint(shards, self), overwrite)
            ex = make_executor(executor, workers)
            with PassProgress(progress) as bars:
                passes = self.passes(layout, shards, ex, opts, bars)
                try:
                    passes.run()
                finally:
                    ex.shutdown()
            record = passes.record(
                config=self.config,
                stages=[describe_stage(s) for s in self.stages],
                decoder=self.decoder,
                started=started,
            )
            if report:
                write_report_or_warn(output, opts)
        return RunResult(output=output, record=record, shard_errors=record["shard_errors"])

    def passes(
        self,
        layout: RunLayout,
        shards: list[ShardRef],
        executor: Executor,
        storage_options: dict[str, Any] | None = None,
        bars: PassProgress | None = None,
    ) -> Passes:
        """The :class:`~pixsieve.passes.Passes` of this pipeline over ``shards``."""
        return Passes(
            layout,
            shards,
            executor,
            stages=self.stages,
            exact_dedup=self.exact_dedup,
            semantic_dedup=self.semantic_dedup,
            batch_size=self.batch_size,
            samples_per_shard=self.samples_per_shard,
            partition_bytes=self.partition_bytes,
            retries=self.retries,
            memory_limit=self.memory_limit,
            read_limits=self.read_limits,
            against=self.against,
            model=self.model,
            storage_options=storage_options or {},
            bars=bars or PassProgress(False),
        )

    @property
    def model(self) -> str | None:
        """The id of the model behind the run's embeddings (recorded in ``OUT/index``)."""
        return embedding_model(self.stages)

    @property
    def decoder(self) -> str:
        """The decoder backend the decode stage uses (recorded in ``run.json``)."""
        return str(getattr(find_decoder(self.stages), "backend", "custom"))


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


def _not_earlier(output: str, opts: dict[str, Any], earlier: list[EarlierOutput]) -> None:
    """Refuse an output that is one of the earlier runs (they are never written)."""
    fs, path = url_to_fs(output, **opts)
    if isinstance(fs, LocalFileSystem):
        mine = str(Path(path).resolve())
        if any(o.path == mine for o in earlier):
            raise InputError(f"--against {output}: is the output; earlier runs are only read")
    if any(o.name == output for o in earlier):
        raise InputError(f"--against {output}: is the output; earlier runs are only read")


def write_report_or_warn(output: str, storage_options: dict[str, Any]) -> None:
    """Write ``report.html``; a failure there is logged, never fails a finished run."""
    from pixsieve.report.html import write_report

    try:
        write_report(output, storage_options=storage_options)
    except Exception as e:
        log.warning("the run finished, but report.html could not be written: %s", e)


__all__ = ["OutputError", "Pipeline", "RunResult"]
