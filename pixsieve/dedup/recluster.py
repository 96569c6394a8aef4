"""Re-clustering new items that lie beyond the earlier clusters (``--recluster``).

A run ``--against`` earlier outputs assigns its new items to the earlier centroids. New items
far from all of them (cosine to their nearest centroid below that cluster's radius) still get
correct memberships, but many border ones, so their within-batch search costs more. With
``recluster``, :func:`extra_centroids` fits extra centroids on those items, and the run:

* searches **within the batch** on the earlier centroids followed by the extra ones (fewer
  memberships per far item), and writes that extended set into its index, so later runs
  against it share it;
* searches **across batches** on each earlier run's own centroids (a prefix of the extended
  set, :func:`pixsieve.dedup.index.check_settings`): both schemes of
  :mod:`pixsieve.dedup.crossassign` need the new item assigned to the set an earlier kept
  item's memberships and radius were computed on. Each distinct earlier set gets its own
  cross-search memberships of the new items (``work/xK``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pixsieve.dedup.centroid_search import CentroidSearch
from pixsieve.dedup.centroids import train_centroids
from pixsieve.dedup.config import SemanticDedupConfig
from pixsieve.dedup.readphase import row_blocks
from pixsieve.dedup.sources import InputError
from pixsieve.dedup.taskfiles import FileTask

#: ``recluster`` values: never, whenever any new item lies beyond, above :data:`AUTO_SHARE`.
RECLUSTER_CHOICES: tuple[str, ...] = ("off", "on", "auto")
#: ``recluster="auto"`` re-clusters when more than this share of new items lies beyond.
AUTO_SHARE: float = 0.25
RECLUSTER_FILE: str = "recluster.json"


def check_mode(mode: str, against: object) -> bool:
    """Whether there is ``against`` to run against; refuse an unknown ``recluster`` value, or
    one other than ``off`` without ``against``."""
    if mode not in RECLUSTER_CHOICES:
        raise InputError(f"recluster {mode!r}: one of {', '.join(RECLUSTER_CHOICES)}")
    if mode != "off" and not against:
        raise InputError("--recluster needs --against (it adds centroids to earlier runs')")
    return bool(against)


def _beyond_file(
    task: FileTask, index: int, centroids: np.ndarray, radius: np.ndarray
) -> tuple[int, np.ndarray]:
    """``(rows, embeddings of the rows beyond their nearest centroid's radius)`` of input file
    ``index`` (read from the read phase's files)."""
    search = CentroidSearch(centroids, 1)
    far, rows = [], 0
    for _, x, _, _ in row_blocks(task, index):
        sims, ids = search.search(x)
        far.append(x[sims[:, 0] < radius[ids[:, 0]]])
        rows += len(x)
    return rows, np.concatenate(far) if far else np.empty((0, task.dim), np.float32)


def extra_centroids(
    work: Path,
    task: FileTask,
    files: int,
    centroids: np.ndarray,
    radius: np.ndarray,
    config: SemanticDedupConfig,
    mode: str,
    sample_cap: int,
    cluster_size: float,
) -> dict[str, Any]:
    """Find the new items beyond the earlier radius; fit extra centroids on them when ``mode``
    asks, one per ``cluster_size`` of them (the earlier runs' kept items per cluster).

    Writes ``work/recluster.json`` (``beyond``, ``rows``, ``extra``) and, when extra centroids
    were fitted, ``work/extra_centroids.npy``; a rerun reads them back.
    """
    record = work / RECLUSTER_FILE
    if record.exists():
        return json.loads(record.read_text())
    rng = np.random.default_rng(config.seed)
    pool, keys = np.empty((0, task.dim), np.float32), np.empty(0)
    beyond = rows = 0
    for index in range(files):
        n, far = _beyond_file(task, index, centroids, radius)
        rows += n
        beyond += len(far)
        # a uniform sample of at most sample_cap far rows: those of the smallest random keys
        pool, keys = np.concatenate([pool, far]), np.concatenate([keys, rng.random(len(far))])
        if len(pool) > sample_cap:
            top = np.sort(np.argpartition(keys, sample_cap)[:sample_cap])
            pool, keys = pool[top], keys[top]
    share = beyond / max(rows, 1)
    fit = beyond > 0 and (mode == "on" or (mode == "auto" and share > AUTO_SHARE))
    extra = 0
    if fit:
        k = min(max(1, round(beyond / max(cluster_size, 1.0))), len(pool))
        extra_c = train_centroids(
            pool,
            k,
            iters=config.kmeans_iters,
            points_per_centroid=config.kmeans_points_per_centroid,
            seed=config.seed,
        )
        np.save(work / "extra_centroids.npy", extra_c)
        extra = len(extra_c)
    out = {"beyond": beyond, "rows": rows, "extra": extra}
    record.write_text(json.dumps(out))
    return out


def against_centroids(
    work: Path, centroids: np.ndarray, radius: np.ndarray, mode: str, fit: tuple[Any, ...]
) -> None:
    """Write the centroids (``work/centroids.npy``, written last) and radius
    (``work/radius_earlier.npy``) of a run against earlier ones: theirs, followed by extra ones
    (radius ``inf``) when ``mode`` fits some. ``fit``: ``(task, input files, config, sample_cap,
    earlier kept items)`` for :func:`extra_centroids`."""
    if mode != "off":
        task, files, config, cap, kept = fit
        size = kept / len(centroids)
        rec = extra_centroids(work, task, files, centroids, radius, config, mode, cap, size)
        if rec["extra"]:
            centroids = np.concatenate([centroids, np.load(work / "extra_centroids.npy")])
            radius = np.concatenate([radius, np.full(rec["extra"], np.inf)])
    np.save(work / "radius_earlier.npy", radius)
    np.save(work / "centroids.tmp.npy", centroids)
    (work / "centroids.tmp.npy").rename(work / "centroids.npy")


def recluster_counts(work: Path) -> dict[str, int]:
    """``beyond_radius`` and ``recluster_extra`` (centroids added) of a recluster run, else
    nothing."""
    record = work / RECLUSTER_FILE
    if not record.exists():
        return {}
    rec = json.loads(record.read_text())
    return {"beyond_radius": rec["beyond"], "recluster_extra": rec["extra"]}
