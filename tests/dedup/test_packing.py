"""Packed embeddings in partition files: written as one fixed-size value per row, read back
exactly, whole or streamed in batches into chosen rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.dedup.packing import fixed_list, packed, read_packed_into, unpacked


def _file(tmp_path, x: np.ndarray, row_group: int):
    path = tmp_path / "part.parquet"
    table = pa.table({"row": np.arange(len(x)), "embedding": packed(x)})
    pq.write_table(table, path, row_group_size=row_group)
    return str(path)


def test_packed_round_trips_and_fixed_list_keeps_the_values(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    table = pq.read_table(_file(tmp_path, x, 7))
    np.testing.assert_array_equal(unpacked(table.column("embedding"), 12), x)
    np.testing.assert_array_equal(np.stack(fixed_list(x).to_numpy(zero_copy_only=False)), x)


def test_read_packed_into_scatters_and_skips_rows_across_batches(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    path = _file(tmp_path, x, 300)
    where = rng.permutation(1000)
    where[rng.random(1000) < 0.3] = -1  # rows left out
    kept = where >= 0
    out = np.full((1000, 16), np.nan, np.float32)
    read_packed_into(path, out, where, batch_rows=128)  # batches straddle the row groups
    np.testing.assert_array_equal(out[where[kept]], x[kept])
    assert np.isnan(out[np.setdiff1d(np.arange(1000), where[kept])]).all()
