"""Files read and written past the page cache (``O_DIRECT``), for the large work files of
partitioned dedup that are written once and read in long slices: the read phase's rows,
partition embeddings, the index's stores, and an earlier index's int8 windows.

On the VMs this was measured on, moving a GB through the page cache cost ~2.3 s of system
time when written and ~0.9 s when read from the device (the kernel's fresh pages are what is
expensive there), against ~0.1-0.2 s for the same bytes moved past it; a file in the page
cache reads at ~0.14 s/GB but is then read from the device again. Where the file system has
no ``O_DIRECT`` (tmpfs, macOS), every call here falls back to ordinary reads and writes.

``O_DIRECT`` wants offsets, lengths and buffer addresses aligned (:data:`DIRECT_ALIGN`): reads
go through an :class:`AlignedBuffer` and take whole blocks; :class:`DirectWriter` stages bytes
in one and writes whole chunks, the unaligned tail at close through the page cache.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

#: Alignment of reads and writes that bypass the page cache: of offsets, lengths and buffers.
DIRECT_ALIGN: int = 4096
#: Bytes a :class:`DirectWriter` stages before writing (and :func:`read_into` reads at a time).
DIRECT_CHUNK: int = 1 << 20


def open_direct(path: str | Path, flags: int = os.O_RDONLY) -> int | None:
    """A descriptor of ``path`` that bypasses the page cache, or ``None`` where the platform or
    file system has none."""
    try:
        return os.open(path, flags | os.O_DIRECT)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


class AlignedBuffer:
    """A reused byte buffer whose start is aligned for ``O_DIRECT``; it grows as needed."""

    def __init__(self) -> None:
        self.raw = np.empty(0, np.uint8)
        self.start = 0

    def get(self, nbytes: int) -> np.ndarray:
        """At least ``nbytes`` aligned bytes (valid until the next call that grows it)."""
        if nbytes > len(self.raw) - self.start:
            self.raw = np.empty(max(nbytes, 2 * len(self.raw)) + DIRECT_ALIGN, np.uint8)
            self.start = -self.raw.ctypes.data % DIRECT_ALIGN
        return self.raw[self.start : self.start + nbytes]


def read_direct(direct: int, at: int, nbytes: int, buffer: AlignedBuffer, name: str) -> np.ndarray:
    """Bytes ``at..at+nbytes-1`` of an :func:`open_direct` descriptor as a view into ``buffer``:
    the aligned blocks holding them are read straight from the device into the buffer. Raises
    ``OSError`` naming the file (``name``) at its end."""
    first = at - at % DIRECT_ALIGN
    raw = buffer.get(-(-(at + nbytes - first) // DIRECT_ALIGN) * DIRECT_ALIGN)
    view, got = memoryview(raw), 0
    while got < at + nbytes - first:
        n = os.preadv(direct, [view[got:]], first + got)
        if not n:
            raise OSError(f"{name}: ends before byte {at + nbytes}")
        got += n
    return raw[at - first : at - first + nbytes]


def read_into(direct: int, out: np.ndarray, at: int, buffer: AlignedBuffer, name: str) -> None:
    """Fill ``out`` (contiguous, any alignment) from byte ``at`` of an :func:`open_direct`
    descriptor, :data:`DIRECT_CHUNK` at a time through ``buffer`` (one copy in memory)."""
    flat = out.reshape(-1).view(np.uint8)
    for lo in range(0, len(flat), DIRECT_CHUNK):
        piece = flat[lo : lo + DIRECT_CHUNK]
        piece[:] = read_direct(direct, at + lo, len(piece), buffer, name)


class DirectReader:
    """A file's bytes read into arrays at chosen offsets: past the page cache through an
    aligned buffer (:func:`read_into`), or with plain positioned reads where that is not
    possible (no ``O_DIRECT`` at open, or a file system that opens with it and then refuses
    the reads: ``EINVAL``, after which the reader reads plainly)."""

    def __init__(self, path: str | Path, direct: bool = True) -> None:
        self.name = str(path)
        self.direct = open_direct(path) if direct else None
        self.fd = os.open(path, os.O_RDONLY) if self.direct is None else self.direct
        self.buffer = AlignedBuffer()

    def _refused(self, exc: OSError) -> bool:
        """Whether ``exc`` is the file system refusing direct reads (then read plainly)."""
        if exc.errno != errno.EINVAL or self.direct is None:
            return False
        os.close(self.direct)
        self.direct, self.fd = None, os.open(self.name, os.O_RDONLY)
        return True

    def read(self, out: np.ndarray, at: int) -> None:
        """Fill ``out`` (contiguous) from byte ``at``; ``OSError`` at the file's end."""
        if self.direct is not None:
            try:
                read_into(self.direct, out, at, self.buffer, self.name)
                return
            except OSError as exc:
                if not self._refused(exc):
                    raise
        view, got = memoryview(out.reshape(-1)).cast("B"), 0
        while got < len(view):
            n = os.preadv(self.fd, [view[got:]], at + got)
            if not n:
                raise OSError(f"{self.name}: ends before byte {at + len(view)}")
            got += n

    def read_view(self, at: int, nbytes: int, buffer: AlignedBuffer) -> np.ndarray:
        """Bytes ``at..at+nbytes-1`` as a view into ``buffer`` (read straight into it when
        direct, :func:`read_direct`)."""
        if self.direct is not None:
            try:
                return read_direct(self.direct, at, nbytes, buffer, self.name)
            except OSError as exc:
                if not self._refused(exc):
                    raise
        raw = buffer.get(nbytes)
        self.read(raw, at)
        return raw

    def close(self) -> None:
        """Close the file."""
        os.close(self.fd)

    def __enter__(self) -> DirectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: memoryview, at: int, name: str) -> None:
    """Write all of ``data`` at byte ``at``; an error names the file (a full disk otherwise
    reads as a bare ``[Errno 28]``)."""
    try:
        while len(data):
            n = os.pwritev(fd, [data], at)
            data, at = data[n:], at + n
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, name) from exc


class DirectWriter:
    """A file written from its start, past the page cache: :meth:`write` stages bytes in an
    aligned chunk and writes it whole when full; :meth:`close` writes what is left (its
    unaligned tail through the page cache). With ``direct=False``, no ``O_DIRECT``, or a file
    system that refuses direct writes (``EINVAL``: from then on), plain writes."""

    def __init__(self, path: str | Path, direct: bool = True) -> None:
        self.name = str(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.direct = open_direct(path, os.O_WRONLY) if direct else None
        self.stage = AlignedBuffer().get(DIRECT_CHUNK) if self.direct is not None else None
        self.staged = self.offset = 0

    def write(self, data: bytes | np.ndarray) -> None:
        """Append ``data`` (bytes, or a contiguous array's memory)."""
        view = memoryview(data).cast("B")
        if self.stage is None:
            _write_all(self.fd, view, self.offset, self.name)
            self.offset += len(view)
            return
        while len(view):
            take = min(len(view), DIRECT_CHUNK - self.staged)
            self.stage[self.staged : self.staged + take] = view[:take]
            self.staged, view = self.staged + take, view[take:]
            if self.staged == DIRECT_CHUNK:
                self._flush(DIRECT_CHUNK)
                if self.stage is None:  # direct writes refused: the rest plainly
                    _write_all(self.fd, view, self.offset, self.name)
                    self.offset += len(view)
                    return

    def _flush(self, nbytes: int) -> None:
        assert self.stage is not None and self.direct is not None
        try:
            _write_all(self.direct, memoryview(self.stage)[:nbytes], self.offset, self.name)
        except OSError as exc:  # a file system that opens with O_DIRECT and refuses the writes
            if exc.errno != errno.EINVAL:
                raise
            os.close(self.direct)  # plain writes from here on, starting with what is staged
            self.direct = None
            _write_all(self.fd, memoryview(self.stage)[: self.staged], self.offset, self.name)
            self.offset, self.staged, self.stage = self.offset + self.staged, 0, None
            return
        self.offset += nbytes
        self.stage[: self.staged - nbytes] = self.stage[nbytes : self.staged].copy()
        self.staged -= nbytes

    def close(self) -> None:
        """Write what is staged and close (idempotent; closes the file even when that write
        fails)."""
        if self.fd < 0:
            return
        try:
            if self.stage is not None:
                self._flush(self.staged - self.staged % DIRECT_ALIGN)
            if self.stage is not None:
                tail = memoryview(self.stage)[: self.staged]
                _write_all(self.fd, tail, self.offset, self.name)
                self.offset += self.staged
                self.staged = 0
        finally:
            os.close(self.fd)
            if self.direct is not None:
                os.close(self.direct)
            self.fd = -1
