"""Write kept samples as WebDataset tars (original bytes) plus one Parquet file per tar.

Shards fill up to ``samples_per_shard`` across any number of calls, get deterministic numbers
(``first``, ``first + 1``, ...: the caller names them), fixed member metadata (mtime, owner,
mode) so the same input gives the same bytes, and are written atomically: to a hidden temporary
name first (``.NAME.tmp``, which dataset readers skip), renamed when complete.
Works on any fsspec destination.

A failed write (disk full, quota, read-only or vanished directory) raises
:class:`OutputWriteError`, which ends the run with a one-line message instead of turning
samples into errors: no shard is to blame, and a re-run resumes once the problem is fixed.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.io.tar_reader import is_unsafe_name

FIXED_MTIME: int = 946684800  # 2000-01-01T00:00:00Z: reproducible tars
T = TypeVar("T")


class OutputError(OSError):
    """The output location cannot be used (unwritable, or holds a different run)."""


class OutputWriteError(OutputError):
    """Writing into the output failed (disk full, read-only...): the run ends here."""

    ends_run = True  # the task policy re-raises instead of blaming the shard


def temp_path(path: str) -> str:
    """The hidden temporary name ``path`` is written under before its rename."""
    head, _, name = path.rpartition("/")
    return f"{head}/.{name}.tmp" if head else f".{name}.tmp"


@contextmanager
def output_errors(path: str, fs: fsspec.AbstractFileSystem | None = None) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` into :class:`OutputWriteError`.

    The temporary file of ``path`` is removed (best effort) so it never lingers.
    """
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as e:
        if fs is not None:
            try:
                if fs.exists(temp_path(path)):
                    fs.rm(temp_path(path))
            except OSError:
                pass
        raise OutputWriteError(f"cannot write {path}: {e}") from e


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, write: Callable[[Any], T]) -> T:
    """Call ``write(file)`` on a hidden temporary file, then rename it to ``path``."""
    tmp = temp_path(path)
    with output_errors(path, fs):
        with fs.open(tmp, "wb") as f:
            out = write(f)
        fs.mv(tmp, path)
    return out


def write_parquet_atomic(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    """Write ``table`` to ``path`` via a hidden temporary file and a rename."""
    write_atomic(fs, path, lambda f: pq.write_table(table, f, compression="zstd"))


def shards_needed(keys: Iterable[str | None], samples_per_shard: int) -> int:
    """How many shards :class:`ShardWriter` writes for samples with ``keys``, in this order.

    The writer's rule, without writing: a shard is full at ``samples_per_shard`` samples, and
    a key already in the shard being filled starts a new one. Lets the export number every
    partition's shards before any is written.
    """
    shards, rows, seen = 0, 0, set()
    for key in keys:
        if key is not None and key in seen:
            rows, seen = 0, set()
        if rows == 0:
            shards += 1
        if key is not None:
            seen.add(key)
        rows += 1
        if rows >= samples_per_shard:
            rows, seen = 0, set()
    return shards


class ShardWriter:
    """Accumulate samples into fixed-size tar shards with a Parquet metadata file each.

    Shard ``n`` (``first``, ``first + 1``, ...) is written to ``tar_path(n)`` and its metadata,
    one row per sample in tar order, to ``metadata_path(n)``. ``schema`` fixes the metadata
    files' columns and types, so every file of a dataset agrees.
    """

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        tar_path: Callable[[int], str],
        metadata_path: Callable[[int], str],
        samples_per_shard: int = 1000,
        schema: pa.Schema | None = None,
        first: int = 0,
    ) -> None:
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be at least 1")
        self.fs = fs
        self.tar_path = tar_path
        self.metadata_path = metadata_path
        self.samples_per_shard = samples_per_shard
        self.schema = schema
        self.first = first
        self.shard_count = 0
        self.written: list[str] = []
        self._file: Any = None
        self._tar: tarfile.TarFile | None = None
        self._rows: list[dict[str, Any]] = []
        self._keys: set[str] = set()
        self._tmp = ""

    @property
    def current(self) -> int:
        """Number of the shard being filled."""
        return self.first + self.shard_count

    def _open(self) -> None:
        final = self.tar_path(self.current)
        self._tmp = temp_path(final)
        with output_errors(final):
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            self._file = self.fs.open(self._tmp, "wb")
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def write(
        self, members: list[tuple[str, bytes]], metadata: dict[str, Any], key: str | None = None
    ) -> int:
        """Append one sample (member names and original bytes); return its shard's number.

        A sample whose ``key`` is already in the current shard (two input shards can reuse a
        key) starts a new shard, so no output tar ever holds the same key twice.
        """
        for name, _ in members:
            if is_unsafe_name(name):
                raise ValueError(f"refusing to write unsafe member name {name!r}")
        if key is not None and key in self._keys:
            self._finish()
        if self._tar is None:
            self._open()
        assert self._tar is not None
        if key is not None:
            self._keys.add(key)
        number = self.current
        with output_errors(self.tar_path(number)):
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = FIXED_MTIME
                info.mode = 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                self._tar.addfile(info, io.BytesIO(data))
        self._rows.append(metadata)
        if len(self._rows) >= self.samples_per_shard:
            self._finish()
        return number

    def _finish(self) -> None:
        if self._tar is None:
            return
        final = self.tar_path(self.current)
        with output_errors(final):
            self._tar.close()
            self._file.close()
            self.fs.mv(self._tmp, final)
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        meta = self.metadata_path(self.current)
        with output_errors(meta):
            self.fs.makedirs(meta.rsplit("/", 1)[0], exist_ok=True)
        write_parquet_atomic(self.fs, meta, table)
        self.written.append(final)
        self._tar = None
        self._file = None
        self._rows = []
        self._keys = set()
        self.shard_count += 1

    def close(self) -> list[str]:
        """Finish the last (partial) shard; return the paths of every shard written."""
        self._finish()
        return self.written

    def abort(self) -> None:
        """Drop the shard in progress (its temporary file) without publishing it."""
        if self._tar is not None:
            try:
                self._tar.close()
                self._file.close()
            except OSError:
                pass  # the disk may be full: the file is dropped below anyway
            finally:
                try:
                    if self.fs.exists(self._tmp):
                        self.fs.rm(self._tmp)
                except OSError:
                    pass
        self._tar = None
        self._rows = []
