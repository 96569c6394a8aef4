"""Re-decide a run's score filters from cached scores, without any model.

A cached per-shard table holds every sample's fate *before* semantic dedup and the scores of
every decoded sample, removed or not (score filters score everything they can). A sample
removed by a score filter is therefore revived or removed again by its filter's own rule
(:meth:`~pixsieve.stages.base.ScoreFilter.keep_scores`) applied to its cached score and a new
threshold; every other fate (errors, exact duplicates, other filters) stands. A missing (NaN)
score never removes, and the first filter in stage order names the reason.

Which filters a run has is read from its ``run.json`` (:meth:`FinishedRun.score_filters`):
nothing here names a filter, so a user's score filter is swept and refiltered like the
built-in ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pixsieve.io.tables import full_reasons, set_fates
from pixsieve.run.finished import FinishedRun, RunError
from pixsieve.stages.base import ScoreFilter, StageStats, reason_code
from pixsieve.stages.scoring import BUILTIN_SCORE_FILTERS

OFF: Literal["off"] = "off"
"""Pass as a threshold to switch that filter (or semantic dedup) off."""

Threshold = float | Literal["off"] | None
Filters = tuple[type[ScoreFilter], ...]


@dataclass(frozen=True)
class Thresholds:
    """Effective thresholds: per score filter (by name) a number, or ``None`` when that filter
    does not apply; and the semantic dedup threshold (``None``: off)."""

    filters: tuple[tuple[str, float | None], ...]
    dedup: float | None
    keys: tuple[tuple[str, str], ...] = ()

    def for_stage(self, name: str) -> float | None:
        """Threshold of score filter ``name`` (``None``: off or not run)."""
        return dict(self.filters).get(name)

    def label(self) -> dict[str, float | None]:
        """Plain dict for tables, CSV and ``run.json``: each filter's ``threshold_key``."""
        keys = dict(self.keys)
        out = {keys.get(name, name): value for name, value in self.filters}
        out["dedup_threshold"] = self.dedup
        return out


def known_filters(run: FinishedRun) -> Filters:
    """The built-in score filters (always listed, so tables keep their columns), then every
    other score filter the run ran, in stage order."""
    ran = {k.name: k for k in run.score_filters()}
    builtin = tuple(ran.pop(k.name, k) for k in BUILTIN_SCORE_FILTERS)
    return (*builtin, *ran.values())


def ran_filters(run: FinishedRun) -> Filters:
    """The score filters the run ran, in stage order (the order decisions are taken in)."""
    return tuple(run.score_filters())


def resolve(
    run: FinishedRun,
    given: Mapping[str, Threshold] | None = None,
    dedup_threshold: Threshold = None,
) -> Thresholds:
    """Fill unset thresholds (``None``) with the run's own; check the run can answer the rest.

    ``given`` maps a score filter's name (``aesthetic``, ``nsfw``, a user filter's ``name``)
    to a number, ``"off"`` or ``None``.
    """
    given = dict(given or {})
    known = known_filters(run)
    ran = {k.name for k in ran_filters(run)}
    unknown = set(given) - {k.name for k in known}
    if unknown:
        raise RunError(
            f"{run.url} has no score filter {', '.join(sorted(unknown))}; "
            f"its score filters: {', '.join(sorted(ran)) or 'none'}"
        )
    values: list[tuple[str, float | None]] = []
    for kind in known:
        value = given.get(kind.name)
        if value == OFF:
            values.append((kind.name, None))
        elif value is None:  # the run's own: none when the stage only scored
            own = kind.name in ran and not run.score_only(kind.name)
            values.append((kind.name, run.threshold(kind) if own else None))
        elif kind.name not in ran:
            raise RunError(
                f"{run.url} has no {kind.column} scores: the {kind.name} stage did not run"
            )
        else:
            try:
                values.append((kind.name, kind.checked(float(value))))
            except ValueError as e:
                raise RunError(str(e)) from e
    if dedup_threshold == OFF:
        dedup = None
    elif dedup_threshold is None:
        config = run.semantic_config()
        dedup = None if config is None else float(config.threshold)
    else:
        dedup = float(dedup_threshold)
        if not -1.0 <= dedup <= 1.0:
            raise RunError(f"the dedup threshold is a cosine similarity, got {dedup}")
        if not run.semantic_ran and not run.has_cached("embedding"):
            raise RunError(f"{run.url} has no cached embeddings: semantic dedup cannot run")
    keys = tuple((k.name, k.threshold_key) for k in known)
    return Thresholds(tuple(values), dedup, keys)


def base_alive(table: pa.Table, order: Filters) -> np.ndarray:
    """Samples alive before the score filters: kept, or removed by one of ``order``."""
    status = table["status"].to_numpy(zero_copy_only=False)
    reason = pc.dictionary_encode(pc.fill_null(table["reason"], "")).combine_chunks()
    reasons = {k.reason for k in order}
    revisable_code = np.array(
        [reason_code(r) in reasons for r in reason.dictionary.to_pylist()], dtype=bool
    )
    revisable = revisable_code[reason.indices.to_numpy(zero_copy_only=False)]
    return (status == "kept") | ((status == "removed") & revisable)


def decide(
    alive: np.ndarray,
    scores: dict[str, np.ndarray],
    order: Filters,
    thresholds: Thresholds,
    counters: dict[str, StageStats] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Apply the score filters in ``order``; return (kept mask, removed mask per filter name).

    With ``counters``, each filter's counters (``in``, ``kept``, ``dropped_<reason>``) are
    added to ``counters[name]``.
    """
    alive = alive.copy()
    removed: dict[str, np.ndarray] = {}
    for kind in order:
        threshold = thresholds.for_stage(kind.name)
        hit = np.zeros(len(alive), dtype=bool)
        if threshold is not None:
            hit = alive & ~np.asarray(kind.keep_scores(scores[kind.name], threshold), bool)
        if counters is not None:
            stats = counters.setdefault(kind.name, StageStats())
            stats.count(alive, ~hit, np.zeros(len(alive), dtype=bool), kind.reason)
        removed[kind.name] = hit
        alive &= ~hit
    return alive, removed


def score_arrays(table: pa.Table, order: Filters) -> dict[str, np.ndarray]:
    """Float32 score arrays (NaN where missing) of the score filters in ``order``, by name."""
    out: dict[str, np.ndarray] = {}
    for kind in order:
        if kind.column not in table.column_names:  # e.g. a shard in which nothing decoded
            out[kind.name] = np.full(table.num_rows, np.nan, dtype=np.float32)
            continue
        values = pc.fill_null(table[kind.column].cast(pa.float32()), float("nan"))
        out[kind.name] = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return out


def refate_table(
    table: pa.Table,
    order: Filters,
    thresholds: Thresholds,
    counters: dict[str, StageStats] | None = None,
) -> pa.Table:
    """A cached shard table with its score-filter fates recomputed for ``thresholds``."""
    status = np.array(table["status"].to_pylist(), dtype=object)
    reason = np.array(full_reasons(table), dtype=object)
    sample = table["position"].to_numpy(zero_copy_only=False) >= 0
    start = base_alive(table, order) & sample
    _, removed = decide(start, score_arrays(table, order), order, thresholds, counters)
    status[start] = "kept"
    reason[start] = None
    for kind in order:
        status[removed[kind.name]] = "removed"
        reason[removed[kind.name]] = kind.reason
    return set_fates(table, status.tolist(), reason.tolist())


def settings_with(run: FinishedRun, thresholds: Thresholds) -> list[dict[str, Any]]:
    """The run's ``stages`` records with the score filters' threshold settings replaced."""
    kinds = {k.name: k for k in ran_filters(run)}
    out = []
    for stage in run.record.get("stages") or []:
        stage = {**stage, "settings": dict(stage.get("settings") or {})}
        kind = kinds.get(str(stage.get("name")))
        if kind is not None:
            value = thresholds.for_stage(kind.name)
            if value is not None:
                stage["settings"][kind.threshold_setting] = value
            stage["settings"]["score_only"] = value is None  # "off": scores kept, no removal
        out.append(stage)
    return out
