"""Re-export a finished run with new thresholds: a run that starts at the semantic pass.

``refilter`` writes the sample caches a fresh run's scan and score passes would have written:
the old caches with their score-filter fates re-decided by each filter's own rule
(:func:`pixsieve.run.fates.refate_table`). Then it runs the ordinary
:class:`~pixsieve.passes.Passes` from ``semantic`` on, through the same executor, output check
(:func:`~pixsieve.run.claim.claim_output`) and ``run.json`` writer as ``curate``: semantic
dedup over the new caches (spread out by the executor's ``map_calls``) and the export, which
copies the kept samples' members from the input shards byte for byte. No model runs. The
result is itself a finished run: it can be reported on, swept or refiltered again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pixsieve.executors import Executor, make_executor
from pixsieve.io.limits import ReadLimits
from pixsieve.io.schemas import extra_columns
from pixsieve.passes import Passes
from pixsieve.pipeline import RunResult, write_report_or_warn
from pixsieve.run.claim import claim_output
from pixsieve.run.fates import (
    Threshold,
    Thresholds,
    ran_filters,
    refate_table,
    resolve,
    settings_with,
)
from pixsieve.run.finished import FinishedRun, RunError
from pixsieve.run.layout import OutputError, RunLayout
from pixsieve.run.summary import config_as_dict
from pixsieve.stages.base import StageStats


def refilter(
    output: str,
    new_output: str,
    *,
    aesthetic_min: Threshold = None,
    nsfw_max: Threshold = None,
    dedup_threshold: Threshold = None,
    thresholds: Mapping[str, Threshold] | None = None,
    executor: str | Executor = "local",
    workers: int | None = None,
    overwrite: bool = False,
    report: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> RunResult:
    """Write ``new_output``: the run at ``output`` re-decided with new thresholds.

    ``None`` keeps the run's own threshold, ``"off"`` switches a filter (or semantic dedup)
    off. ``thresholds`` sets any score filter's by stage name; ``aesthetic_min`` and
    ``nsfw_max`` are shorthands for the built-in two. Input shards must still be where the run
    read them (their members are copied). Writes ``report.html`` too unless ``report=False``.
    """
    started = time.time()
    opts = storage_options or {}
    run = FinishedRun.open(output, opts)
    run.require_cache()
    shards = run.shards
    for shard in shards:
        fs, path = url_to_fs(shard.url, **opts)
        if not fs.exists(path):
            raise RunError(f"input shard {shard.url} is gone: refilter copies members from it")
    given = dict(thresholds or {})
    for name, value in (("aesthetic", aesthetic_min), ("nsfw", nsfw_max)):
        if value is not None:
            given[name] = value
    chosen = resolve(run, given, dedup_threshold)
    semantic = _semantic_config(run, chosen)
    stages = settings_with(run, chosen)
    fingerprint = {**run.fingerprint, "stages": stages, "semantic_dedup": config_as_dict(semantic)}
    layout = _open(run, new_output, opts)
    limits = run.fingerprint.get("read_limits")
    with layout.locked():  # one run per output at a time, as for curate
        try:
            claim_output(layout, fingerprint, overwrite, resume=False)
        except OutputError as e:
            raise RunError(str(e)) from e
        t0 = time.perf_counter()
        counters = _refate(run, layout, chosen)
        passes = Passes(
            layout,
            shards,
            make_executor(executor, workers),
            exact_dedup=bool(run.fingerprint.get("exact_dedup", True)),
            semantic_dedup=semantic,
            samples_per_shard=int(run.fingerprint.get("samples_per_shard") or 1000),
            partition_bytes=int(run.fingerprint.get("partition_bytes") or 2 << 30),
            read_limits=ReadLimits(**limits) if isinstance(limits, dict) else ReadLimits(),
            columns=_columns(run),
            against=tuple(run.fingerprint.get("against") or ()),
            model=_model(run),
            storage_options=opts,
        )
        passes.timings["refate"] = time.perf_counter() - t0
        try:
            passes.run(start="semantic")
        finally:
            passes.executor.shutdown()
        record = passes.record(
            config=_config_with(run.record.get("config") or {}, chosen),
            stages=stages,
            decoder=str(run.record.get("decoder") or "pillow"),
            started=started,
            earlier={"counters": counters, "shard_errors": _earlier_errors(run)},
            extra={"refiltered_from": {"run": run.url, "thresholds": chosen.label()}},
        )
        if report:
            write_report_or_warn(new_output, opts)
    return RunResult(output=new_output, record=record, shard_errors=record["shard_errors"])


def _open(run: FinishedRun, new_output: str, opts: dict[str, Any]) -> RunLayout:
    """Open ``new_output``, which must differ from the run directory."""
    try:
        layout = RunLayout.open(new_output, opts)
    except OutputError as e:
        raise RunError(str(e)) from e
    if layout.fs is run.layout.fs and layout.root == run.layout.root:
        raise RunError("refilter writes a new run: --output must differ from the run directory")
    return layout


def _refate(run: FinishedRun, layout: RunLayout, chosen: Thresholds) -> dict[str, Any]:
    """Write the new sample caches (and the exact-duplicate decision); return the counters of
    the earlier passes, the score filters' recounted for the new thresholds."""
    order = ran_filters(run)
    recount: dict[str, StageStats] = {}
    for i in range(len(run.shards)):
        if run.layout.fs.exists(run.layout.samples(i)):
            table = run.layout.read_table(run.layout.samples(i))
            layout.write_table(layout.samples(i), refate_table(table, order, chosen, recount))
    for i in range(len(run.shards)):  # the hashes: the new run's own index needs them
        if run.layout.fs.exists(run.layout.hashes(i)):
            layout.write_table(layout.hashes(i), run.layout.read_table(run.layout.hashes(i)))
    if run.layout.fs.exists(run.layout.exact_duplicates()):
        layout.write_table(
            layout.exact_duplicates(), run.layout.read_table(run.layout.exact_duplicates())
        )
    counters = {k: dict(v) for k, v in (run.record.get("counters") or {}).items()}
    counters.pop("semantic_dedup", None)
    for name, stats in recount.items():
        counters[name] = {**(counters.get(name) or {}), "counts": dict(stats.counts)}
    return counters


def _columns(run: FinishedRun) -> dict[str, Any]:
    """The stage columns of the run's sample caches (one schema for all: read the first)."""
    for i in range(len(run.shards)):
        path = run.layout.samples(i)
        if run.layout.fs.exists(path):
            with run.layout.fs.open(path, "rb") as f:
                return extra_columns(pq.read_schema(f))
    return {}


def _model(run: FinishedRun) -> str | None:
    """The embedding model id the run recorded in its index (``None`` without one)."""
    meta = run.layout.read_json(run.layout.index_meta()) or {}
    return (meta.get("settings") or {}).get("model")


def _earlier_errors(run: FinishedRun) -> list[dict[str, Any]]:
    """Shard errors of the passes refilter does not run again (everything but export)."""
    return [e for e in run.record.get("shard_errors") or [] if e.get("pass") != "export"]


def _semantic_config(run: FinishedRun, thresholds: Thresholds) -> Any:
    if thresholds.dedup is None:
        return None
    base = run.semantic_config()
    if base is None:
        from pixsieve.dedup import SemanticDedupConfig

        return SemanticDedupConfig(threshold=thresholds.dedup)
    return dataclasses.replace(base, threshold=thresholds.dedup)


def _config_with(config: dict[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """The recorded ``curate`` configuration with the new thresholds (sections it has only)."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    filters = config.get("filters")
    if isinstance(filters, dict):
        for key, value in thresholds.label().items():
            if key in filters:
                filters[key] = value
    if isinstance(config.get("dedup"), dict):
        config["dedup"]["semantic"] = thresholds.dedup is not None
        config["dedup"]["threshold"] = thresholds.dedup
    return config
