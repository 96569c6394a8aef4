"""Embeddings in partition files: each Parquet partition ``bBBBB.parquet`` (the rows'
metadata) has a raw float32 file ``bBBBB.f32`` beside it holding the rows' embeddings in the
same order, written by :class:`pixsieve.dedup.taskfiles._Writers`.

Reading a raw file is positioned reads into the caller's array (past the page cache, through
an aligned buffer: :mod:`pixsieve.dedup.directio`, as the files are written); a Parquet column
of fixed-size binary values cost a decode and a second copy per row (the partitions of a 3M run
are ~18 GB, read once or more), and a list column a repetition and definition level per number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.dedup.directio import DirectReader

#: Rows read at a time when they are scattered (24 MiB at 768-d: under glibc's mmap threshold).
READ_ROWS: int = 8192


def fixed_list(x: np.ndarray) -> pa.Array:
    """``(n, D)`` float32 rows as a fixed-size list array (no copy of the values)."""
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


def rows_path(partition: str | Path) -> Path:
    """The raw float32 file of a partition's embeddings, beside its ``.parquet``."""
    return Path(partition).with_suffix(".f32")


def read_rows_into(partition: str | Path, out: np.ndarray, where: np.ndarray) -> None:
    """Write row ``r`` of a partition's embeddings into ``out[where[r]]`` (rows with
    ``where[r] < 0`` are skipped): in one read when ``where`` is one ascending run,
    else :data:`READ_ROWS` at a time through a small buffer."""
    n, dim = len(where), out.shape[1]
    if not n:
        return
    with DirectReader(rows_path(partition)) as reader:
        first = int(where[0])
        if first >= 0 and int(where[-1]) - first == n - 1 and (np.diff(where) == 1).all():
            reader.read(out[first : first + n], 0)
            return
        buf = np.empty((min(READ_ROWS, n), dim), np.float32)
        for lo in range(0, n, READ_ROWS):
            w = where[lo : lo + READ_ROWS]
            take = np.flatnonzero(w >= 0)
            if not len(take):
                continue
            chunk = buf[: len(w)]
            reader.read(chunk, lo * dim * 4)
            out[w[take]] = chunk if len(take) == len(w) else chunk[take]


def read_partitions_into(files: list[Path] | list[str], where: np.ndarray, out: np.ndarray) -> None:
    """Write row ``k`` of the partitions ``files`` (their rows one file after the other) into
    ``out[where[k]]``, skipping rows with ``where[k] < 0`` (files with none are not opened)."""
    pos = 0
    for path in files:
        rows = pq.ParquetFile(path).metadata.num_rows
        if (where[pos : pos + rows] >= 0).any():
            read_rows_into(path, out, where[pos : pos + rows])
        pos += rows


def read_rows(partition: str | Path, dim: int) -> np.ndarray:
    """All of a partition's embeddings, ``(rows, dim)`` float32."""
    path = rows_path(partition)
    out = np.empty((path.stat().st_size // (4 * dim), dim), np.float32)
    with DirectReader(path) as reader:
        reader.read(out, 0)
    return out
