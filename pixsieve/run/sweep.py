"""Threshold sweeps from a finished run's caches: what would each setting keep? No model runs.

For every combination of score-filter thresholds (aesthetic minimum, NSFW maximum, and those of
any other :class:`~pixsieve.stages.base.ScoreFilter` the run ran) and semantic-dedup threshold
the score filters are re-decided from cached scores (:mod:`pixsieve.run.fates`) and, when a
dedup threshold applies, the semantic dedup core runs again on the cached embeddings of the
samples that survive, exactly as the semantic pass of a fresh run would (same order, same
aesthetic and resolution tie-breaks, same settings but the threshold).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from pixsieve.io.tables import embeddings_from_arrow
from pixsieve.run.fates import (
    Filters,
    Threshold,
    base_alive,
    decide,
    known_filters,
    ran_filters,
    resolve,
    score_arrays,
)
from pixsieve.run.finished import FinishedRun, RunError
from pixsieve.stages.scoring import AestheticFilter


def columns(filters: Filters) -> tuple[str, ...]:
    """The sweep table's columns for a run with score filters ``filters``."""
    return (
        *(k.threshold_key for k in filters), "dedup_threshold", "kept", "fraction",
        *(f"removed_{k.reason}" for k in filters), "removed_semantic_duplicate", "current",
    )  # fmt: skip


@dataclass
class SweepResult:
    """Retained counts per threshold combination (one dict per row, keys :attr:`columns`)."""

    output: str
    samples: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: tuple[str, ...] = ()

    def to_table(self) -> pa.Table:
        """The rows as an Arrow table (``None`` thresholds: that filter is off)."""
        types = {"kept": pa.int64(), "current": pa.bool_(), "fraction": pa.float64()}
        return pa.table(
            {
                c: pa.array([r[c] for r in self.rows], types.get(c, pa.float64()))
                for c in self.columns
            }
        )

    def write_csv(
        self, path: str | None = None, storage_options: dict[str, Any] | None = None
    ) -> str:
        """Write the rows as CSV (default ``OUT/sweep.csv``); return the path."""
        from fsspec.core import url_to_fs

        path = path or f"{self.output.rstrip('/')}/sweep.csv"
        fs, p = url_to_fs(path, **(storage_options or {}))
        parent = p.rsplit("/", 1)[0] if "/" in p else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(p, "wb") as f:
            pcsv.write_csv(self.to_table(), f)
        return path


@dataclass
class _Cached:
    """Everything the sweep needs from the caches, as flat arrays over all samples."""

    start: np.ndarray
    scores: dict[str, np.ndarray]
    aesthetic: np.ndarray | None
    resolution: np.ndarray
    embedding_row: np.ndarray
    embeddings: np.ndarray | None


def _load(run: FinishedRun, order: Filters, embeddings: bool) -> _Cached:
    wanted = ["position", "status", "reason", "width", "height", AestheticFilter.column]
    wanted += [k.column for k in order] + (["embedding"] if embeddings else [])
    parts: list[pa.Table] = []
    for i in range(len(run.shards)):
        path = run.layout.samples(i)
        if not run.layout.fs.exists(path):
            continue
        with run.layout.fs.open(path, "rb") as f:
            names = pq.ParquetFile(f).schema_arrow.names
        t = run.layout.read_table(path, columns=[c for c in dict.fromkeys(wanted) if c in names])
        t = t.filter(pc.greater_equal(t["position"], 0))
        if embeddings and "embedding" not in t.column_names:
            t = t.append_column("embedding", pa.nulls(t.num_rows, pa.list_(pa.float32())))
        parts.append(t)
    table = pa.concat_tables(parts, promote_options="permissive")
    aesthetic = None
    if AestheticFilter.column in table.column_names:  # semantic dedup's keep tie-break
        a = pc.fill_null(table[AestheticFilter.column].cast(pa.float32()), float("nan"))
        aesthetic = a.to_numpy(zero_copy_only=False).astype(np.float32)
    width = table["width"].to_numpy(zero_copy_only=False).astype(np.int64)
    height = table["height"].to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.full(table.num_rows, -1, dtype=np.int64)
    emb = None
    if embeddings:
        valid = table["embedding"].is_valid().to_numpy(zero_copy_only=False)
        row[valid] = np.arange(int(valid.sum()))
        emb = embeddings_from_arrow(table["embedding"].filter(pa.array(valid)))
    return _Cached(
        start=base_alive(table, order),
        scores=score_arrays(table, order),
        aesthetic=aesthetic,
        resolution=width * height,
        embedding_row=row,
        embeddings=emb,
    )


def _values(given: Threshold | Sequence[Threshold]) -> list[Threshold]:
    if given is None or isinstance(given, str | int | float):
        return [given]
    return list(dict.fromkeys(given)) or [None]


def sweep(
    output: str,
    *,
    aesthetic_min: Threshold | Sequence[Threshold] = None,
    nsfw_max: Threshold | Sequence[Threshold] = None,
    dedup_threshold: Threshold | Sequence[Threshold] = None,
    thresholds: Mapping[str, Threshold | Sequence[Threshold]] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> SweepResult:
    """Count what each combination of thresholds would keep, from cached scores/embeddings.

    Each argument is one value or a list; ``None`` means the run's own setting and ``"off"``
    switches that filter (or semantic dedup) off. ``thresholds`` sets any score filter's by
    its stage name (``{"aesthetic": [4, 5], "my_filter": 0.3}``); ``aesthetic_min`` and
    ``nsfw_max`` are shorthands for the built-in two. Raises
    :class:`~pixsieve.run.finished.RunError` for a directory that cannot answer.
    """
    run = FinishedRun.open(output, storage_options)
    run.require_cache()
    order = ran_filters(run)
    known = known_filters(run)
    given = _given(thresholds, aesthetic=aesthetic_min, nsfw=nsfw_max)
    current = resolve(run)
    names = list(given)
    combos = [
        resolve(run, dict(zip(names, values, strict=True)), t)
        for *values, t in itertools.product(
            *(_values(given[n]) for n in names), _values(dedup_threshold)
        )
    ]
    combos = list(dict.fromkeys(combos))
    cached = _load(run, order, any(c.dedup is not None for c in combos))
    base_config = run.semantic_config() if any(c.dedup is not None for c in combos) else None
    n = len(cached.start)
    result = SweepResult(output=output, samples=n, columns=columns(known))
    memo: dict[tuple[bytes, float], int] = {}
    for th in combos:
        kept, removed = decide(cached.start, cached.scores, order, th)
        semantic = 0
        if th.dedup is not None:
            cand = kept & (cached.embedding_row >= 0)
            key = (hashlib.blake2b(np.packbits(cand).tobytes()).digest(), th.dedup)
            if key not in memo:
                memo[key] = _semantic_removed(cached, cand, th.dedup, base_config)
            semantic = memo[key]
        retained = int(kept.sum()) - semantic
        result.rows.append(
            {
                **th.label(),
                "kept": retained,
                "fraction": retained / n if n else 0.0,
                **{
                    f"removed_{k.reason}": int(removed[k.name].sum()) if k.name in removed else 0
                    for k in known
                },
                "removed_semantic_duplicate": semantic,
                "current": th == current,
            }
        )
    return result


def _given(
    thresholds: Mapping[str, Threshold | Sequence[Threshold]] | None,
    **shorthands: Threshold | Sequence[Threshold],
) -> dict[str, Threshold | Sequence[Threshold]]:
    """Threshold values by filter name: the mapping plus the shorthands that are set."""
    given = dict(thresholds or {})
    for name, value in shorthands.items():
        if value is not None:
            if given.get(name) is not None:
                raise RunError(f"the {name} threshold is given twice")
            given[name] = value
    return given


def _semantic_removed(cached: _Cached, cand: np.ndarray, threshold: float, base: Any) -> int:
    """Duplicates the semantic pass would remove among ``cand`` at ``threshold``."""
    from pixsieve.dedup import SemanticDedupConfig, find_duplicates

    idx = np.flatnonzero(cand)
    if len(idx) == 0 or cached.embeddings is None:
        return 0
    config = (
        dataclasses.replace(base, threshold=threshold)
        if base is not None
        else SemanticDedupConfig(threshold=threshold)
    )
    aesthetic = None
    if cached.aesthetic is not None and not np.isnan(cached.aesthetic[idx]).all():
        aesthetic = cached.aesthetic[idx]
    res = find_duplicates(
        cached.embeddings[cached.embedding_row[idx]],
        config,
        aesthetic=aesthetic,
        resolution=cached.resolution[idx],
    )
    return int(np.asarray(res.removed).sum())
