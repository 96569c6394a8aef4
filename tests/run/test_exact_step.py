"""The scan pass's exact-duplicate step, partitioned by hash, gives the all-at-once answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pixsieve.dedup.exact import find_exact_duplicates
from pixsieve.dedup.memory import BASE_RESERVE
from pixsieve.executors import LocalExecutor
from pixsieve.io.schemas import EXACT_DUPLICATES, conform
from pixsieve.run.layout import RunLayout
from pixsieve.run.scan import exact_duplicates


def _hashes(layout: RunLayout, shards: int, per_shard: int, seed: int = 0) -> pa.Table:
    """Hash tables of ``shards`` shards drawing from few distinct images (many repeats)."""
    rng = np.random.default_rng(seed)
    digests = [rng.bytes(16) for _ in range(per_shard)]
    tables = []
    for i in range(shards):
        pick = rng.integers(0, len(digests), per_shard)
        t = pa.table(
            {
                "shard_index": pa.array([i] * per_shard, pa.int64()),
                "position": pa.array(np.arange(per_shard), pa.int64()),
                "key": pa.array([f"k{i}-{j}" for j in range(per_shard)]),
                "source": pa.array([f"/in/{i}.tar"] * per_shard),
                "hash": pa.array([digests[p] for p in pick], pa.binary(16)),
            }
        )
        layout.write_table(layout.hashes(i), t)
        tables.append(t)
    return pa.concat_tables(tables)


@pytest.mark.parametrize("workers", [1, 3])
def test_partitioned_exact_step_matches_the_global_decision(tmp_path: Path, workers: int) -> None:
    layout = RunLayout.open(str(tmp_path / "out"))
    everything = _hashes(layout, shards=6, per_shard=300)
    limit = BASE_RESERVE + 2 * 256 * 100  # about 100 hashes per bucket: 18 buckets
    buckets = []

    def counting(fn, calls):
        calls = list(calls)
        if fn.__name__ == "exact_bucket":
            buckets.extend(calls)
        return LocalExecutor(workers).map_calls(fn, calls)

    got = exact_duplicates(layout, 6, memory_limit=limit, map_calls=counting)
    want = conform(find_exact_duplicates(everything), EXACT_DUPLICATES)  # + duplicate_of_run
    assert want.num_rows > 500 and got.equals(want)  # first occurrence in input order wins
    assert len(buckets) > 10
    assert not Path(layout.exact_work()).exists()  # removed once the decision is written
    assert layout.read_table(layout.exact_duplicates()).equals(want)
