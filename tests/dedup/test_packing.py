"""Partition embeddings in raw float32 files beside the Parquet partitions: written by the
task writers in the rows' order, read back whole, or scattered into chosen rows (one run
straight into place, anything else through a small buffer)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.dedup import packing
from pixsieve.dedup.packing import fixed_list, read_rows, read_rows_into, rows_path
from pixsieve.dedup.taskfiles import _Writers


def _partition(tmp_path, x: np.ndarray, pieces: int = 3):
    writers = _Writers(tmp_path, "b")
    for part in np.array_split(np.arange(len(x)), pieces):
        writers.write(7, pa.table({"row": part}), x[part])
    writers.close()
    path = tmp_path / "b0007.parquet"
    assert rows_path(path).stat().st_size == x.nbytes
    assert pq.read_table(path).column("row").to_pylist() == list(range(len(x)))
    return path


def test_rows_round_trip_and_fixed_list_keeps_the_values(tmp_path):
    x = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    np.testing.assert_array_equal(read_rows(_partition(tmp_path, x), 12), x)
    np.testing.assert_array_equal(np.stack(fixed_list(x).to_numpy(zero_copy_only=False)), x)


def test_read_rows_into_scatters_and_skips_rows_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(packing, "READ_ROWS", 128)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    path = _partition(tmp_path, x)
    where = rng.permutation(1000)
    where[rng.random(1000) < 0.3] = -1  # rows left out
    where[300:500] = -1  # a whole batch and more skipped
    kept = where >= 0
    out = np.full((1000, 16), np.nan, np.float32)
    read_rows_into(path, out, where)
    np.testing.assert_array_equal(out[where[kept]], x[kept])
    assert np.isnan(out[np.setdiff1d(np.arange(1000), where[kept])]).all()
    run = np.full((1100, 16), np.nan, np.float32)
    read_rows_into(path, run, np.arange(100, 1100))  # one ascending run: straight into place
    np.testing.assert_array_equal(run[100:], x)
    assert np.isnan(run[:100]).all()
