"""Scan pass: read each shard once, hash every image, so exact duplicates never get decoded."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.calls import MapCalls
from pixsieve.dedup.exact import content_hash, find_exact_duplicates
from pixsieve.io.limits import ReadLimits
from pixsieve.io.schemas import EXACT_DUPLICATES, HASHES, conform, sample_id
from pixsieve.io.shards import ShardRef
from pixsieve.io.tar_reader import TarShardReader
from pixsieve.progress import Progress
from pixsieve.run.layout import RunLayout, shard_id

PASS = "scan"


class ScanWorker:
    """Hash the image of every structurally valid sample of one shard."""

    def __init__(
        self,
        layout: RunLayout,
        shards: list[ShardRef],
        storage_options: dict[str, Any],
        limits: ReadLimits | None = None,
    ) -> None:
        self.layout = layout
        self.shards = shards
        self.storage_options = storage_options
        self.limits = limits or ReadLimits()

    def setup(self) -> None:
        """Nothing to load."""

    def done(self, index: int) -> dict[str, Any] | None:
        """Saved summary when this shard was already scanned."""
        return self.layout.read_json(self.layout.marker(PASS, shard_id(index)))

    def run(self, index: int, progress: Progress) -> dict[str, Any]:
        """Hash one shard's images and write ``cache/hashes/SSSSS.parquet``."""
        url = self.shards[index].url
        # sidecars are checked: a sample they make an error is hashed by no one (policy: limits)
        reader = TarShardReader(url, self.storage_options, self.limits)
        positions, keys, digests = [], [], []
        samples = 0
        for sample in reader:
            samples += 1
            idx = sample.image_index
            if sample.reason is None and idx is not None and sample.data[idx]:
                positions.append(sample.position)
                keys.append(sample.key)
                digests.append(content_hash(sample.data[idx]))
            if samples % 256 == 0:
                progress(256)
        progress(samples % 256)
        if reader.repeated_keys:  # every group of such a key is an error (see the reader)
            kept = [i for i, k in enumerate(keys) if k not in reader.repeated_keys]
            positions = [positions[i] for i in kept]
            keys = [keys[i] for i in kept]
            digests = [digests[i] for i in kept]
        n = len(positions)
        table = pa.table(
            {
                "shard_index": pa.array([index] * n, pa.int64()),
                "position": pa.array(positions, pa.int64()),
                "sample_id": pa.array([sample_id(index, p) for p in positions], pa.string()),
                "key": pa.array(keys, pa.string()),
                "source": pa.array([url] * n, pa.string()),
                "hash": pa.array(digests, pa.binary(16)),
            }
        )
        self.layout.write_table(self.layout.hashes(index), conform(table, HASHES))
        summary = {"samples": samples, "error": reader.error}
        self.layout.write_json(self.layout.marker(PASS, shard_id(index)), summary)
        return summary

    def fail(self, index: int, error: str) -> dict[str, Any]:
        """A shard that cannot be scanned contributes no hashes; the score pass records it."""
        return {"samples": 0, "error": error}


def exact_duplicates(
    layout: RunLayout,
    n_shards: int,
    *,
    memory_limit: int | None = None,
    map_calls: MapCalls | None = None,
) -> pa.Table:
    """Global exact-duplicate decision over all scanned shards (cached in the output).

    Runs :func:`pixsieve.dedup.exact_parts.exact_duplicates_partitioned` over the per-shard
    hash tables: hashes are split into hash-prefix buckets (``layout.exact_work()``), each
    bucket decided alone, so no process holds every hash. The first occurrence in input order
    wins, as over all hashes at once. Only the duplicates (rows to drop) come back here.
    """
    path = layout.exact_duplicates()
    if layout.read_json(layout.marker(PASS, "exact")) is not None:
        return layout.read_table(path)
    from pixsieve.dedup.exact_parts import exact_duplicates_partitioned

    run = map_calls if layout.is_local else None  # a temporary work dir is seen only here
    with layout.workspace(layout.exact_work()) as work:
        files = []
        for i in range(n_shards):
            p = layout.hashes(i)
            if not layout.fs.exists(p):
                continue
            if not layout.is_local:  # partition tasks read local files
                local = f"{work}/hashes-{shard_id(i)}.parquet"
                pq.write_table(layout.read_table(p), local)
                p = local
            files.append(p)
        outs = exact_duplicates_partitioned(files, work, memory_limit=memory_limit, map_calls=run)
        parts = [pq.read_table(o) for o in outs]
    empty = find_exact_duplicates(HASHES.empty_table())
    dups = pa.concat_tables([conform(t, EXACT_DUPLICATES) for t in [empty, *parts]])
    if parts:
        order = np.lexsort((dups["position"].to_numpy(), dups["shard_index"].to_numpy()))
        dups = dups.take(pa.array(order))
    layout.write_table(path, dups)
    layout.write_json(layout.marker(PASS, "exact"), {"duplicates": dups.num_rows})
    if layout.is_local and layout.fs.exists(layout.exact_work()):  # the marker covers it
        layout.fs.rm(layout.exact_work(), recursive=True)
    return dups
