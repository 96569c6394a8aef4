"""A gzip reader that says what went wrong instead of losing the shard.

Unlike :class:`gzip.GzipFile` it tells apart the ways a ``.tar.gz`` goes bad, so the tar reader
can keep what it already has:

* the stream ends before its end-of-stream marker → reads end there (``truncated``), like a
  plain tar cut short;
* bytes after the last complete gzip member that are not another member (trailing garbage) →
  ignored and noted in :attr:`GzipStream.trailing`; the samples are intact (their CRC passed);
* a corrupt deflate block or a failed CRC / length check → :class:`CorruptStream`, since
  nothing decompressed from that member can be trusted.

Concatenated gzip members (``cat a.gz b.gz``) are read as one stream, as ``gzip`` does. Output
is produced at most ``size`` bytes per read, so a decompression bomb never inflates in memory.
I/O errors of the underlying file propagate unchanged (the task is retried).
"""

from __future__ import annotations

import io
import zlib
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


class CorruptStream(Exception):
    """The compressed stream is damaged (bad deflate data, CRC or length mismatch)."""


class GzipStream(io.RawIOBase):
    """Decompress the gzip members of ``fileobj`` as one readable, forward-only stream."""

    def __init__(self, fileobj: Any) -> None:
        self._src = fileobj
        self._z = zlib.decompressobj(31)
        self._pending = b""  # compressed bytes not yet given to ``_z``
        self._src_done = False
        self.truncated = False
        self.trailing: str | None = None
        self._finished = False
        self._produced = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def _fill(self) -> None:
        if not self._pending and not self._src_done:
            chunk = self._src.read(_CHUNK)
            if chunk:
                self._pending = chunk
            else:
                self._src_done = True

    def _next_member(self) -> None:
        """After a member ended: start the next one, or stop at the end / trailing bytes."""
        rest = self._z.unused_data + self._pending
        self._pending = b""
        while len(rest) < 2 and not self._src_done:
            chunk = self._src.read(_CHUNK)
            if not chunk:
                self._src_done = True
            rest += chunk
        if not rest:
            self._finished = True
            return
        if rest.startswith(GZIP_MAGIC):
            self._z = zlib.decompressobj(31)
            self._pending = rest
            return
        self._finished = True
        if rest.strip(b"\x00"):  # zero padding after the stream is common and harmless
            self.trailing = f"trailing_data: bytes after the gzip stream at output {self._produced}"

    def readinto(self, buffer: Any) -> int:
        """Decompress up to ``len(buffer)`` bytes into ``buffer``; 0 at the end."""
        want = len(buffer)
        while want and not self._finished:
            if self._z.eof:
                self._next_member()
                continue
            if not self._z.unconsumed_tail:
                self._fill()
            data = self._z.unconsumed_tail or self._pending
            if not self._z.unconsumed_tail:
                self._pending = b""
            if not data and self._src_done:
                self.truncated = True  # ended inside a member: what came out is still good
                self._finished = True
                break
            try:
                out = self._z.decompress(data, want)
            except zlib.error as e:
                raise CorruptStream(f"{e} (after {self._produced} bytes)") from None
            if out:
                n = len(out)
                buffer[:n] = out
                self._produced += n
                return n
        return 0
