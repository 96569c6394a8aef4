"""``run.json``: effective config, versions, counters per stage and reason, timings, errors.

The fingerprint of a run's inputs and settings is built here (:func:`fingerprint`); the
check that guards resumption with it lives in :mod:`pixsieve.run.claim`.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections import Counter
from importlib import metadata
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from pixsieve.io.shards import ShardRef
from pixsieve.run.layout import RunLayout
from pixsieve.stages.base import StageStats, reason_code, stage_name
from pixsieve.version import __version__

log = logging.getLogger(__name__)
_PACKAGES = ("numpy", "pyarrow", "pillow", "fsspec", "torch", "transformers", "faiss-cpu", "ray")


def describe_stage(stage: Any) -> dict[str, Any]:
    """Name, class and settings of a stage (``describe()`` when it has one)."""
    settings = stage.describe() if hasattr(stage, "describe") else {}
    return {
        "name": stage_name(stage),
        "class": f"{type(stage).__module__}.{type(stage).__qualname__}",
        "settings": settings,
    }


def fingerprint(shards: list[ShardRef], pipeline: Any) -> dict[str, Any]:
    """What must be equal for a run directory to be resumed (``versions``: per shard)."""
    semantic = pipeline.semantic_dedup
    limits = getattr(pipeline, "read_limits", None)
    against = list(getattr(pipeline, "against", ()))
    return {
        **({"against": against} if against else {}),  # absent without: older runs resume
        "inputs": [[s.url, s.size] for s in shards],
        "versions": [s.version for s in shards],
        "stages": [describe_stage(s) for s in pipeline.stages],
        "exact_dedup": pipeline.exact_dedup,
        "semantic_dedup": config_as_dict(semantic),
        "samples_per_shard": pipeline.samples_per_shard,
        "partition_bytes": pipeline.partition_bytes,
        "batch_size": pipeline.batch_size,
        "read_limits": limits.describe() if limits is not None else None,
    }


def config_as_dict(config: Any) -> Any:
    """A dataclass config as a plain dict (``None`` stays ``None``; anything else its repr)."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return repr(config)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "pixsieve": __version__}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def manifest_totals(layout: RunLayout) -> tuple[dict[str, int], dict[str, int]]:
    """Count manifest rows by status and by reason code, as written.

    Every row counts, including a file's own row when no sample of it could be identified
    (``position`` -1: not a tar, unreadable): the totals are the manifest's, row for row.
    """
    path = layout.manifest_dir()
    if not layout.fs.exists(path):
        return {"input": 0, "kept": 0, "removed": 0, "error": 0}, {}
    table = ds.dataset(path, filesystem=layout.fs, format="parquet").to_table(
        columns=["status", "reason"]
    )
    status = Counter(table["status"].to_pylist())
    reasons = Counter(reason_code(r) for r in table["reason"].to_pylist() if r)
    totals = {
        "input": table.num_rows,
        **{k: status.get(k, 0) for k in ("kept", "removed", "error")},
    }
    return totals, dict(sorted(reasons.items()))


def unreadable_files(layout: RunLayout) -> int:
    """Manifest rows (``position`` -1) that stand for an unreadable file or unreadable part of
    one (not a tar, a corrupt stretch, a truncated rest) rather than for a sample."""
    path = layout.manifest_dir()
    if not layout.fs.exists(path):
        return 0
    table = ds.dataset(path, filesystem=layout.fs, format="parquet").to_table(
        columns=["position"], filter=pc.field("position") < 0
    )
    return table.num_rows


def build_run_record(
    layout: RunLayout,
    shards: list[ShardRef],
    *,
    config: dict[str, Any],
    stages: list[dict[str, Any]],
    decoder: str,
    semantic_config: Any,
    executor: dict[str, Any],
    results: dict[str, list[Any]],
    semantic: dict[str, Any] | None,
    timings: dict[str, float],
    started: float,
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble everything ``run.json`` records about a finished run (the one writer).

    ``stages`` are :func:`describe_stage` records; ``results`` the task results per pass that
    ran. A run that started at a later pass (``refilter``) hands in ``earlier``: the
    ``counters`` (stage → :meth:`StageStats.to_dict`) and ``shard_errors`` of the passes it did
    not run.
    """
    earlier = earlier or {}
    counters: dict[str, StageStats] = {}
    for name, saved in (earlier.get("counters") or {}).items():
        counters.setdefault(name, StageStats()).merge(saved)
    for r in results.get("score", []):
        for name, saved in (r.summary.get("stats") or {}).items():
            counters.setdefault(name, StageStats()).merge(saved)
    if semantic is not None:
        counters["semantic_dedup"] = StageStats()
        counters["semantic_dedup"].merge(semantic["stats"])
    errors: dict[tuple[str, str], dict[str, Any]] = {}
    for pass_name, rs in results.items():
        for r in rs:
            err = r.summary.get("error") or r.error
            if err:  # one entry per task and error, naming every pass that met it
                task = shards[r.task].url if pass_name != "export" else f"partition {r.task}"
                entry = errors.setdefault(
                    (task, err), {"pass": pass_name, "task": task, "error": err}
                )
                if pass_name not in entry["pass"].split(", "):
                    entry["pass"] += f", {pass_name}"
    totals, reasons = manifest_totals(layout)
    finished = time.time()
    return {
        "pixsieve_version": __version__,
        "versions": _versions(),
        "config": config,
        "stages": stages,
        "decoder": decoder,
        "executor": executor,
        "inputs": {
            "shards": len(shards),
            "bytes": sum(s.size for s in shards),
            "unreadable": unreadable_files(layout),
        },
        "totals": totals,
        "reasons": reasons,
        "counters": {name: s.to_dict() for name, s in counters.items()},
        "semantic_dedup": semantic,
        "semantic_dedup_config": config_as_dict(semantic_config),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "tasks": {
            p: {"total": len(rs), "resumed": sum(1 for r in rs if r.resumed)}
            for p, rs in results.items()
        },
        "shard_errors": list(earlier.get("shard_errors") or []) + list(errors.values()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(finished - started, 3),
    }
