"""What every per-file and per-bucket task of partitioned dedup shares: its settings
(:class:`FileTask`), one Parquet writer per bucket, and the completion protocol: a task writes
into ``<dir>.tmp`` and renames it when done, so a finished directory is the completion marker
and a rerun skips it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.dedup.directio import DirectWriter
from pixsieve.dedup.hashparts import bucket_groups
from pixsieve.dedup.packing import rows_path
from pixsieve.dedup.sources import Columns

COUNTS_FILE = "counts.json"
#: Most rows per written table: their gathered embeddings (3 KiB each at 768-d) stay under
#: glibc's 32 MiB mmap threshold, so each gather reuses heap memory instead of fresh pages.
WRITE_ROWS = 8192


@dataclass(frozen=True)
class FileTask:
    """What a per-file task needs besides its own arguments.

    Attributes:
        work: the work directory.
        columns: input column names.
        dim: embedding dimension.
        batch_rows: rows read at a time.
        policy: the resolved keep policy (sets each row's priority).
        read: the work directory holding the read phase's files (default: ``work``).
    """

    work: str
    columns: Columns
    dim: int
    batch_rows: int
    policy: str
    read: str = ""


def _begin(final: Path) -> Path | None:
    """A fresh ``<final>.tmp`` directory, or ``None`` when ``final`` is already done."""
    if final.exists():
        return None
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _finish(tmp: Path, final: Path, counts: dict[str, Any]) -> dict[str, Any]:
    (tmp / COUNTS_FILE).write_text(json.dumps(counts, default=int))
    tmp.rename(final)
    return counts


def _done(final: Path) -> dict[str, Any]:
    return json.loads((final / COUNTS_FILE).read_text())


def cluster_buckets(k: int, buckets: int) -> np.ndarray:
    """The bucket of each of ``k`` clusters: cluster ``c`` in ``c * buckets // k`` (contiguous
    ranges of clusters, as an index's parts are laid out)."""
    return np.arange(k, dtype=np.int64) * buckets // max(k, 1)


def bucket_parts(bucket: np.ndarray) -> Iterator[np.ndarray]:
    """Positions into ``bucket`` grouped by its value (stable order within a bucket), in
    pieces of at most :data:`WRITE_ROWS`."""
    for part in bucket_groups(bucket):
        for lo in range(0, len(part), WRITE_ROWS):
            yield part[lo : lo + WRITE_ROWS]


class _Writers:
    """One Parquet writer per bucket, opened on first use, and, for rows with embeddings, the
    raw float32 file beside it (:mod:`pixsieve.dedup.packing`)."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix = folder, prefix
        self.open: dict[int, pq.ParquetWriter] = {}
        self.rows: dict[int, DirectWriter] = {}

    def write(self, bucket: int, table: pa.Table, rows: np.ndarray | None = None) -> None:
        """Append ``table`` to the bucket's Parquet file and ``rows`` (its embeddings, one per
        table row) to its ``.f32`` file."""
        path = self.folder / f"{self.prefix}{bucket:04d}.parquet"
        if bucket not in self.open:
            self.open[bucket] = pq.ParquetWriter(path, table.schema, compression="none")
        self.open[bucket].write_table(table)
        if rows is not None:
            if bucket not in self.rows:
                self.rows[bucket] = DirectWriter(rows_path(path))  # past the page cache
            self.rows[bucket].write(np.ascontiguousarray(rows, dtype=np.float32).reshape(-1))

    def close(self) -> None:
        """Close every file (idempotent)."""
        for writer in self.open.values():
            writer.close()
        for handle in self.rows.values():
            handle.close()
