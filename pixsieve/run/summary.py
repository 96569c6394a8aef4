"""``run.json``: effective config, versions, counters per stage and reason, timings, errors.

Also guards resumption: a run directory remembers a fingerprint of its inputs and settings, and
refuses to mix outputs of a different run into it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
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
    return {
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


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class RunMismatch(OutputError):
    """The output holds a run with other inputs or settings; ``differences`` says which."""

    def __init__(self, url: str, differences: list[str]) -> None:
        self.url = url
        self.differences = differences
        super().__init__(self.message("overwrite=True"))

    def message(self, option: str) -> str:
        """The one-line message, naming ``option`` as the way to replace the old run."""
        return (
            f"{self.url} already holds a run with other inputs or settings "
            f"({'; '.join(self.differences)}); choose another output, or pass {option} "
            "to replace it"
        )


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, besides shards rewritten in place."""
    out: list[str] = []
    old = [u for u, _ in saved.get("inputs") or []]
    new = [u for u, _ in current["inputs"]]
    if old != new:
        added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        what = [f"{len(added)} added, e.g. {added[0]}" if added else ""]
        what.append(f"{len(removed)} removed, e.g. {removed[0]}" if removed else "")
        out.append("input shards: " + (", ".join(w for w in what if w) or "other order"))
    old_stages = {s["name"]: s for s in saved.get("stages") or []}
    for stage in current["stages"]:
        before = old_stages.pop(stage["name"], None)
        if before is None:
            out.append(f"stage {stage['name']} added")
            continue
        for key in sorted(set(before["settings"]) | set(stage["settings"])):
            a, b = before["settings"].get(key), stage["settings"].get(key)
            if a != b:
                out.append(f"{stage['name']}.{key}: {_short(a)} -> {_short(b)}")
    out += [f"stage {name} removed" for name in old_stages]
    for key in sorted(set(saved) | set(current)):
        if key not in ("inputs", "versions", "stages") and saved.get(key) != current.get(key):
            out.append(f"{key}: {_short(saved.get(key))} -> {_short(current.get(key))}")
    return out


def _changed_shards(saved: dict[str, Any], current: dict[str, Any]) -> list[int]:
    """Indices of shards whose size or version changed (same URLs, rewritten in place)."""
    old_sizes = [size for _, size in saved["inputs"]]
    old_versions = saved.get("versions") or [None] * len(old_sizes)
    return [
        i
        for i, ((_, size), version) in enumerate(
            zip(current["inputs"], current["versions"], strict=True)
        )
        if size != old_sizes[i] or (old_versions[i] is not None and version != old_versions[i])
    ]


def _redo(layout: RunLayout, shards: list[ShardRef], changed: list[int]) -> None:
    """Forget the work done on ``changed`` shards and everything downstream of them."""
    log.warning(
        "%d input shard(s) changed since the last run (e.g. %s): redoing them and the steps after",
        len(changed),
        shards[changed[0]].url,
    )
    for i in changed:
        for pass_name in ("scan", "score"):
            marker = layout.marker(pass_name, f"{i:05d}")
            if layout.fs.exists(marker):
                layout.fs.rm(marker)
    for p in (
        ("manifest",),
        ("shards",),
        ("cache", "done", "export"),
        ("cache", "done", "semantic"),
        ("cache", "done", "scan", "exact.json"),
    ):
        if layout.fs.exists(layout.path(*p)):
            layout.fs.rm(layout.path(*p), recursive=True)


def check_fingerprint(
    layout: RunLayout, shards: list[ShardRef], pipeline: Any, overwrite: bool
) -> None:
    """Resume only the same run; with ``overwrite`` clear a different one first.

    Shards rewritten in place since the last run (their size or version changed) are redone,
    with every global step after them. Other differences raise :class:`RunMismatch`.
    """
    path = layout.path("cache", "fingerprint.json")
    current = fingerprint(shards, pipeline)
    saved = (layout.read_json(path) or {}).get("fingerprint")
    occupied = any(
        layout.fs.exists(layout.path(p)) for p in ("manifest", "shards", "run.json", "cache")
    )
    differences: list[str] = []
    if occupied:
        differences = (
            _differences(saved, current)
            if saved
            else ["it has no record of its inputs (cache/fingerprint.json)"]
        )
    if differences:
        if not overwrite:
            raise RunMismatch(layout.url, differences)
        for p in ("manifest", "shards", "run.json", "cache", "report.html"):
            if layout.fs.exists(layout.path(p)):
                layout.fs.rm(layout.path(p), recursive=True)
    elif occupied and saved:
        changed = _changed_shards(saved, current)
        if changed:
            _redo(layout, shards, changed)
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
    """Count samples by status and by reason code from the written manifest."""
    path = layout.path("manifest")
    if not layout.fs.exists(path):
        return {"input": 0, "kept": 0, "removed": 0, "error": 0}, {}
    table = ds.dataset(path, filesystem=layout.fs, format="parquet").to_table(
        columns=["position", "status", "reason"]
    )
    table = table.filter(pc.greater_equal(table["position"], 0))
    status = Counter(table["status"].to_pylist())
    reasons = Counter(reason_code(r) for r in table["reason"].to_pylist() if r)
    totals = {
        "input": table.num_rows,
        **{k: status.get(k, 0) for k in ("kept", "removed", "error")},
    }
    return totals, dict(sorted(reasons.items()))


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
        "inputs": {"shards": len(shards), "bytes": sum(s.size for s in shards)},
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
