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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from pixsieve.batch import ERROR, KEPT, ImageBatch, reason_code


@dataclass(frozen=True)
class Resources:
    """What one instance of a stage needs from the machine it runs on."""

    cpus: float = 1.0
    gpus: float = 0.0


def device_resources(device: str) -> Resources:
    """What a stage running on ``device`` needs: one GPU unless the device is the CPU.

    Decided from the setting, not from this machine: a cluster's driver may have no GPU while
    its workers do. Executors drop GPU requests where no node has a GPU.
    """
    on_gpu = device == "auto" or device.startswith("cuda")
    return Resources(cpus=1.0, gpus=1.0 if on_gpu else 0.0)


class DeviceResources:
    """A stage's ``resources`` from its ``device`` setting (:func:`device_resources`).

    Use as a class attribute, ``resources = DeviceResources()``: read on each access, so it
    follows the stage's current ``device``.
    """

    def __get__(self, stage: object, owner: type | None = None) -> Resources:
        return device_resources(str(getattr(stage, "device", "auto")))


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
    - ``columns``: the per-sample columns the stage sets and wants recorded, name → type
      (``"float32"``, ``"string"``, ``"list<float32>"``...: :data:`pixsieve.io.schemas.TYPES`).
      They fix the run's Parquet schemas (``docs/output.md``); an undeclared column is not
      recorded.
    """

    name: ClassVar[str] = "stage"
    columns: ClassVar[Mapping[str, str]] = {}
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

        For what a stage notices without dropping (e.g. samples it could not score, or how a
        decoder routed its images); ``run_stage`` adds them to the stage's counters.
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


def keep_at_least(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Keep scores ≥ ``threshold``; a missing (NaN) score never removes."""
    with np.errstate(invalid="ignore"):
        return np.isnan(scores) | (scores >= threshold)


def keep_below(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Keep scores < ``threshold``; a missing (NaN) score never removes."""
    with np.errstate(invalid="ignore"):
        return np.isnan(scores) | (scores < threshold)


_RULE_WORDS = {keep_at_least: "min {:.3g} (keep ≥)", keep_below: "max {:.3g} (remove ≥)"}


class ScoreFilter(Filter):
    """A filter that keeps a sample by comparing one score column with one threshold.

    A subclass declares its rule once, and everything else asks it: the stage's :meth:`keep`,
    threshold sweeps and ``refilter`` (which re-decide from cached scores, finding the class
    from ``run.json``) and the report (histogram, funnel step). Declare:

    - ``name`` / ``reason``: the stage name and the drop reason (usually equal);
    - ``column``: the float score column :meth:`score` writes (NaN where unscored; declared
      in ``columns`` as ``float32`` for you);
    - ``threshold_setting``: the constructor argument / attribute holding the threshold;
    - ``default_threshold``: its default (the one place it is defined);
    - ``threshold_key``: its name in ``[filters]``, sweep tables and CLI options
      (default ``<name>_threshold``);
    - :meth:`keep_scores`: the pure rule ``(scores, threshold) -> keep mask``
      (default: keep ≥ threshold; :func:`keep_below` keeps < threshold);
    - optionally ``threshold_range`` and ``threshold_meaning`` (checked values, error words),
      ``label`` (funnel), ``title`` (histogram), ``rule_words`` (threshold line, derived from
      the built-in rules) and
      ``score_format`` (thumbnail captions).

    See ``docs/writing-a-filter.md``.
    """

    column: ClassVar[str]
    threshold_setting: ClassVar[str] = "threshold"
    default_threshold: ClassVar[float]
    threshold_key: ClassVar[str] = ""
    threshold_range: ClassVar[tuple[float, float] | None] = None
    threshold_meaning: ClassVar[str] = "a number"
    label: ClassVar[str] = ""
    title: ClassVar[str] = ""
    rule_words: ClassVar[str] = ""
    score_format: ClassVar[str] = "{:.3g}"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("threshold_key") and "name" in cls.__dict__:
            cls.threshold_key = f"{cls.name}_threshold"
        if not cls.__dict__.get("label") and "name" in cls.__dict__:
            cls.label = cls.name
        if not cls.__dict__.get("title") and "column" in cls.__dict__:
            cls.title = cls.column.replace("_", " ")
        if "column" in cls.__dict__ and "columns" not in cls.__dict__:
            cls.columns = {**cls.columns, cls.column: "float32"}

    def __init__(
        self, threshold: float | None = None, score_only: bool = False, **named: float | None
    ) -> None:
        """``threshold`` may also be passed by its setting's name (``max_blue=0.4``)."""
        super().__init__(score_only=score_only)
        if self.threshold_setting in named:
            if threshold is not None:
                raise TypeError(f"{self.threshold_setting} given twice")
            threshold = named.pop(self.threshold_setting)
        if named:
            raise TypeError(f"{type(self).__name__} got unexpected settings {sorted(named)}")
        setattr(self, self.threshold_setting, self.checked(threshold))

    @classmethod
    def checked(cls, value: float | None) -> float:
        """``value`` (or the default when ``None``) as a float; ``ValueError`` when out of range."""
        value = float(cls.default_threshold if value is None else value)
        if value != value:  # NaN
            raise ValueError(f"{cls.threshold_key} must be a number, got nan")
        lo, hi = cls.threshold_range or (-np.inf, np.inf)
        if not lo <= value <= hi:
            raise ValueError(
                f"{cls.threshold_key} is {cls.threshold_meaning} between {lo:g} and {hi:g}, "
                f"got {value!r}"
            )
        return value

    def current_threshold(self) -> float:
        """This instance's threshold (the attribute named by ``threshold_setting``)."""
        return float(getattr(self, self.threshold_setting))

    @staticmethod
    def keep_scores(scores: np.ndarray, threshold: float) -> np.ndarray:
        """The rule: which ``scores`` pass ``threshold`` (NaN always passes)."""
        return keep_at_least(scores, threshold)

    @classmethod
    def rule_text(cls, threshold: float) -> str:
        """The rule in words for ``threshold`` (``rule_words``, else from :meth:`keep_scores`)."""
        words = cls.rule_words or _RULE_WORDS.get(cls.keep_scores, "threshold {:.3g}")
        return words.format(threshold)

    def keep(self, batch: ImageBatch) -> np.ndarray:
        """Apply :meth:`keep_scores` to this filter's column and threshold."""
        return self.keep_scores(batch.columns[self.column], self.current_threshold())


def stage_name(stage: object) -> str:
    """Name of a stage for counters: its ``name`` attribute or its class name."""
    return str(getattr(stage, "name", None) or type(stage).__name__)


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

    def count(
        self,
        entered: np.ndarray,
        kept: np.ndarray,
        error: np.ndarray,
        reason: str | Sequence[str | None],
    ) -> None:
        """Count the fate of the samples that ``entered`` a step: the one counter helper.

        ``in`` += entered; ``kept`` += entered and ``kept``; every other entered sample adds
        one to ``errors_<code>`` (where ``error``) or ``dropped_<code>``, ``code`` being
        :func:`reason_code` of its ``reason`` (one string for all, or one per sample).
        """
        entered = np.asarray(entered, dtype=bool)
        kept = np.asarray(kept, dtype=bool) & entered
        error = np.asarray(error, dtype=bool)
        self.counts["in"] += int(entered.sum())
        self.counts["kept"] += int(kept.sum())
        lost = entered & ~kept
        if isinstance(reason, str):
            code = reason_code(reason or "unknown")
            for prefix, hit in (("errors", lost & error), ("dropped", lost & ~error)):
                if hit.any():
                    self.counts[f"{prefix}_{code}"] += int(hit.sum())
            return
        for i in np.flatnonzero(lost):
            prefix = "errors" if error[i] else "dropped"
            self.counts[f"{prefix}_{reason_code(reason[i] or 'unknown')}"] += 1


def run_stage(stage: StageLike, batch: ImageBatch, stats: StageStats) -> ImageBatch:
    """Run ``stage`` on ``batch`` and update ``stats`` from the change in the fate columns.

    A stage's :meth:`Stage.tally` (counters of its own: samples it could not score, a
    decoder's routing) adds to them.
    """
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
    stats.count(before, out.status == KEPT, out.status == ERROR, out.reason)
    tally = getattr(stage, "tally", None)
    if callable(tally):
        stats.counts.update({k: v for k, v in tally(out, before).items() if v})
    return out
