"""The index a curate run leaves for later runs ``--against`` it (``OUT/index/``).

* the semantic index: :mod:`pixsieve.dedup.index`'s files (``index.json``, ``centroids.npy``,
  ``radius.npy``, ``kept/``), written by the semantic pass's ``dedup_files`` and moved here by
  :func:`publish_semantic_index`; its ids are the semantic pass's ``shard_index << 32 |
  position``, which :func:`pixsieve.run.against.earlier_keys` turns back into sample keys;
* the exact index: ``hashes/hBBBB/pPPPPP.parquet``, the content hash, key and shard of every
  sample the run kept, bucketed by :func:`pixsieve.dedup.hashparts.key_buckets` of the hash,
  one task per export partition (:func:`write_index`);
* ``curate.json``, written last (an output without it has no index): version, settings
  (embedding model, whether exact and semantic dedup ran), hash buckets, kept samples and the
  outputs this run was deduplicated against (``parents``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pixsieve.calls import MapCalls, serial_calls
from pixsieve.dedup.hashparts import key_buckets
from pixsieve.dedup.index import INDEX_ENTRIES
from pixsieve.io.schemas import INDEX_HASHES, conform
from pixsieve.run.earlier import CURATE_INDEX_VERSION
from pixsieve.run.layout import RunLayout

#: Kept samples per hash bucket of the exact index (a bucket is read whole by a later run).
BUCKET_ROWS: int = 1 << 18


def embedding_model(stages: list[Any]) -> str | None:
    """The id of the model behind the run's embeddings: the ``embed`` stage's model and
    revision (its weights), or its class for a custom stage; ``None`` without one."""
    stage = next((s for s in stages if getattr(s, "name", None) == "embed"), None)
    if stage is None:
        return None
    model = getattr(stage, "model", None)
    if model is None:
        return f"{type(stage).__module__}.{type(stage).__qualname__}"
    revision = getattr(stage, "revision", None)
    return f"{model}@{revision}" if revision else str(model)


def drop_index(layout: RunLayout) -> None:
    """Remove the run's index (its passes are redone)."""
    if layout.fs.exists(layout.index_dir()):
        layout.fs.rm(layout.index_dir(), recursive=True)


def publish_semantic_index(layout: RunLayout, local: str) -> None:
    """Move the semantic index ``dedup_files`` wrote in ``local`` to ``OUT/index/``."""
    if not os.path.isdir(local):
        return
    layout.fs.makedirs(layout.index_dir(), exist_ok=True)
    for name in INDEX_ENTRIES:  # index.json last
        source, target = os.path.join(local, name), layout.path("index", name)
        if not os.path.exists(source):
            continue
        if layout.fs.exists(target):
            layout.fs.rm(target, recursive=True)
        if layout.is_local:
            os.replace(source, target)
        else:
            layout.fs.put(source, target, recursive=os.path.isdir(source))


def _index_part(layout: RunLayout, part: int, shards: list[int], buckets: int) -> dict[str, int]:
    """Write export partition ``part``'s kept samples into the exact index's buckets."""
    manifest = layout.read_table(
        layout.manifest_part(part), columns=["sample_id", "key", "source", "status"]
    )
    manifest = manifest.filter(pc.equal(manifest["status"], "kept"))
    hashes = [
        layout.read_table(layout.hashes(i), columns=["sample_id", "hash"])
        for i in shards
        if layout.fs.exists(layout.hashes(i))
    ]
    if not hashes or not manifest.num_rows:
        return {"kept": 0}
    table = pa.concat_tables(hashes).join(manifest.drop(["status"]), "sample_id", join_type="inner")
    table = table.sort_by("sample_id")
    bucket = key_buckets(table["hash"], buckets)
    for b in np.unique(bucket):
        rows = conform(table.filter(pa.array(bucket == b)), INDEX_HASHES)
        layout.write_table(layout.index_hash_part(int(b), part), rows)
    return {"kept": table.num_rows}


def write_index(
    layout: RunLayout,
    partitions: list[list[int]],
    kept: int,
    settings: dict[str, Any],
    parents: list[str],
    map_calls: MapCalls | None = None,
) -> dict[str, Any]:
    """Write the exact index (when the run hashed its images) and ``curate.json``; return it.

    Args:
        partitions: the export partitions (input shard indexes).
        kept: samples the run kept (sizes the bucket count).
        settings: ``model`` (see :func:`embedding_model`), ``exact`` and ``semantic``.
        parents: absolute paths of the outputs this run was deduplicated against.
    """
    saved = layout.read_json(layout.index_meta())
    if saved is not None:
        return saved
    buckets = max(1, math.ceil(kept / BUCKET_ROWS)) if settings.get("exact") else 0
    if layout.fs.exists(layout.index_hashes()):
        layout.fs.rm(layout.index_hashes(), recursive=True)
    written = 0
    if buckets:
        run = (map_calls or serial_calls) if layout.is_local else serial_calls
        calls = [(layout, p, shards, buckets) for p, shards in enumerate(partitions)]
        written = sum(r["kept"] for r in run(_index_part, calls))
    meta = {
        "version": CURATE_INDEX_VERSION,
        "settings": settings,
        "hash_buckets": buckets,
        "kept": kept,
        "hashed": written,
        "parents": parents,
    }
    layout.write_json(layout.index_meta(), meta)
    return meta
