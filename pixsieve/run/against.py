"""``curate --against OUT``: the earlier curate outputs a run deduplicates against.

An earlier output is read, never written: its ``index/curate.json`` (settings, hash buckets,
the outputs it was itself run against), its exact index ``index/hashes/hBBBB/*.parquet``
(content hash, key and shard of every sample it kept, bucketed by
:func:`pixsieve.dedup.hashparts.key_buckets`), its semantic index (``index/index.json`` and the
partitions of :mod:`pixsieve.dedup.index`) and, to name an earlier sample by its key, its
manifest. ``--against OUT2`` brings in OUT2's own earlier outputs too (``parents``). An
output elsewhere than on local disk is read from a local copy of those files
(:func:`pixsieve.io.localcopy.local_copy`) and recorded under its URL.

* opening and checking them: :mod:`pixsieve.run.earlier`.
* :func:`earlier_exact`: the scan pass's second exact step. One task per (earlier run, new
  hash file) writes the file's hashes into that run's buckets (``layout.earlier_exact()``),
  one task per (earlier run, bucket) compares them with the run's kept hashes; a new sample
  whose image an earlier run kept is dropped (``duplicate_of_earlier``) before decoding.
* :func:`earlier_keys`: the key and shard of earlier samples named by the semantic index.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pixsieve.calls import MapCalls, serial_calls
from pixsieve.dedup.hashparts import key_buckets
from pixsieve.io.schemas import EXACT_DUPLICATES, conform, sample_id
from pixsieve.io.schemas import SAMPLE_ID_SHIFT as SHIFT
from pixsieve.run.earlier import EarlierOutput, earlier_layout
from pixsieve.run.layout import RunLayout, shard_id


def _partition(path: str, index: int, work: str, run: int, buckets: int) -> None:
    """Write one new hash file's hashes into earlier run ``run``'s buckets."""
    final = Path(work) / f"r{run:03d}" / f"f{shard_id(index)}"
    if final.exists():
        return
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    table = pq.read_table(path, columns=["shard_index", "position", "hash"])
    bucket = key_buckets(table.column("hash"), buckets)
    for b in np.unique(bucket):
        pq.write_table(table.filter(pa.array(bucket == b)), tmp / f"h{int(b):04d}.parquet")
    tmp.rename(final)


def _match(work: str, run: int, bucket: int, earlier: str, name: str) -> str | None:
    """New samples of one bucket whose hash earlier output ``earlier`` (recorded as ``name``)
    kept."""
    final = Path(work) / f"r{run:03d}" / f"out-h{bucket:04d}.parquet"
    if final.exists():
        return str(final)
    new = sorted(str(p) for p in Path(work).glob(f"r{run:03d}/f*/h{bucket:04d}.parquet"))
    bucket_dir = Path(earlier_layout(earlier).index_hash_bucket(bucket))
    old = sorted(str(p) for p in bucket_dir.glob("*.parquet"))
    if not new or not old:
        return None
    mine = ds.dataset(new, format="parquet").to_table()
    theirs = ds.dataset(old, format="parquet").to_table(columns=["hash", "key", "source"])
    hit = pc.is_in(mine["hash"], value_set=theirs["hash"]).to_numpy(zero_copy_only=False)
    mine = mine.filter(pa.array(hit))
    where = pc.index_in(mine["hash"], value_set=theirs["hash"])
    table = pa.table(
        {
            "shard_index": mine["shard_index"],
            "position": mine["position"],
            "duplicate_of": theirs["key"].take(where),
            "duplicate_of_source": theirs["source"].take(where),
            "duplicate_of_run": pa.array([name] * mine.num_rows, pa.string()),
            "run": pa.array(np.full(mine.num_rows, run, np.int32)),
        }
    )
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.rename(final)
    return str(final)


def earlier_exact(
    layout: RunLayout,
    n_shards: int,
    outputs: list[EarlierOutput],
    map_calls: MapCalls | None = None,
) -> int:
    """Add the new samples whose image an earlier output kept to ``exact_duplicates.parquet``
    (``duplicate_of_run`` set; they replace a within-run row of the same sample). Returns
    how many; cached by the marker ``scan/earlier``."""
    marker = layout.marker("scan", "earlier")
    saved = layout.read_json(marker)
    if saved is not None:
        return int(saved["duplicates"])
    runs = [o for o in outputs if o.meta.get("hash_buckets")]
    run = (map_calls or serial_calls) if layout.is_local else serial_calls
    with layout.workspace(layout.earlier_exact()) as work:
        files = []
        for i in range(n_shards):
            p = layout.hashes(i)
            if layout.fs.exists(p):
                if not layout.is_local:
                    local = f"{work}/hashes-{shard_id(i)}.parquet"
                    pq.write_table(layout.read_table(p), local)
                    p = local
                files.append((i, p))
        calls: list[tuple[Any, ...]] = [
            (p, i, work, r, int(o.meta["hash_buckets"]))
            for r, o in enumerate(runs)
            for i, p in files
        ]
        list(run(_partition, calls))
        calls = [
            (work, r, b, o.path, o.label)
            for r, o in enumerate(runs)
            for b in range(o.meta["hash_buckets"])
        ]
        parts = [pq.read_table(f) for f in run(_match, calls) if f]
    within = layout.read_table(layout.exact_duplicates())
    found = 0
    if parts:
        earlier = pa.concat_tables(parts)
        order = np.lexsort(
            (
                earlier["run"].to_numpy(),
                earlier["position"].to_numpy(),
                earlier["shard_index"].to_numpy(),
            )
        )
        earlier = earlier.take(pa.array(order))
        sid, pos = earlier["shard_index"].to_numpy(), earlier["position"].to_numpy()
        first = np.r_[True, (sid[1:] != sid[:-1]) | (pos[1:] != pos[:-1])]
        earlier = conform(earlier.filter(pa.array(first)), EXACT_DUPLICATES)
        found = earlier.num_rows
        gone = set(zip(sid[first].tolist(), pos[first].tolist(), strict=True))
        mine = [
            (s, p) not in gone
            for s, p in zip(
                within["shard_index"].to_pylist(), within["position"].to_pylist(), strict=True
            )
        ]
        within = conform(within.filter(pa.array(mine, pa.bool_())), EXACT_DUPLICATES)
        merged = pa.concat_tables([within, earlier])
        order = np.lexsort((merged["position"].to_numpy(), merged["shard_index"].to_numpy()))
        layout.write_table(layout.exact_duplicates(), merged.take(pa.array(order)))
    layout.write_json(marker, {"duplicates": found})
    if layout.is_local and layout.fs.exists(layout.earlier_exact()):  # the marker covers it
        layout.fs.rm(layout.earlier_exact(), recursive=True)
    return found


def earlier_keys(output: str, ids: np.ndarray) -> tuple[list[str | None], list[str | None]]:
    """The key and shard of each earlier sample id (``shard_index << 32 | position`` of the
    earlier run ``output``), read from its manifest."""
    wanted = [sample_id(int(i) >> SHIFT, int(i) & ((1 << SHIFT) - 1)) for i in ids]
    table = ds.dataset(earlier_layout(output).manifest_dir(), format="parquet").to_table(
        columns=["sample_id", "key", "source"],
        filter=pc.field("sample_id").isin(sorted(set(wanted))),
    )
    found = {
        s: (k, src)
        for s, k, src in zip(
            table["sample_id"].to_pylist(),
            table["key"].to_pylist(),
            table["source"].to_pylist(),
            strict=True,
        )
    }
    pairs = [found.get(w, (None, None)) for w in wanted]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def earlier_rows(out_dir: str, indexes: list[str], names: dict[str, str] | None = None) -> pa.Table:
    """The semantic pass's new samples removed as near-duplicates of an earlier kept sample,
    as ``semantic_duplicates.parquet`` rows (read from ``dedup_files``' ``duplicates.parquet``;
    ``indexes``: the earlier outputs whose semantic index it ran against, recorded under
    ``names[path]`` where given: :attr:`EarlierOutput.label`)."""
    from pixsieve.dedup.io import DUPLICATES_FILE, REASON_EARLIER
    from pixsieve.io.schemas import SEMANTIC_DUPLICATES

    table = pq.read_table(Path(out_dir, DUPLICATES_FILE))
    table = table.filter(pc.equal(table["reason"], REASON_EARLIER))
    if not table.num_rows:
        return SEMANTIC_DUPLICATES.empty_table()
    where = {}
    for path in indexes:
        meta = json.loads(Path(earlier_layout(path).index_dir(), "index.json").read_text())
        where[meta["run_id"]] = path
    # int64 ids (a file of earlier rows only may carry them as strings)
    ids = pc.cast(table["id"], pa.int64()).to_numpy()
    runs = [where[r] for r in table["duplicate_of_run"].to_pylist()]  # read from here
    of = pc.cast(table["duplicate_of"], pa.int64()).to_numpy()
    keys: list[str | None] = [None] * len(ids)
    sources: list[str | None] = [None] * len(ids)
    for path in sorted(set(runs)):
        sel = [j for j, r in enumerate(runs) if r == path]
        k, s = earlier_keys(path, of[sel])
        for j, kk, ss in zip(sel, k, s, strict=True):
            keys[j], sources[j] = kk, ss
    n = len(ids)
    return conform(
        pa.table(
            {
                "shard_index": pa.array(ids >> SHIFT, pa.int64()),
                "position": pa.array(ids & ((1 << SHIFT) - 1), pa.int64()),
                "removed": pa.array(np.ones(n, bool)),
                "duplicate_of": pa.array(keys, pa.string()),
                "duplicate_of_source": pa.array(sources, pa.string()),
                "duplicate_of_run": pa.array([(names or {}).get(r, r) for r in runs], pa.string()),
                "similarity": table["similarity"],
                "chained": pa.array(np.zeros(n, bool)),
            }
        ),
        SEMANTIC_DUPLICATES,
    )
