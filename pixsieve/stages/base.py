"""The stage protocol, the filter base class and per-stage counters.

A stage stores settings in its constructor (cheap to pickle and ship to workers), loads heavy
things in :meth:`Stage.setup` once per worker, and transforms a batch in :meth:`Stage.process`.
Stages never import an executor. Counters are computed in one place (:func:`run_stage`) from the
batch's fate columns, so a stage only has to mark what it drops and why.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from pixsieve.batch import KEPT, ImageBatch


@dataclass(frozen=True)
class Resources:
    """What one instance of a stage needs from the machine it runs on."""

    cpus: float = 1.0
    gpus: float = 0.0


@runtime_checkable
class StageLike(Protocol):
    """Anything with ``setup()`` and ``process(batch)`` can be a stage."""

    def setup(self) -> None:
        """Load heavy state once per worker."""

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Transform one batch."""
        ...


class Stage(ABC):
    """Base class for built-in stages.

    Class attributes describe the stage to executors and the pipeline:

    - ``name``: a short identifier used in counters, ``--skip`` and ``run.json``.
    - ``resources``: CPUs/GPUs one instance needs.
    - ``needs_embeddings``: the stage reads ``batch.columns["embedding"]`` (skipped with
      ``--skip embed``).
    - ``is_model``: the stage runs a neural network (placed in an actor pool on Ray, fed by a
      prefetching producer locally).
    """

    name: ClassVar[str] = "stage"
    resources: ClassVar[Resources] = Resources()
    needs_embeddings: ClassVar[bool] = False
    is_model: ClassVar[bool] = False

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models or other heavy state; called once per worker before ``process``."""

    @abstractmethod
    def process(self, batch: ImageBatch) -> ImageBatch:
        """Transform one batch and return it."""

    def tally(self, batch: ImageBatch, entered: np.ndarray) -> dict[str, int]:
        """Extra counters of one processed batch (``entered``: kept on entry); none by default.

        For what a stage notices without dropping (e.g. samples it could not score).
        """
        return {}

    def describe(self) -> dict[str, Any]:
        """Return the stage's settings for ``run.json`` (public attributes by default)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class Filter(Stage):
    """Base class for filters: compute optional score columns, then decide what to keep.

    Subclasses fill :meth:`keep` (and optionally :meth:`score`). Scores are recorded for every
    decoded sample, kept or already removed, so threshold sweeps can be answered later. Samples
    that fail :meth:`keep` are marked ``removed`` with ``reason`` (the class attribute, or a
    per-sample list from :meth:`reasons`). With ``score_only=True`` nothing is removed.
    """

    reason: ClassVar[str] = "filtered"

    def __init__(self, score_only: bool = False) -> None:
        self.score_only = score_only

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        """Return per-sample score columns (length ``N``) to record; none by default."""
        return {}

    @abstractmethod
    def keep(self, batch: ImageBatch) -> np.ndarray:
        """Return a boolean mask of samples to keep (only decoded samples are consulted)."""

    def reasons(self, batch: ImageBatch, keep: np.ndarray) -> str | list[str]:
        """Return the drop reason (one string, or one per sample); ``reason`` by default."""
        return self.reason

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Record scores, then remove decoded samples that fail :meth:`keep`."""
        decoded = batch.decoded
        for name, values in self.score(batch).items():
            values = np.asarray(values)
            if values.dtype.kind == "f" and not decoded.all():
                values = values.astype(np.float32 if values.dtype.itemsize <= 4 else np.float64)
                values[~decoded] = np.nan  # no score for what was never decoded
            batch.set_column(name, values)
        if not self.score_only:
            keep = np.asarray(self.keep(batch), dtype=bool)
            batch.drop(batch.decoded & ~keep, self.reasons(batch, keep))
        return batch


def stage_name(stage: object) -> str:
    """Name of a stage for counters: its ``name`` attribute or its class name."""
    return str(getattr(stage, "name", None) or type(stage).__name__)


def reason_code(reason: str) -> str:
    """Counter suffix of a reason: the part before ``:`` (``decode_error: x`` → decode_error)."""
    return reason.split(":", 1)[0].strip().replace(" ", "_")


class StageStats:
    """Counters for one stage: ``in``, ``kept``, ``dropped_<reason>``, ``errors_<reason>``, time."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: float = 0.0

    def merge(self, other: dict[str, Any]) -> None:
        """Add counters saved by :meth:`to_dict` (from another worker or shard)."""
        self.counts.update(other.get("counts", {}))
        self.seconds += float(other.get("seconds", 0.0))

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form for completion markers and ``run.json``."""
        return {"counts": dict(self.counts), "seconds": round(self.seconds, 6)}


def run_stage(stage: StageLike, batch: ImageBatch, stats: StageStats) -> ImageBatch:
    """Run ``stage`` on ``batch`` and update ``stats`` from the change in the fate columns."""
    before = batch.status == KEPT
    start = time.perf_counter()
    out = stage.process(batch)
    stats.seconds += time.perf_counter() - start
    if not isinstance(out, ImageBatch):
        raise TypeError(f"stage {stage_name(stage)} returned {type(out).__name__}, not ImageBatch")
    if len(out) != len(before):
        raise ValueError(
            f"stage {stage_name(stage)} changed the batch size from {len(before)} to {len(out)}; "
            "drop samples with batch.drop(mask, reason) instead"
        )
    stats.counts["in"] += int(before.sum())
    after = out.status == KEPT
    stats.counts["kept"] += int(after.sum())
    for i in np.flatnonzero(before & ~after):
        prefix = "errors" if out.status[i] == 2 else "dropped"
        stats.counts[f"{prefix}_{reason_code(out.reason[i] or 'unknown')}"] += 1
    tally = getattr(stage, "tally", None)
    if callable(tally):
        stats.counts.update({k: v for k, v in tally(out, before).items() if v})
    return out
