"""Embeddings in partition files: each Parquet partition ``bBBBB.parquet`` (the rows'
metadata) has a raw float32 file ``bBBBB.f32`` beside it holding the rows' embeddings in the
same order, written by :class:`pixsieve.dedup.taskfiles._Writers`.

Reading a raw file is positioned reads straight into the caller's array; a Parquet column of
fixed-size binary values cost a decode and a second copy per row (the partitions of a 3M run
are ~18 GB, read once or more), and a list column a repetition and definition level per number.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Rows read at a time when they are scattered (24 MiB at 768-d: under glibc's mmap threshold).
READ_ROWS: int = 8192
#: Alignment of reads that bypass the page cache (``O_DIRECT``): of offsets, lengths and buffers.
DIRECT_ALIGN: int = 4096


def fixed_list(x: np.ndarray) -> pa.Array:
    """``(n, D)`` float32 rows as a fixed-size list array (no copy of the values)."""
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


def rows_path(partition: str | Path) -> Path:
    """The raw float32 file of a partition's embeddings, beside its ``.parquet``."""
    return Path(partition).with_suffix(".f32")


def read_exactly(handle: BinaryIO, out: np.ndarray, at: int | None = None) -> None:
    """Fill ``out`` (contiguous) from ``handle``'s position, or from byte ``at`` with positioned
    reads (one system call, the position left alone), or raise ``OSError`` at the file's end."""
    view, got = memoryview(out.reshape(-1)).cast("B"), 0
    while got < len(view):
        if at is None:
            n = handle.readinto(view[got:])
        else:
            n = os.preadv(handle.fileno(), [view[got:]], at + got)
        if not n:
            raise OSError(f"{handle.name}: ends before {len(view)} more bytes")
        got += n


def open_direct(path: str | Path) -> int | None:
    """A descriptor of ``path`` for reads that bypass the page cache (``O_DIRECT``), or ``None``
    where the platform or file system has none (tmpfs, macOS)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECT)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


class AlignedBuffer:
    """A reused byte buffer whose start is aligned for ``O_DIRECT`` reads; it grows as needed."""

    def __init__(self) -> None:
        self.raw = np.empty(0, np.uint8)
        self.start = 0

    def get(self, nbytes: int) -> np.ndarray:
        """At least ``nbytes`` aligned bytes (valid until the next call)."""
        if nbytes > len(self.raw) - self.start:
            self.raw = np.empty(max(nbytes, 2 * len(self.raw)) + DIRECT_ALIGN, np.uint8)
            self.start = -self.raw.ctypes.data % DIRECT_ALIGN
        return self.raw[self.start : self.start + nbytes]


def read_direct(direct: int, at: int, nbytes: int, buffer: AlignedBuffer) -> np.ndarray:
    """Bytes ``at..at+nbytes-1`` of an :func:`open_direct` descriptor as a view into ``buffer``:
    the aligned blocks holding them are read straight from the device into the buffer, past
    the page cache. On a file not in the page cache, filling it and copying out of it cost
    ~0.9 s of system time per GB on the VMs measured, a direct read ~0.04 (a file in the page
    cache copies at ~0.14 s/GB, but is read from the device again). Raises ``OSError`` at the
    file's end."""
    first = at - at % DIRECT_ALIGN
    raw = buffer.get(-(-(at + nbytes - first) // DIRECT_ALIGN) * DIRECT_ALIGN)
    view, got = memoryview(raw), 0
    while got < at + nbytes - first:
        n = os.preadv(direct, [view[got:]], first + got)
        if not n:
            raise OSError(f"descriptor {direct} ends before byte {at + nbytes}")
        got += n
    return raw[at - first : at - first + nbytes]


def read_rows_into(partition: str | Path, out: np.ndarray, where: np.ndarray) -> None:
    """Write row ``r`` of a partition's embeddings into ``out[where[r]]`` (rows with
    ``where[r] < 0`` are skipped): straight into ``out`` when ``where`` is one ascending run,
    else :data:`READ_ROWS` at a time through a small buffer."""
    n, dim = len(where), out.shape[1]
    if not n:
        return
    with open(rows_path(partition), "rb", buffering=0) as handle:
        first = int(where[0])
        if first >= 0 and int(where[-1]) - first == n - 1 and (np.diff(where) == 1).all():
            read_exactly(handle, out[first : first + n])
            return
        buf = np.empty((min(READ_ROWS, n), dim), np.float32)
        for lo in range(0, n, READ_ROWS):
            w = where[lo : lo + READ_ROWS]
            take = np.flatnonzero(w >= 0)
            if not len(take):
                handle.seek(len(w) * dim * 4, 1)
                continue
            chunk = buf[: len(w)]
            read_exactly(handle, chunk)
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
    return np.fromfile(rows_path(partition), dtype=np.float32).reshape(-1, dim)
