"""Semantic dedup of embeddings in Parquet files, in passes whose memory does not grow with N.

Phases (each resumable; a finished partition or bucket is never redone):

1. **read**: one task per input file decodes and checks it once (:mod:`pixsieve.dedup.readphase`:
   unit rows, keep-policy columns, ids, its rows of the k-means sample); **ids**: uniqueness;
   **sample**: the sample (:func:`pixsieve.dedup.kmeans.sample_indices`, the same rows the
   in-memory path trains on); **kmeans**: fit the centroids.
2. **assign**: one task per input file (:func:`pixsieve.dedup.partition.assign_file`).
3. **similarity**: one task per bucket of clusters (:func:`pixsieve.dedup.buckets.bucket_edges`).
4. **components** over the edges in the driver (:mod:`pixsieve.dedup.component_parts`: memory
   grows with the edges, not the items, and is split into partitions on disk when the edges
   outgrow the budget), then **gather** (one task per file: the grouped rows with their labels)
   and **resolve** (one task per group bucket: keep policy, witness rule, exact similarities).
5. **write**: ``duplicates.parquet`` (one row per removed id) and ``dedup.json``.

Tasks run through ``map_calls(fn, argument_tuples)`` (threads by default); an executor's map
spreads them over a cluster. See ``docs/dedup.md`` for what lives where, on disk and in memory.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixsieve.calls import MapCalls
from pixsieve.dedup.against import search_earlier
from pixsieve.dedup.buckets import bucket_edges, resolve_bucket
from pixsieve.dedup.centroids import train_centroids
from pixsieve.dedup.component_parts import edge_count, group_components
from pixsieve.dedup.config import SemanticDedupConfig
from pixsieve.dedup.crossassign import cross_plans
from pixsieve.dedup.index import (
    INDEX_DIR,
    check_settings,
    earlier_radius,
    new_run_id,
    open_earlier,
    settings,
)
from pixsieve.dedup.indexwrite import build_index
from pixsieve.dedup.io import DUPLICATES_FILE, SUMMARY_FILE, resolved_rows, write_partitioned_output
from pixsieve.dedup.keep import resolve_policy
from pixsieve.dedup.kmeans import sample_indices
from pixsieve.dedup.memory import Budget, default_memory_limit
from pixsieve.dedup.partition import assign_file, gather_file, repeated_id
from pixsieve.dedup.quant import load_torch, preload_torch
from pixsieve.dedup.readphase import file_samples, read_dir, read_file, read_sample_rows
from pixsieve.dedup.recluster import against_centroids, check_mode, recluster_counts
from pixsieve.dedup.sources import Columns, InputError, parquet_files, plan_sources
from pixsieve.dedup.taskfiles import FileTask, cluster_buckets
from pixsieve.dedup.workdir import Discards, prepare_work, stamp, thread_map

Progress = Callable[[str, int, int], None]
#: Above this share of new items beyond the earlier clusters' radius, a run notes it.
FAR_SHARE: float = 0.25
__all__ = ["MapCalls", "PartitionedResult", "dedup_files", "thread_map"]


@dataclass
class PartitionedResult:
    """What a partitioned run produced: output paths, counts, seconds per phase, notes."""

    duplicates: Path
    summary: Path
    work: Path
    counts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    keep_policy: str = ""


def dedup_files(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    config: SemanticDedupConfig | None = None,
    *,
    columns: Columns | None = None,
    memory_limit: int | None = None,
    workers: int = 2,
    work_dir: str | Path | None = None,
    map_calls: MapCalls | None = None,
    progress: Progress | None = None,
    keep_work: bool = True,
    against: Sequence[str | Path] = (),
    model: str | None = None,
    index: bool = True,
    recluster: str = "off",
) -> PartitionedResult:
    """Deduplicate the embeddings of Parquet files without holding them in memory.

    Args:
        inputs: a Parquet file, a directory, a glob or a list of them.
        out_dir: where ``duplicates.parquet`` and ``dedup.json`` are written.
        config: settings (as :func:`pixsieve.dedup.find_duplicates`).
        columns: input column names.
        memory_limit: bytes the process may use (default: half the machine's memory).
        workers: tasks run at once (threads unless ``map_calls`` is given).
        work_dir: partition files (default ``out_dir/work``); a rerun resumes from it.
        map_calls: runs the tasks: ``map_calls(fn, argument_tuples)`` yields results in order.
        progress: called as ``progress(phase, done, total)``.
        keep_work: keep the partition files after success (they allow instant reruns).
        against: earlier ``pixsieve dedup`` outputs (and, through their indexes, the runs
            they were deduplicated against): new rows at or above the threshold to an item
            one of them kept are removed (reason ``duplicate_of_earlier``); the rest are
            deduplicated among themselves as usual, on the earlier runs' centroids.
        model: the embedding model's name, recorded in the index and checked against the
            earlier runs' when both are known.
        index: write ``out_dir/index`` (what a later ``against`` run needs).
        recluster: ``on``/``auto``: extra centroids for far new items (:mod:`.recluster`).

    Raises:
        InputError: unreadable input, missing columns, bad rows (one line naming the row).
    """
    config = config or SemanticDedupConfig()
    columns = columns or Columns()
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out / "work"
    run = map_calls or thread_map(workers)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        start, cpu_start = time.perf_counter(), time.process_time()
        yield
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - cpu_start

    def tick(name: str, results: Iterable[Any], total: int) -> list[Any]:
        done = []
        for item in results:
            done.append(item)
            if progress:
                progress(name, len(done), total)
        return done

    # never read our own output or partitions back as input (``-o`` inside the input directory)
    mine = (out.resolve(), work.resolve())
    files = [
        f
        for f in parquet_files(inputs)
        if not any(Path(f).resolve().is_relative_to(m) for m in mine)
    ]
    if not files:
        raise InputError(f"no input Parquet files outside {out}")
    sources, dim = plan_sources(files, columns)
    n = sum(s.rows for s in sources)
    budget = Budget(memory_limit or default_memory_limit(), workers, n, dim)
    try:
        budget.check()
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    policy, note = resolve_policy(
        config.keep,
        np.empty(0) if columns.score else None,
        np.empty(0) if columns.width and columns.height else None,
    )
    mine = settings(config, dim, model)
    earlier = open_earlier(list(against)) if check_mode(recluster, against) else []
    old_centroids = check_settings(earlier, mine) if earlier else None
    k = config.clusters_for(n) if old_centroids is None else len(old_centroids)
    semdedup = config.mode == "semdedup"
    old_kept = sum(r.meta["kept"] for r in earlier)
    n_buckets = budget.buckets(n * (1.0 if semdedup else 2.0))  # earlier: a cluster at a time
    plan = {
        "files": [(s.path, s.rows, *stamp(s.path)) for s in sources],
        "against": [(r.run_id, r.label) for r in earlier],
        "columns": columns.__dict__,
        "config": config.to_dict(),
        "policy": policy,
        "k": k,
        "recluster": recluster if earlier else "off",
        "buckets": n_buckets,
        "id_buckets": budget.id_buckets(),
        "index": index,  # without one, embeddings are discarded once read for the last time
    }
    discards = Discards(active=not (index or keep_work))
    if prepare_work(work, plan):
        shutil.rmtree(out / INDEX_DIR, ignore_errors=True)
    if not (work / "run_id").exists():
        (work / "run_id").write_text(new_run_id(out))
    run_id = (work / "run_id").read_text()
    radius_path = work / "radius_earlier.npy"
    matches = None
    task = FileTask(str(work), columns, dim, budget.batch_rows, policy)
    counts: dict[str, Any] = {"n": n, "n_clusters": k, "files": len(sources), "buckets": n_buckets}

    def passes() -> int:
        """Run the phases up to resolve; return the number of group buckets."""
        nonlocal matches, k
        centroids_path = work / "centroids.npy"
        id_buckets = budget.id_buckets()
        idx = np.empty(0, np.int64)
        if old_centroids is None and not centroids_path.exists():
            ppc = config.kmeans_points_per_centroid
            idx = sample_indices(n, k, ppc, config.seed, cap=budget.sample_rows)
        with phase("read"):  # every input file decoded once (pixsieve.dedup.readphase)
            samples = file_samples(idx, sources)
            calls = [(task, s, i, samples[i], id_buckets) for i, s in enumerate(sources)]
            tick("read", run(read_file, calls), len(calls))
        with phase("ids"):
            calls = [(str(work), b) for b in range(id_buckets)]
            problems = [p for p in tick("ids", run(repeated_id, calls), len(calls)) if p]
            if problems:
                raise InputError(f"id column {columns.id!r}: {problems[0]}")
        if old_centroids is not None and not centroids_path.exists():
            with phase("recluster" if recluster != "off" else "assign"):
                fit = (task, len(sources), config, budget.sample_rows, old_kept)
                radius = earlier_radius(earlier, len(old_centroids))
                against_centroids(work, old_centroids, radius, recluster, fit)
        if old_centroids is not None:
            k = counts["n_clusters"] = len(np.load(centroids_path, mmap_mode="r"))
        if not centroids_path.exists() and n:
            with phase("sample"):
                train = read_sample_rows(task, len(sources))
            with phase("kmeans"):
                centroids = train_centroids(
                    train,
                    k,
                    iters=config.kmeans_iters,
                    points_per_centroid=config.kmeans_points_per_centroid,
                    seed=config.seed,
                )
                del train
                np.save(work / "centroids.tmp.npy", centroids)
                (work / "centroids.tmp.npy").rename(centroids_path)
        if old_centroids is None:
            counts["kmeans_sample"] = int(
                min(n, k * config.kmeans_points_per_centroid, budget.sample_rows)
            )

        bucket_of = cluster_buckets(k, n_buckets)
        candidates = 1 if semdedup else config.border_candidates
        slack = 0.0 if semdedup else config.border_slack
        with phase("assign"):  # cross memberships <= n·m
            preload_torch()  # the similarity phase's int8 products need it
            x_buckets = max(n_buckets, budget.buckets(n * candidates))
            plans = cross_plans(work, np.load(centroids_path), earlier, x_buckets, config.threshold)
            radius = str(radius_path) if earlier and recluster == "off" else None
            shared = next((p for p in plans if p.k == k), None)  # this run's centroids
            border = (candidates, config.threshold, slack, radius, shared)
            calls = [
                (task, s, i, str(centroids_path), bucket_of, *border) for i, s in enumerate(sources)
            ]
            assigned = tick("assign", run(assign_file, calls), len(calls))
        counts["border_memberships"] = sum(c["secondary"] for c in assigned)
        if earlier:
            counts["beyond_radius"] = sum(c.get("beyond", 0) for c in assigned)
            counts.update(recluster_counts(work))
            counts["beyond_radius_share"] = counts["beyond_radius"] / max(n, 1)

        excluded = None
        if earlier:
            with phase("earlier"):
                border = (candidates, config.threshold, slack)
                matches, crossed = search_earlier(run, task, sources, plans, border)
                excluded = str(work / "excluded.npy")
                np.save(excluded, np.sort(matches.column("row").to_numpy()))
            counts.update(crossed)
        with phase("similarity"):
            load_torch()  # before the map: its tasks multiply in int8 on torch (pairs.int8_pairs)
            reads = (task, np.array([s.offset for s in sources] + [n], np.int64))
            calls = [(reads, b, config, budget.bucket_rows, excluded) for b in range(n_buckets)]
            edges = tick("similarity", run(bucket_edges, calls), len(calls))
        discards.discard(work.glob("assign/f*/b*.f32"))  # no later phase reads them
        for key in ("pairs_found", "similarities_computed"):
            counts[key] = sum(e.get(key, 0) for e in edges)
        counts["bucket_passes"] = sum(e.get("passes", 0) for e in edges)
        with phase("components"):
            edge_files = [str(work / "edges" / f"b{b:04d}.parquet") for b in range(n_buckets)]
            parts = budget.component_parts(edge_count(edge_files))
            offsets = [*(s.offset for s in sources), n]
            chunk = budget.component_edges
            n_grouped = group_components(work, edge_files, offsets, semdedup, parts, chunk)
            g_buckets = budget.group_buckets(n_grouped)
        counts["grouped"] = n_grouped
        counts["component_parts"] = parts

        with phase("gather"):
            calls = [(task, s, i, g_buckets) for i, s in enumerate(sources)]
            tick("gather", run(gather_file, calls), len(calls))
        discards.discard(read_dir(task, i) / "x.npy" for i in range(len(sources)))  # nor these

        with phase("resolve"):
            calls = [(str(work), g, config, dim) for g in range(g_buckets)]
            resolved = tick("resolve", run(resolve_bucket, calls), len(calls))
        counts["resolve_similarities"] = sum(r["similarities_computed"] for r in resolved)
        return g_buckets

    g_buckets = counts["group_buckets"] = passes() if n else 0
    with phase("write"):
        ids = [r.run_id for r in earlier]
        groups = write_partitioned_output(
            work, out, sources, columns, config, g_buckets, matches, ids
        )
    counts.update(groups)
    if index and (work / "centroids.npy").exists():
        with phase("index"):
            rows, rep, _ = resolved_rows(work, g_buckets)
            gone = [rows[rep != rows]]
            if matches is not None:
                gone.append(matches.column("row").to_numpy())
            radius = np.load(radius_path) if earlier else np.full(k, np.inf)
            meta = {"run_id": run_id, "settings": mine, "buckets": n_buckets, "radius": radius}
            meta["bucket_rows"] = budget.bucket_rows
            removed = np.sort(np.concatenate(gone))
            build_index(run, task, out, sources, columns.id, removed, meta, earlier)
    result = PartitionedResult(
        duplicates=out / DUPLICATES_FILE,
        summary=out / SUMMARY_FILE,
        work=work,
        counts=counts,
        timings=timings,
        notes=[note] if note else [],
        keep_policy=policy,
    )
    share = counts.get("beyond_radius_share", 0.0)
    if share > FAR_SHARE:
        result.notes.append(
            f"{100 * share:.0f}% of the new items lie beyond the earlier clusters' radius: "
            "their search costs more (more border clusters); --recluster fits centroids for them"
        )
    summary = {
        "run_id": run_id,
        "input": [str(s.path) for s in sources],
        "against": [{"run_id": r.run_id, "path": r.label} for r in earlier],
        "settings": mine,
        "config": config.to_dict(),
        "keep_policy": policy,
        "memory_limit": budget.limit,
        "workers": workers,
        "counts": counts,
        "timings": {key: round(v, 3) for key, v in timings.items()},
        "cpu_seconds": {key: round(v, 3) for key, v in cpu.items()},
        "notes": result.notes,
    }
    result.summary.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    discards.close()
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return result
