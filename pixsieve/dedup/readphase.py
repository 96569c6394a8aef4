"""The read phase of partitioned dedup: each input file is decoded once, into the work directory.

Decoding a Parquet list column costs a repetition level per number (~280 MB/s), so every later
pass reads the rows from what :func:`read_file` wrote instead, by row range or row index:

* ``read/fFFFFF/x.npy``: the file's unit float32 embeddings, ``(rows, D)``, in file order
  (written past the page cache, :mod:`pixsieve.dedup.directio`; read past it by the passes
  that read long slices or a tenth of the rows, and by the similarity and index passes in
  place of the partitions' copies where :func:`from_read_phase` says so; through it by the
  cross search, which reads the same new rows once per bucket);
* ``aesthetic.npy`` / ``resolution.npy``: the keep policy's columns, when they are read;
* ``sample.npy``: the file's rows of the k-means sample (unit, in order);
* ``iBBBB.parquet``: the file's ids partitioned by hash (the uniqueness check,
  :func:`pixsieve.dedup.partition.repeated_id`).

Every batch is checked as it is read (:func:`pixsieve.dedup.sources.check_batch`), so a bad
row stops the run in this phase with the same one-line error as before. The ``.npy`` files are
written and read back in blocks, so a task's memory is its batch, whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pixsieve.dedup.directio import AlignedBuffer, DirectReader, DirectWriter
from pixsieve.dedup.hashparts import key_buckets
from pixsieve.dedup.kmeans import normalize
from pixsieve.dedup.sources import InputError, Source, read_blocks
from pixsieve.dedup.taskfiles import FileTask, _begin, _done, _finish, _Writers, bucket_parts

READ_DIR = "read"
#: Most input rows decoded at a time (24 MiB of float32 at 768-d): a batch and its normalised
#: copy stay under glibc's 32 MiB mmap threshold, so they reuse heap memory; 49,152-row
#: batches cost 2-5x the system time (fresh pages zeroed by the kernel) for the same rows.
READ_BATCH_ROWS: int = 8192
#: :func:`gather_rows` reads rows less than this many bytes apart in one piece through the page
#: cache (8 rows at 768-d), or :data:`DIRECT_GAP_BYTES` past it (a read past the cache waits
#: ~70 us for the device here: as long as reading 85 more rows at 768-d)...
GAP_BYTES: int = 24 << 10
DIRECT_GAP_BYTES: int = 256 << 10
#: ... of at most this many rows (6 MiB at 768-d: the copy out of it stays in cache; pieces
#: of 8,192 rows took 1.5x the time).
GATHER_ROWS: int = 2048
#: Memberships per row of the run from which a pass reads the read phase's rows instead of the
#: partitions' copies (:func:`from_read_phase`).
DENSE: float = 1.0


def read_dir(task: FileTask, index: int) -> Path:
    """The folder of input file ``index``'s rows (``task.read``, else ``task.work``)."""
    return Path(task.read or task.work) / READ_DIR / f"f{index:05d}"


class NpyWriter:
    """An ``.npy`` file of a known shape, written block after block in order; with ``direct``,
    past the page cache where the file system allows it
    (:class:`pixsieve.dedup.directio.DirectWriter`: for large files read back in long slices)."""

    def __init__(
        self, path: Path, rows: int, tail: tuple[int, ...], dtype: type, direct: bool = False
    ) -> None:
        self.handle = DirectWriter(path, direct)
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": (rows, *tail),
        }
        np.lib.format.write_array_header_2_0(self.handle, header)
        self.dtype, self.rows, self.written = dtype, rows, 0

    def write(self, block: np.ndarray) -> None:
        """Append ``block``'s rows."""
        self.handle.write(np.ascontiguousarray(block, dtype=self.dtype).reshape(-1))  # no copy
        self.written += len(block)

    def close(self) -> None:
        """Close the file."""
        self.handle.close()


def _write_ids(writers: _Writers, ids: pa.Array, n_buckets: int) -> None:
    bucket = key_buckets(ids, n_buckets)
    for part in bucket_parts(bucket):
        writers.write(int(bucket[part[0]]), pa.table({"id": ids.take(pa.array(part))}))


def read_file(
    task: FileTask, source: Source, index: int, sample: np.ndarray, id_buckets: int
) -> dict[str, Any]:
    """Decode and check input file ``index`` once; write its unit rows, keep-policy columns,
    ids by hash bucket and its rows of the k-means sample (``sample``: sorted positions in the
    file) into ``read/fFFFFF``. Returns ``{"rows": ..., "sample": ...}``.

    Raises:
        InputError: a bad row (see :func:`pixsieve.dedup.sources.check_batch`) or a null id.
    """
    final = read_dir(task, index)
    tmp = _begin(final)
    if tmp is None:
        return _done(final)
    cols = task.columns
    files = {
        "x": NpyWriter(tmp / "x.npy", source.rows, (task.dim,), np.float32, direct=True),
        "sample": NpyWriter(tmp / "sample.npy", len(sample), (task.dim,), np.float32),
    }
    if cols.score:
        files["aesthetic"] = NpyWriter(tmp / "aesthetic.npy", source.rows, (), np.float64)
    if cols.width and cols.height:
        files["resolution"] = NpyWriter(tmp / "resolution.npy", source.rows, (2,), np.float64)
    id_writers = _Writers(tmp, "i")
    start = 0
    try:
        for block in read_blocks(
            source.path, cols, task.dim, min(task.batch_rows, READ_BATCH_ROWS)
        ):
            if block.ids.null_count:
                raise InputError(f"id column {cols.id!r} has null values in {source.path}")
            _write_ids(id_writers, block.ids, id_buckets)
            x = normalize(block.embeddings)
            r = len(x)
            files["x"].write(x)
            if "aesthetic" in files:
                files["aesthetic"].write(block.aesthetic)
            if "resolution" in files:
                files["resolution"].write(block.resolution)
            a, b = np.searchsorted(sample, [start, start + r])
            files["sample"].write(x[sample[a:b] - start])
            start += r
    finally:
        id_writers.close()
        for f in files.values():
            f.close()
        pa.default_memory_pool().release_unused()
    if start != source.rows or files["sample"].written != len(sample):
        raise InputError(f"{source.path} changed while read: {start} rows, footer {source.rows}")
    return _finish(tmp, final, {"rows": source.rows, "sample": len(sample)})


def file_samples(idx: np.ndarray, sources: list[Source]) -> list[np.ndarray]:
    """The sorted global sample rows ``idx`` split per file, as positions in the file."""
    out = []
    for s in sources:
        lo, hi = np.searchsorted(idx, [s.offset, s.offset + s.rows])
        out.append(np.asarray(idx[lo:hi], dtype=np.int64) - s.offset)
    return out


def read_sample_rows(task: FileTask, count: int) -> np.ndarray:
    """The k-means sample: every file's ``sample.npy`` in file order (``count`` files)."""
    parts = [np.load(read_dir(task, i) / "sample.npy") for i in range(count)]
    return np.concatenate(parts) if parts else np.empty((0, task.dim), np.float32)


class NpyReader:
    """Row ranges of an ``.npy`` file (written by :class:`NpyWriter` or ``np.save``), read straight
    into a fresh array or a given buffer, through the page cache or, with ``direct``, past it
    where the file system allows it (:class:`pixsieve.dedup.directio.DirectReader`: for long
    slices of files the page cache rarely holds). No mapping, so the process holds only what it
    asked for."""

    def __init__(self, path: Path, direct: bool = False) -> None:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, self.dtype = read_header(handle)
            self.offset = handle.tell()
        self.file = DirectReader(path, direct)
        self.rows, self.tail = shape[0], tuple(shape[1:])
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.tail, dtype=np.int64))

    def read(self, start: int, stop: int, buffer: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start..stop-1``, into the front of ``buffer`` when given (else a new array)."""
        if buffer is None:
            out = np.empty((stop - start, *self.tail), dtype=self.dtype)
        else:
            out = buffer[: stop - start]
        self.file.read(out, self.offset + start * self.row_bytes)
        return out

    def read_view(self, start: int, stop: int, buffer: AlignedBuffer) -> np.ndarray:
        """Rows ``start..stop-1`` as a view into ``buffer`` (valid until its next use; with
        ``direct``, read straight into it)."""
        raw = self.file.read_view(
            self.offset + start * self.row_bytes, (stop - start) * self.row_bytes, buffer
        )
        return raw.view(self.dtype).reshape(stop - start, *self.tail)

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def row_blocks(
    task: FileTask, index: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """``(start, unit rows, aesthetic, resolution)`` of file ``index`` in blocks of at most
    ``task.batch_rows`` rows. The blocks share one buffer per column (a fresh one per block
    costs page faults: blocks are larger than what the allocator reuses), so a block is valid
    until the next one is read."""
    folder = read_dir(task, index)
    names = [n for n in ("x", "aesthetic", "resolution") if (folder / f"{n}.npy").exists()]
    readers = {n: NpyReader(folder / f"{n}.npy", direct=n == "x") for n in names}
    step = max(1, task.batch_rows)
    buffers = {n: np.empty((min(step, r.rows), *r.tail), dtype=r.dtype) for n, r in readers.items()}
    try:
        for start in range(0, readers["x"].rows, step):
            stop = min(start + step, readers["x"].rows)
            got = {n: r.read(start, stop, buffers[n]) for n, r in readers.items()}
            yield start, got["x"], got.get("aesthetic"), got.get("resolution")
    finally:
        for r in readers.values():
            r.close()


def _read_sorted(
    reader: NpyReader,
    local: np.ndarray,
    out: np.ndarray,
    step: int,
    dest: np.ndarray | None = None,
) -> None:
    """Rows ``local`` (sorted, repeats allowed) of one ``.npy`` file into ``out[: len(local)]``
    (or ``out[dest]``): rows less than :data:`GAP_BYTES` apart (:data:`DIRECT_GAP_BYTES` for a
    direct reader) in one read of at most ``step`` rows."""
    if not len(local):
        return
    gap = DIRECT_GAP_BYTES if reader.file.direct is not None else GAP_BYTES
    gap = max(1, gap // max(1, reader.row_bytes))
    cut = np.r_[0, np.flatnonzero(np.diff(local) >= gap) + 1, len(local)]
    buf = AlignedBuffer()
    for a, b in zip(cut[:-1].tolist(), cut[1:].tolist(), strict=True):
        while a < b:  # one piece: rows local[a]..local[a] + step - 1
            end = a + int(np.searchsorted(local[a:b], local[a] + step))
            first = int(local[a])
            got = reader.read_view(first, int(local[end - 1]) + 1, buf)
            where = slice(a, end) if dest is None else dest[a:end]
            out[where] = got[local[a:end] - first]
            a = end


def gather_rows(
    task: FileTask,
    starts: np.ndarray,
    rows: np.ndarray,
    out: np.ndarray,
    direct: bool = False,
    dest: np.ndarray | None = None,
) -> None:
    """The unit rows at the sorted, unique global positions ``rows`` into ``out[: len(rows)]``
    (file ``f`` holds global rows ``starts[f]`` up to ``starts[f + 1]``), or, with ``dest``,
    row ``rows[k]`` (sorted, repeats allowed) into ``out[dest[k]]``. Rows less than
    :data:`GAP_BYTES` apart (:data:`DIRECT_GAP_BYTES` with ``direct``: past the page cache)
    are read in one piece of at most :data:`GATHER_ROWS` (and ``task.batch_rows``) rows
    through a small buffer, so a scattered set costs about one read per run of nearby rows."""
    file_of = np.searchsorted(starts, rows, "right") - 1
    step = max(1, min(task.batch_rows, GATHER_ROWS))
    for f in np.unique(file_of).tolist():
        lo, hi = np.searchsorted(file_of, [f, f + 1])
        reader = NpyReader(read_dir(task, f) / "x.npy", direct=direct)
        try:
            local = rows[lo:hi] - starts[f]
            if dest is None:
                _read_sorted(reader, local, out[lo:hi], step)
            else:
                _read_sorted(reader, local, out, step, dest[lo:hi])
        finally:
            reader.close()


def from_read_phase(memberships: int, rows: int) -> bool:
    """Whether ``memberships`` rows of assignment partitions (one copy per membership) are
    better read from the read phase (each item once: :func:`gather_rows` with ``dest``): when
    there are at least :data:`DENSE` of them per row of the run, reading every item costs no
    more bytes than the copies (a run of few buckets and many border memberships, as one
    against a large earlier index: 4.5 per item on the 3M benchmark). Scattered rows of many
    small buckets would read most of ``x.npy`` once per bucket: they come from the partitions."""
    return memberships >= DENSE * rows


def take_rows(task: FileTask, index: int, rows: np.ndarray) -> Iterator[np.ndarray]:
    """The unit rows at the sorted positions ``rows`` of file ``index``, in blocks of at most
    ``task.batch_rows`` rows (read as :func:`gather_rows` reads, each block a fresh array)."""
    step = max(1, task.batch_rows)
    reader = NpyReader(read_dir(task, index) / "x.npy", direct=True)
    try:
        for lo in range(0, len(rows), step):
            block = rows[lo : lo + step]
            out = np.empty((len(block), *reader.tail), reader.dtype)
            _read_sorted(reader, block, out, min(step, GATHER_ROWS))
            yield out
    finally:
        reader.close()
