"""Re-export a finished run with new thresholds: cached scores, copied members, no model.

The new run directory is built the way a fresh run would build it, minus the model: its
``cache/samples`` are the old caches with the threshold-filter fates recomputed
(:func:`pixsieve.report.fates.refate_table`), its semantic dedup is the regular semantic pass
(:func:`pixsieve.run.semantic.run_semantic_dedup`) over them, and its shards and manifest come
from the regular :class:`~pixsieve.run.export.ExportWorker`, which copies the kept samples'
members from the input shards byte for byte. The result is itself a finished run: it can be
reported on, swept or refiltered again.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fsspec.core import url_to_fs

from pixsieve.executors import make_executor
from pixsieve.io.shards import partition_by_bytes
from pixsieve.pipeline import RunResult
from pixsieve.report.fates import (
    Threshold,
    Thresholds,
    refate_table,
    resolve,
    settings_with,
    threshold_order,
)
from pixsieve.report.rundir import FinishedRun, RunError
from pixsieve.run.export import ExportWorker
from pixsieve.run.layout import OutputError, RunLayout, shard_id
from pixsieve.run.scan import EXACT_PATH
from pixsieve.run.semantic import run_semantic_dedup
from pixsieve.run.summary import config_as_dict, manifest_totals

_OCCUPIED = ("manifest", "shards", "run.json", "cache", "report.html")


def _prepare(run: FinishedRun, new_output: str, opts: dict[str, Any], overwrite: bool) -> RunLayout:
    try:
        layout = RunLayout.open(new_output, opts)
    except OutputError as e:
        raise RunError(str(e)) from e
    if layout.fs is run.layout.fs and layout.root == run.layout.root:
        raise RunError("refilter writes a new run: --output must differ from the run directory")
    present = [p for p in _OCCUPIED if layout.fs.exists(layout.path(p))]
    if present and not overwrite:
        raise RunError(
            f"{new_output} already holds a run ({', '.join(present)}); choose another --output, "
            "or pass --overwrite to replace it"
        )
    for p in present:
        layout.fs.rm(layout.path(p), recursive=True)
    return layout


def refilter(
    output: str,
    new_output: str,
    *,
    aesthetic_min: Threshold = None,
    nsfw_max: Threshold = None,
    dedup_threshold: Threshold = None,
    executor: str = "local",
    workers: int | None = None,
    overwrite: bool = False,
    report: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> RunResult:
    """Write ``new_output``: the run at ``output`` re-decided with new thresholds.

    ``None`` keeps the run's own threshold, ``"off"`` switches a filter (or semantic dedup)
    off. Input shards must still be where the run read them (their members are copied).
    Writes ``report.html`` too unless ``report=False``.
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
    thresholds = resolve(run, aesthetic_min, nsfw_max, dedup_threshold)
    order = threshold_order(run)
    layout = _prepare(run, new_output, opts, overwrite)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    for i in range(len(shards)):
        if run.layout.fs.exists(run.cache_path(i)):
            table = run.layout.read_table(run.cache_path(i))
            path = layout.path("cache", "samples", f"{shard_id(i)}.parquet")
            layout.write_table(path, refate_table(table, order, thresholds))
    if run.layout.fs.exists(run.layout.path(*EXACT_PATH)):
        exact = run.layout.read_table(run.layout.path(*EXACT_PATH))
        layout.write_table(layout.path(*EXACT_PATH), exact)
    fingerprint = {**run.fingerprint, "stages": settings_with(run, thresholds)}
    timings["refate"] = time.perf_counter() - t0
    semantic: dict[str, Any] | None = None
    config = _semantic_config(run, thresholds)
    fingerprint["semantic_dedup"] = config_as_dict(config)
    layout.write_json(layout.path("cache", "fingerprint.json"), {"fingerprint": fingerprint})
    if config is not None:
        t0 = time.perf_counter()
        semantic = run_semantic_dedup(layout, shards, config)
        timings["semantic_dedup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    parts = partition_by_bytes(shards, int(run.fingerprint.get("partition_bytes") or 2 << 30))
    samples_per_shard = int(run.fingerprint.get("samples_per_shard") or 1000)
    worker = ExportWorker(layout, shards, parts, samples_per_shard, opts, config is not None)
    ex = make_executor(executor, workers)
    results = list(ex.map(worker, range(len(parts)), retries=1))
    ex.shutdown()
    timings["export"] = time.perf_counter() - t0
    record = _record(
        run, layout, thresholds, config, semantic, results, ex.describe(), timings, started
    )
    layout.write_json(layout.path("run.json"), record)
    if report:
        from pixsieve.report.html import write_report

        write_report(new_output, storage_options=opts)
    return RunResult(output=new_output, record=record, shard_errors=record["shard_errors"])


def _semantic_config(run: FinishedRun, thresholds: Thresholds) -> Any:
    if thresholds.dedup is None:
        return None
    base = run.semantic_config()
    if base is None:
        from pixsieve.dedup import SemanticDedupConfig

        return SemanticDedupConfig(threshold=thresholds.dedup)
    return dataclasses.replace(base, threshold=thresholds.dedup)


def _record(
    run: FinishedRun,
    layout: RunLayout,
    thresholds: Thresholds,
    config: Any,
    semantic: dict[str, Any] | None,
    results: list[Any],
    executor: dict[str, Any],
    timings: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """The new ``run.json``: the old record with thresholds, totals and counters brought up
    to date (counters of the threshold stages are recounted from the new manifest)."""
    record = dict(run.record)
    totals, reasons = manifest_totals(layout)
    counters = {k: dict(v) for k, v in (record.get("counters") or {}).items()}
    alive: int | None = None
    for name in threshold_order(run):
        counts = dict((counters.get(name) or {}).get("counts") or {})
        counts["in"] = alive = counts.get("in", 0) if alive is None else alive
        counts[f"dropped_{name}"] = reasons.get(name, 0)
        counts["kept"] = alive = alive - counts[f"dropped_{name}"]
        counters[name] = {**(counters.get(name) or {}), "counts": counts}
    counters.pop("semantic_dedup", None)
    if semantic is not None:
        counters["semantic_dedup"] = semantic["stats"]
    errors = [
        {
            "pass": "export",
            "task": f"partition {r.task}",
            "error": r.summary.get("error") or r.error,
        }
        for r in results
        if r.summary.get("error") or r.error
    ]
    record.update(
        {
            "stages": settings_with(run, thresholds),
            "totals": totals,
            "reasons": reasons,
            "counters": counters,
            "semantic_dedup": semantic,
            "semantic_dedup_config": config_as_dict(config),
            "config": _config_with(record.get("config") or {}, thresholds),
            "executor": executor,
            "tasks": {"export": {"total": len(results), "resumed": 0}},
            "refiltered_from": {"run": run.url, "thresholds": thresholds.label()},
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "shard_errors": [e for e in record.get("shard_errors") or [] if e["pass"] != "export"]
            + errors,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 3),
        }
    )
    return record


def _config_with(config: dict[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """The recorded ``curate`` configuration with the new thresholds (sections it has only)."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    if isinstance(config.get("filters"), dict):
        config["filters"]["aesthetic_min"] = thresholds.aesthetic_min
        config["filters"]["nsfw_max"] = thresholds.nsfw_max
    if isinstance(config.get("dedup"), dict):
        config["dedup"]["semantic"] = thresholds.dedup is not None
        config["dedup"]["threshold"] = thresholds.dedup
    return config
