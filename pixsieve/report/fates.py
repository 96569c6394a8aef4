"""Re-decide the threshold filters (aesthetic, NSFW) from cached scores, without any model.

A cached per-shard table holds every sample's fate *before* semantic dedup and the scores of
every decoded sample, removed or not (the scoring filters score everything they can). A sample
removed by a threshold filter is therefore revived or removed again by comparing its cached
score with a new threshold; every other fate (errors, exact duplicates, other filters) stands.
The rules are the filters' own: aesthetic keeps ``score >= min``, NSFW removes ``prob >= max``,
a missing (NaN) score never removes, and the first filter in stage order names the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pixsieve.report.rundir import THRESHOLD_STAGES, FinishedRun, RunError
from pixsieve.stages.base import reason_code

OFF: Literal["off"] = "off"
"""Pass as a threshold to switch that filter (or semantic dedup) off."""

Threshold = float | Literal["off"] | None


@dataclass(frozen=True)
class Thresholds:
    """Effective thresholds: a number, or ``None`` when that filter does not apply."""

    aesthetic_min: float | None
    nsfw_max: float | None
    dedup: float | None

    def for_stage(self, name: str) -> float | None:
        """Threshold of threshold stage ``name``."""
        return self.aesthetic_min if name == "aesthetic" else self.nsfw_max

    def label(self) -> dict[str, float | None]:
        """Plain dict for tables, CSV and ``run.json``."""
        return {
            "aesthetic_min": self.aesthetic_min,
            "nsfw_max": self.nsfw_max,
            "dedup_threshold": self.dedup,
        }


def resolve(
    run: FinishedRun,
    aesthetic_min: Threshold = None,
    nsfw_max: Threshold = None,
    dedup_threshold: Threshold = None,
) -> Thresholds:
    """Fill unset thresholds (``None``) with the run's own; check the run can answer the rest."""
    values: dict[str, float | None] = {}
    for name, given in (("aesthetic", aesthetic_min), ("nsfw", nsfw_max)):
        ran = run.stage_settings(name) is not None
        if given == OFF:
            values[name] = None
        elif given is None:  # the run's own: none when the stage only scored
            values[name] = run.threshold(name) if ran and not run.score_only(name) else None
        elif not ran:
            column = THRESHOLD_STAGES[name][0]
            raise RunError(f"{run.url} has no {column} scores: the {name} stage did not run")
        else:
            values[name] = float(given)
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
    if values["nsfw"] is not None and not 0.0 <= values["nsfw"] <= 1.0:
        raise RunError(f"nsfw_max is a probability between 0 and 1, got {values['nsfw']}")
    return Thresholds(values["aesthetic"], values["nsfw"], dedup)


def threshold_order(run: FinishedRun) -> list[str]:
    """The threshold stages that ran, in stage order."""
    return [name for name in run.stage_order() if name in THRESHOLD_STAGES]


def base_alive(table: pa.Table, order: list[str]) -> np.ndarray:
    """Samples alive before the threshold filters: kept, or removed by one of ``order``."""
    status = table["status"].to_numpy(zero_copy_only=False)
    reason = pc.dictionary_encode(pc.fill_null(table["reason"], "")).combine_chunks()
    revisable_code = np.array(
        [reason_code(r) in order for r in reason.dictionary.to_pylist()], dtype=bool
    )
    revisable = revisable_code[reason.indices.to_numpy(zero_copy_only=False)]
    return (status == "kept") | ((status == "removed") & revisable)


def decide(
    alive: np.ndarray, scores: dict[str, np.ndarray], order: list[str], thresholds: Thresholds
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Apply the threshold filters in ``order``; return (kept mask, removed mask per stage)."""
    alive = alive.copy()
    removed: dict[str, np.ndarray] = {}
    for name in order:
        threshold = thresholds.for_stage(name)
        if threshold is None:
            removed[name] = np.zeros(len(alive), dtype=bool)
            continue
        s = scores[name]
        with np.errstate(invalid="ignore"):
            fails = s < threshold if name == "aesthetic" else s >= threshold
        hit = alive & fails & ~np.isnan(s)
        removed[name] = hit
        alive &= ~hit
    return alive, removed


def score_arrays(table: pa.Table, order: list[str]) -> dict[str, np.ndarray]:
    """Float32 score arrays (NaN where missing) of the threshold stages in ``order``."""
    out: dict[str, np.ndarray] = {}
    for name in order:
        column = THRESHOLD_STAGES[name][0]
        if column not in table.column_names:  # e.g. a shard in which nothing decoded
            out[name] = np.full(table.num_rows, np.nan, dtype=np.float32)
            continue
        values = pc.fill_null(table[column].cast(pa.float32()), float("nan"))
        out[name] = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return out


def refate_table(table: pa.Table, order: list[str], thresholds: Thresholds) -> pa.Table:
    """A cached shard table with its threshold-filter fates recomputed for ``thresholds``."""
    status = np.array(table["status"].to_pylist(), dtype=object)
    reason = np.array(table["reason"].to_pylist(), dtype=object)
    start = base_alive(table, order)
    _, removed = decide(start, score_arrays(table, order), order, thresholds)
    status[start] = "kept"
    reason[start] = None
    for name in order:
        status[removed[name]] = "removed"
        reason[removed[name]] = name
    table = table.set_column(
        table.column_names.index("status"), "status", pa.array(status.tolist(), pa.string())
    )
    return table.set_column(
        table.column_names.index("reason"), "reason", pa.array(reason.tolist(), pa.string())
    )


def settings_with(run: FinishedRun, thresholds: Thresholds) -> list[dict[str, Any]]:
    """The run's ``stages`` records with the threshold settings replaced."""
    out = []
    for stage in run.record.get("stages") or []:
        stage = {**stage, "settings": dict(stage.get("settings") or {})}
        name = stage.get("name")
        if name in THRESHOLD_STAGES:
            value = thresholds.for_stage(name)
            if value is not None:
                stage["settings"][THRESHOLD_STAGES[name][1]] = value
            stage["settings"]["score_only"] = value is None  # "off": scores kept, no removal
        out.append(stage)
    return out
