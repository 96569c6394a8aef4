"""Semantic dedup pass: partitioned, out-of-core dedup over the run's per-shard caches.

1. **inputs** (one task per shard): the kept samples that have an embedding, with what the
   keep policy reads (aesthetic score, width and height; input order is the row order) →
   ``layout.semantic_input(i)``. A row's id is ``shard_index << 32 | position``.
2. the phases of :func:`pixsieve.dedup.partitioned.dedup_files` over those files (sampled
   k-means, per-file assignment, per-bucket edges, resolution), their tasks placed through the
   executor's ``map_calls`` → ``layout.semantic_work()`` and ``layout.semantic_out()``.
3. every grouped row (kept or removed) → ``layout.semantic_duplicates()``, which the export
   pass reads; then the pass's completion marker, after which the inputs and partition files
   (as large as the embeddings) are removed.

Each step resumes: an input file or a partition that exists is not redone (the dedup module's
own resume; its plan records the input files' sizes and times, so changed inputs start it
afresh). :class:`pixsieve.passes.Passes` drops ``cache/semantic`` whenever a shard was
(re)scored, so the pass always covers every shard. No process holds every embedding.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pixsieve.calls import MapCalls, serial_calls
from pixsieve.dedup.io import REASON_EARLIER
from pixsieve.io.schemas import SAMPLE_ID_SHIFT as SHIFT
from pixsieve.io.schemas import SEMANTIC_DUPLICATES, conform
from pixsieve.io.shards import ShardRef
from pixsieve.run.layout import RunLayout
from pixsieve.stages.base import StageStats
from pixsieve.stages.scoring import AestheticFilter

PASS = "semantic"
_AESTHETIC = AestheticFilter.column  # the "keep the most aesthetic" policy reads it


def write_inputs(layout: RunLayout, index: int, target: str) -> dict[str, int]:
    """Write shard ``index``'s dedup candidates to the local file ``target`` (once).

    Returns ``rows`` (candidates) and ``scored`` (of them, with an aesthetic score).
    """
    if os.path.exists(target):
        meta = pq.read_metadata(target).metadata or {}
        return {"rows": pq.read_metadata(target).num_rows, "scored": int(meta[b"scored"])}
    path = layout.samples(index)
    rows, scored = 0, 0
    table = None
    if layout.fs.exists(path):
        t = layout.read_table(path)
        if "embedding" in t.column_names:
            t = t.filter(pc.and_(pc.equal(t["status"], "kept"), pc.is_valid(t["embedding"])))
            n = t.num_rows
            pos = t["position"].to_numpy().astype(np.int64)
            aesthetic = (
                pc.cast(t[_AESTHETIC], pa.float64())
                if _AESTHETIC in t.column_names
                else pa.nulls(n, pa.float64())
            )
            table = pa.table(
                {
                    "id": pa.array((np.int64(index) << SHIFT) | pos, pa.int64()),
                    "embedding": t["embedding"],
                    "aesthetic": aesthetic,
                    "width": pc.cast(t["width"], pa.int64()),
                    "height": pc.cast(t["height"], pa.int64()),
                    "key": pc.cast(t["key"], pa.string()),
                }
            )
            rows, scored = n, n - aesthetic.null_count
    if table is None:
        table = pa.table({"id": pa.array([], pa.int64())})
    table = table.replace_schema_metadata({"scored": str(scored)})
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, target)
    return {"rows": rows, "scored": scored}


def _keys(inputs: dict[int, str], ids: np.ndarray) -> np.ndarray:
    """The sample key of every id (read from the input files, one shard at a time)."""
    out = np.empty(len(ids), dtype=object)
    shard = ids >> SHIFT
    for s in np.unique(shard):
        t = pq.read_table(inputs[int(s)], columns=["id", "key"])
        where = dict(zip(t["id"].to_numpy().tolist(), t["key"].to_pylist(), strict=True))
        sel = np.flatnonzero(shard == s)
        out[sel] = [where[int(i)] for i in ids[sel]]
    return out


def decision_table(
    work: str,
    files: list[str],
    inputs: dict[int, str],
    shards: list[ShardRef],
    group_buckets: int,
    config: Any,
) -> pa.Table:
    """Every grouped row of a finished partitioned run as the export pass reads it."""
    from pixsieve.dedup.io import resolved_rows
    from pixsieve.dedup.result import describe_groups

    rows, rep, sim = resolved_rows(Path(work), group_buckets)
    desc = describe_groups(rows, rep, sim, config)
    grouped = desc["component_size"] >= 2
    rows, rep, sim = rows[grouped], rep[grouped], sim[grouped]
    offsets = np.cumsum([0] + [pq.read_metadata(f).num_rows for f in files])
    both = np.concatenate([rows, rep])
    ids = np.empty(len(both), dtype=np.int64)
    file_of = np.searchsorted(offsets, both, side="right") - 1
    for f in np.unique(file_of):
        sel = np.flatnonzero(file_of == f)
        col = pq.read_table(files[int(f)], columns=["id"])["id"].to_numpy()
        ids[sel] = col[both[sel] - offsets[f]]
    own, of = ids[: len(rows)], ids[len(rows) :]
    removed = desc["removed"][grouped]
    keys = _keys(inputs, of[removed])
    dup_of = np.full(len(rows), None, dtype=object)
    dup_src = np.full(len(rows), None, dtype=object)
    dup_of[removed] = keys
    dup_src[removed] = [shards[int(s)].url for s in of[removed] >> SHIFT]
    return pa.table(
        {
            "shard_index": pa.array(own >> SHIFT, pa.int64()),
            "position": pa.array(own & ((1 << SHIFT) - 1), pa.int64()),
            "removed": pa.array(removed, pa.bool_()),
            "duplicate_of": pa.array(dup_of.tolist(), pa.string()),
            "duplicate_of_source": pa.array(dup_src.tolist(), pa.string()),
            "duplicate_of_run": pa.nulls(len(rows), pa.string()),
            "similarity": pa.array(np.where(removed, sim, np.nan), pa.float32(), from_pandas=True),
            "component_id": pa.array(desc["component_id"][grouped], pa.int64()),
            "component_size": pa.array(desc["component_size"][grouped], pa.int64()),
            "chained": pa.array(desc["chained"][grouped], pa.bool_()),
        },
        schema=SEMANTIC_DUPLICATES,
    )


def run_semantic_dedup(
    layout: RunLayout,
    shards: list[ShardRef],
    config: Any,
    progress: Any = None,
    map_calls: MapCalls | None = None,
    memory_limit: int | None = None,
    workers: int = 1,
    against: list[str] | None = None,
    model: str | None = None,
    against_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Find near-duplicates among kept samples; cache the decision; return counters.

    Args:
        layout: the run directory.
        shards: the input shards, in input order.
        config: a :class:`pixsieve.dedup.SemanticDedupConfig`.
        progress: called as ``progress(phase, done, total)``.
        map_calls: places the per-shard, per-file and per-bucket tasks (serial by default).
        memory_limit: bytes the pass may use (default: half the machine's memory).
        workers: tasks that run at once (the memory budget is split between them).
        against: earlier curate outputs with a semantic index (``curate --against``): a
            sample at or above the threshold to a sample one of them kept is removed
            (``duplicate_of_earlier``, ``duplicate_of_run``).
        model: the embedding model's id, recorded in the index (and checked against theirs).
        against_names: the name each of ``against`` is recorded under, where not its path (an
            output elsewhere, read from a local copy: its URL).

    The run's own semantic index goes to ``layout.index_dir()``.
    """
    saved = layout.read_json(layout.marker(PASS, "all"))
    if saved is not None:
        return saved
    from pixsieve.dedup.partitioned import dedup_files
    from pixsieve.dedup.sources import Columns
    from pixsieve.run.against import earlier_rows
    from pixsieve.run.index import publish_semantic_index

    start = time.perf_counter()
    # on object storage the partition files live in a local temporary directory: its tasks
    # then run here, one after the other (workers elsewhere could not see them)
    run = (map_calls or serial_calls) if layout.is_local else serial_calls
    with layout.workspace(layout.semantic_dir()) as local:
        here = layout.semantic_dir() if layout.is_local else local
        inputs = {
            i: layout.semantic_input(i).replace(layout.semantic_dir(), here, 1)
            for i in range(len(shards))
        }
        calls = [(layout, i, inputs[i]) for i in range(len(shards))]
        made = list(run(write_inputs, calls))
        n = sum(m["rows"] for m in made)
        files = [inputs[i] for i, m in enumerate(made) if m["rows"]]
        timings: dict[str, float] = {"inputs": round(time.perf_counter() - start, 3)}
        table = earlier = SEMANTIC_DUPLICATES.empty_table()
        if n:
            columns = Columns(
                id="id",
                embedding="embedding",
                score="aesthetic" if any(m["scored"] for m in made) else None,
                width="width",
                height="height",
            )
            work = layout.semantic_work().replace(layout.semantic_dir(), here, 1)
            out = layout.semantic_out().replace(layout.semantic_dir(), here, 1)
            result = dedup_files(
                files,
                out,
                config,
                columns=columns,
                memory_limit=memory_limit,
                workers=workers,
                work_dir=work,
                map_calls=run,
                progress=progress,
                against=against or (),
                model=model,
            )
            timings.update({k: round(v, 3) for k, v in result.timings.items()})
            buckets = int(result.counts.get("group_buckets", 0))
            table = decision_table(work, files, inputs, shards, buckets, config)
            if against:
                earlier = earlier_rows(out, against, against_names)
            publish_semantic_index(layout, f"{out}/index")
    table = pa.concat_tables([conform(table, SEMANTIC_DUPLICATES), earlier])
    layout.write_table(layout.semantic_duplicates(), table)
    removed = int(pc.sum(table["removed"]).as_py() or 0) if table.num_rows else 0
    kept = np.ones(n, dtype=bool)
    kept[:removed] = False
    reasons = [REASON_EARLIER] * earlier.num_rows + ["semantic_duplicate"] * (n - earlier.num_rows)
    stats = StageStats()
    stats.count(np.ones(n, dtype=bool), kept, np.zeros(n, dtype=bool), reasons)
    summary = {
        "stats": {"counts": dict(stats.counts)},
        "seconds": round(time.perf_counter() - start, 3),
        "timings": timings,
        "backend": _backend(config),
    }
    layout.write_json(layout.marker(PASS, "all"), summary)
    for done in (layout.semantic_work(), layout.semantic_inputs()):  # the marker covers them
        if layout.is_local and layout.fs.exists(done):
            layout.fs.rm(done, recursive=True)
    return summary


def _backend(config: Any) -> str:
    """Where the per-cluster similarity search ran: ``faiss`` (numpy/faiss on the CPU) or
    ``torch:<device>`` (:mod:`pixsieve.dedup.torch_ops`); k-means and the assignment of the
    partitioned passes run on the CPU either way."""
    from pixsieve.dedup.torch_ops import choose_backend

    name, device = choose_backend(config.backend)
    return name if name == "faiss" else f"torch:{device.type}"
