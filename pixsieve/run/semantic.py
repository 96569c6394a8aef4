"""Semantic dedup pass: one global pass over the cached embeddings of every kept sample."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pixsieve.io.schemas import SEMANTIC_DUPLICATES, conform
from pixsieve.io.shards import ShardRef
from pixsieve.io.tables import embeddings_from_arrow
from pixsieve.run.layout import RunLayout
from pixsieve.stages.base import StageStats
from pixsieve.stages.scoring import AestheticFilter

PASS = "semantic"
_AESTHETIC = AestheticFilter.column  # the "keep the most aesthetic" tie-break reads it
_COLUMNS = ["position", "key", "status", "embedding", _AESTHETIC, "width", "height"]


def load_candidates(layout: RunLayout, shards: list[ShardRef]) -> dict[str, Any]:
    """Collect kept samples that have an embedding, from every shard's cache."""
    parts: list[pa.Table] = []
    for i, shard in enumerate(shards):
        path = layout.samples(i)
        if not layout.fs.exists(path):
            continue
        t = layout.read_table(path)
        if "embedding" not in t.column_names:
            continue
        t = t.filter(pc.and_(pc.equal(t["status"], "kept"), pc.is_valid(t["embedding"])))
        cols = {c: t[c] for c in _COLUMNS if c in t.column_names}
        cols["shard_index"] = pa.array(np.full(t.num_rows, i, dtype=np.int64))
        cols["source"] = pa.array([shard.url] * t.num_rows, pa.string())
        if _AESTHETIC not in cols:
            cols[_AESTHETIC] = pa.nulls(t.num_rows, pa.float32())
        parts.append(pa.table(cols))
    if not parts:
        return {"n": 0}
    table = pa.concat_tables(parts, promote_options="permissive")
    aesthetic = table[_AESTHETIC].to_numpy(zero_copy_only=False).astype(np.float32)
    return {
        "n": table.num_rows,
        "embeddings": embeddings_from_arrow(table["embedding"]),
        "aesthetic": None if np.isnan(aesthetic).all() else aesthetic,
        "resolution": (table["width"].to_numpy().astype(np.int64) * table["height"].to_numpy()),
        "shard_index": table["shard_index"].to_numpy(),
        "position": table["position"].to_numpy(),
        "key": table["key"].to_numpy(zero_copy_only=False),
        "source": table["source"].to_numpy(zero_copy_only=False),
    }


def run_semantic_dedup(
    layout: RunLayout,
    shards: list[ShardRef],
    config: Any,
    progress: Any = None,
    map_calls: Any = None,
) -> dict[str, Any]:
    """Find near-duplicates among kept samples; cache the decision; return counters."""
    saved = layout.read_json(layout.marker(PASS, "all"))
    if saved is not None:
        return saved
    from pixsieve.dedup import find_duplicates

    start = time.perf_counter()
    data = load_candidates(layout, shards)
    n = data["n"]
    rows: dict[str, Any] = {
        k: []
        for k in (
            "shard_index", "position", "removed", "duplicate_of", "duplicate_of_source",
            "similarity", "component_id", "component_size", "chained",
        )
    }  # fmt: skip
    timings: dict[str, float] = {}
    backend = ""
    removed = np.zeros(n, dtype=bool)
    if n:
        result = find_duplicates(
            data["embeddings"],
            config,
            aesthetic=data["aesthetic"],
            resolution=data["resolution"],
            progress=progress,
            map_calls=map_calls,
        )
        timings = dict(getattr(result, "timings", {}) or {})
        backend = str(getattr(result, "backend", "") or "")
        removed = np.asarray(result.removed, dtype=bool)
        grouped = np.flatnonzero(np.asarray(result.component_size) > 1)
        rep = np.asarray(result.duplicate_of)
        for i in grouped:
            gone = bool(removed[i])
            rows["shard_index"].append(int(data["shard_index"][i]))
            rows["position"].append(int(data["position"][i]))
            rows["removed"].append(gone)
            rows["duplicate_of"].append(str(data["key"][rep[i]]) if gone else None)
            rows["duplicate_of_source"].append(str(data["source"][rep[i]]) if gone else None)
            sim = float(result.similarity[i])
            rows["similarity"].append(None if np.isnan(sim) else sim)
            rows["component_id"].append(int(result.component_id[i]))
            rows["component_size"].append(int(result.component_size[i]))
            rows["chained"].append(bool(result.chained[i]))
    table = pa.table(
        {
            "shard_index": pa.array(rows["shard_index"], pa.int64()),
            "position": pa.array(rows["position"], pa.int64()),
            "removed": pa.array(rows["removed"], pa.bool_()),
            "duplicate_of": pa.array(rows["duplicate_of"], pa.string()),
            "duplicate_of_source": pa.array(rows["duplicate_of_source"], pa.string()),
            "similarity": pa.array(rows["similarity"], pa.float32()),
            "component_id": pa.array(rows["component_id"], pa.int64()),
            "component_size": pa.array(rows["component_size"], pa.int64()),
            "chained": pa.array(rows["chained"], pa.bool_()),
        }
    )
    layout.write_table(layout.semantic_duplicates(), conform(table, SEMANTIC_DUPLICATES))
    stats = StageStats()
    stats.count(np.ones(n, dtype=bool), ~removed, np.zeros(n, dtype=bool), "semantic_duplicate")
    summary = {
        "stats": {"counts": dict(stats.counts)},
        "seconds": round(time.perf_counter() - start, 3),
        "timings": timings,
        "backend": backend,  # faiss or torch:<device> (pixsieve.dedup.torch_ops)
    }
    layout.write_json(layout.marker(PASS, "all"), summary)
    return summary
