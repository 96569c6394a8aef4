"""``run.json``: effective config, versions, counters per stage and reason, timings, errors.

Also guards resumption: a run directory remembers a fingerprint of its inputs and settings, and
refuses to mix outputs of a different run into it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from collections import Counter
from importlib import metadata
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from pixsieve import __version__
from pixsieve.io.shards import ShardRef
from pixsieve.run.layout import OutputError, RunLayout
from pixsieve.stages.base import StageStats, reason_code, stage_name

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
    """What must be equal for a run directory to be resumed."""
    semantic = pipeline.semantic_dedup
    return {
        "inputs": [[s.url, s.size] for s in shards],
        "stages": [describe_stage(s) for s in pipeline.stages],
        "exact_dedup": pipeline.exact_dedup,
        "semantic_dedup": config_as_dict(semantic),
        "samples_per_shard": pipeline.samples_per_shard,
        "partition_bytes": pipeline.partition_bytes,
        "batch_size": pipeline.batch_size,
    }


def config_as_dict(config: Any) -> Any:
    """A dataclass config as a plain dict (``None`` stays ``None``; anything else its repr)."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return repr(config)


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def check_fingerprint(
    layout: RunLayout, shards: list[ShardRef], pipeline: Any, overwrite: bool
) -> None:
    """Allow resuming only the same run; with ``overwrite`` clear a different one first."""
    path = layout.path("cache", "fingerprint.json")
    current = fingerprint(shards, pipeline)
    saved = layout.read_json(path)
    occupied = any(
        layout.fs.exists(layout.path(p)) for p in ("manifest", "shards", "run.json", "cache")
    )
    same = saved is not None and saved.get("digest") == _digest(current)
    if occupied and not same:
        if not overwrite:
            raise OutputError(
                f"{layout.url} already holds a run with other inputs or settings; "
                "choose another --output, or pass --overwrite to replace it"
            )
        for p in ("manifest", "shards", "run.json", "cache", "report.html"):
            if layout.fs.exists(layout.path(p)):
                layout.fs.rm(layout.path(p), recursive=True)
    if not same:
        layout.write_json(path, {"digest": _digest(current), "fingerprint": current})


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
    path = layout.path("manifest")
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
    """Manifest rows that stand for a whole input file in which no sample was found."""
    path = layout.path("manifest")
    if not layout.fs.exists(path):
        return 0
    table = ds.dataset(path, filesystem=layout.fs, format="parquet").to_table(
        columns=["position"], filter=pc.field("position") < 0
    )
    return table.num_rows


def build_run_record(
    layout: RunLayout,
    shards: list[ShardRef],
    pipeline: Any,
    executor: Any,
    results: dict[str, list[Any]],
    semantic: dict[str, Any] | None,
    timings: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """Assemble everything ``run.json`` records about a finished run."""
    stages: dict[str, StageStats] = {}
    for r in results.get("score", []):
        for name, saved in (r.summary.get("stats") or {}).items():
            stages.setdefault(name, StageStats()).merge(saved)
    if semantic is not None:
        stages.setdefault("semantic_dedup", StageStats()).merge(semantic["stats"])
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
        "config": pipeline.config,
        "stages": [describe_stage(s) for s in pipeline.stages],
        "decoder": next(
            (getattr(s, "backend", "pillow") for s in pipeline.stages if stage_name(s) == "decode"),
            "pillow",
        ),
        "executor": executor.describe(),
        "inputs": {
            "shards": len(shards),
            "bytes": sum(s.size for s in shards),
            "unreadable": unreadable_files(layout),
        },
        "totals": totals,
        "reasons": reasons,
        "counters": {name: s.to_dict() for name, s in stages.items()},
        "semantic_dedup": semantic,
        "semantic_dedup_config": config_as_dict(pipeline.semantic_dedup),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "tasks": {
            p: {"total": len(rs), "resumed": sum(1 for r in rs if r.resumed)}
            for p, rs in results.items()
        },
        "shard_errors": list(errors.values()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(finished - started, 3),
    }
