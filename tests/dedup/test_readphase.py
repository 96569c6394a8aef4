"""The read phase decodes each input file once and gives its rows back by range and by index."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixsieve.dedup import SemanticDedupConfig, readphase
from pixsieve.dedup.directio import AlignedBuffer
from pixsieve.dedup.kmeans import normalize
from pixsieve.dedup.packing import fixed_list
from pixsieve.dedup.partition import FileTask
from pixsieve.dedup.partitioned import dedup_files
from pixsieve.dedup.readphase import (
    NpyReader,
    gather_rows,
    read_dir,
    read_file,
    row_blocks,
    take_rows,
)
from pixsieve.dedup.sources import Columns, Source


def _write(path, x: np.ndarray, prefix: str, scores: np.ndarray | None = None) -> str:
    columns = {"id": [f"{prefix}-{i:05d}" for i in range(len(x))], "embedding": fixed_list(x)}
    if scores is not None:
        columns["score"] = scores
    pq.write_table(pa.table(columns), path, row_group_size=70)
    return str(path)


def _data(seed: int, n: int, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[n // 2 :] = x[: n - n // 2] + rng.normal(scale=0.001, size=(n - n // 2, dim))  # copies
    return (x * rng.uniform(0.5, 3.0, size=(n, 1))).astype(np.float32)  # not unit


def test_rows_by_range_and_index(tmp_path):
    x = _data(0, 250)
    scores = np.linspace(0, 1, len(x))
    path = _write(tmp_path / "in.parquet", x, "a", scores)
    task = FileTask(str(tmp_path / "work"), Columns(score="score"), 16, 64, "aesthetic")
    sample = np.array([0, 3, 64, 65, 200, 249])
    counts = read_file(task, Source(path, len(x), 1000), 0, sample, 4)
    assert counts == {"rows": 250, "sample": 6}
    unit = normalize(x)
    folder = read_dir(task, 0)
    np.testing.assert_array_equal(np.load(folder / "x.npy"), unit)
    np.testing.assert_array_equal(np.load(folder / "sample.npy"), unit[sample])
    np.testing.assert_array_equal(np.load(folder / "aesthetic.npy"), scores)
    ids = pq.read_table(sorted(folder.glob("i*.parquet"))).column("id").to_pylist()
    assert sorted(ids) == [f"a-{i:05d}" for i in range(250)]
    starts = []
    for start, rows, aesthetic, resolution in row_blocks(task, 0):
        assert len(rows) <= 64 and resolution is None
        np.testing.assert_array_equal(rows, unit[start : start + len(rows)])
        np.testing.assert_array_equal(aesthetic, scores[start : start + len(rows)])
        starts.append(start)
    assert starts == [0, 64, 128, 192]
    picked = np.array([1, 2, 90, 91, 92, 130, 131, 248])
    got = list(take_rows(task, 0, picked))
    assert [len(b) for b in got] == [8]
    np.testing.assert_array_equal(np.concatenate(got), unit[picked])
    stamp = (folder / "x.npy").stat().st_mtime_ns
    assert read_file(task, Source(path, len(x), 1000), 0, sample, 4) == counts  # not redone
    assert (folder / "x.npy").stat().st_mtime_ns == stamp


def test_gather_rows_reads_runs_of_nearby_rows_across_files(tmp_path, monkeypatch):
    x, y = _data(1, 250), _data(2, 120)
    task = FileTask(str(tmp_path / "work"), Columns(), 16, 64, "first")
    read_file(task, Source(_write(tmp_path / "a.parquet", x, "a"), len(x), 0), 0, np.arange(0), 1)
    read_file(task, Source(_write(tmp_path / "b.parquet", y, "b"), len(y), 250), 1, np.arange(0), 1)
    unit = normalize(np.concatenate([x, y]))
    starts = np.array([0, 250])
    reads = []
    original = readphase.NpyReader.read_view
    monkeypatch.setattr(
        readphase.NpyReader,
        "read_view",
        lambda self, a, b, buf: reads.append((a, b)) or original(self, a, b, buf),
    )
    monkeypatch.setattr(readphase, "GAP_BYTES", 9 * 16 * 4)  # rows up to 8 apart: one read
    # a dense run (gaps under 9 rows) longer than one 64-row piece, two far rows, file b
    rows = np.r_[np.arange(10, 150, 3), 200, 240, 250, 251, 369]
    out = np.zeros((len(rows) + 3, 16), np.float32)
    gather_rows(task, starts, rows, out)
    np.testing.assert_array_equal(out[: len(rows)], unit[rows])
    assert not out[len(rows) :].any()
    assert reads == [(10, 74), (76, 140), (142, 149), (200, 201), (240, 241), (0, 2), (119, 120)]


def test_each_input_file_is_decoded_once(tmp_path, monkeypatch):
    """A run (and a run --against it, re-clustering) decodes every input file's embedding
    column exactly once; every later pass reads the read phase's rows."""
    decoded: list[str] = []
    iter_batches = pq.ParquetFile.iter_batches

    def counting(self, *args, columns=None, **kw):
        if columns and "embedding" in columns and "id" in self.schema_arrow.names:
            decoded.append(columns)  # one entry per decode of an input file (partitions: no id)
        return iter_batches(self, *args, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _data(1, 600), _data(2, 600)
    for f in range(3):
        _write(tmp_path / "a" / f"p{f}.parquet", a[f * 200 : (f + 1) * 200], f"a{f}")
        _write(tmp_path / "b" / f"p{f}.parquet", b[f * 200 : (f + 1) * 200], f"b{f}")
    config = SemanticDedupConfig(n_clusters=6, threshold=0.95)
    first = dedup_files(tmp_path / "a", tmp_path / "A", config)
    assert len(decoded) == 3 and first.counts["removed"] > 0
    decoded.clear()
    second = dedup_files(tmp_path / "b", tmp_path / "B", config, against=[tmp_path / "A"])
    assert len(decoded) == 3 and second.counts["removed"] > 0
    decoded.clear()
    third = dedup_files(
        tmp_path / "b", tmp_path / "C", config, against=[tmp_path / "A"], recluster="on"
    )
    assert len(decoded) == 3 and third.counts["removed"] > 0


@pytest.mark.parametrize("direct", [True, False])
def test_npy_reader_views_match_plain_reads_past_the_page_cache_or_not(
    tmp_path, monkeypatch, direct
):
    x = _data(3, 300).astype(np.float16)  # 2 bytes a number: rows straddle aligned blocks
    np.save(tmp_path / "x.npy", x)
    if not direct:  # a file system without O_DIRECT (tmpfs, macOS)
        monkeypatch.setattr("pixsieve.dedup.directio.open_direct", lambda path: None)
    reader = NpyReader(tmp_path / "x.npy", direct=True)
    buffer = AlignedBuffer()
    try:
        for lo, hi in [(0, 1), (1, 3), (7, 200), (250, 300), (0, 300)]:
            np.testing.assert_array_equal(reader.read_view(lo, hi, buffer), x[lo:hi])
            np.testing.assert_array_equal(reader.read(lo, hi), x[lo:hi])
    finally:
        reader.close()
