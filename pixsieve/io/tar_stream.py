"""``tarfile`` in stream mode, made to resynchronise past corrupt headers and report them.

GNU tar, when a header is invalid, skips to the next valid one (``--ignore-zeros`` does the same
for end-of-archive blocks). :func:`open_tar` opens a forward-only :class:`ResyncTarFile` that
does both and records every skipped 512-byte block, so the reader can tell a shard that simply
ended (zero blocks) from one whose middle was damaged (invalid blocks before a valid header)
or one with garbage after its end. Extended headers (pax, GNU long names) bigger than a limit
are treated as invalid instead of being read into memory.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import Any

BLOCK = tarfile.BLOCKSIZE
_ZERO_BLOCK = "end of file header"  # tarfile's message for an all-zero header block


@dataclass(frozen=True)
class Skipped:
    """One header block ``tarfile`` skipped: its offset and whether it was all zeros."""

    offset: int
    zeros: bool
    why: str


class _LimitedTarInfo(tarfile.TarInfo):
    """Refuse pax and GNU long-name headers above ``tarfile.max_header_bytes``.

    Also remembers the member name of a ustar header that fails its checksum (a damaged
    header usually still names its member), so the lost member's sample can be reported.
    """

    @classmethod
    def fromtarfile(cls, tf: Any) -> Any:
        """``tarfile.TarInfo.fromtarfile``, noting the name of a damaged ustar header."""
        buf = tf.fileobj.read(BLOCK)
        try:
            obj = cls.frombuf(buf, tf.encoding, tf.errors)
        except tarfile.InvalidHeaderError:
            if len(buf) == BLOCK and buf[257:262] == b"ustar":
                name = buf[:100].split(b"\x00", 1)[0].decode("utf-8", "replace")
                prefix = buf[345:500].split(b"\x00", 1)[0].decode("utf-8", "replace")
                if buf[257:263] == b"ustar\x00" and prefix:
                    name = f"{prefix}/{name}"
                if name.isprintable():
                    tf.__dict__.setdefault("damaged_names", []).append(name)
            raise
        obj.offset = tf.fileobj.tell() - BLOCK
        return obj._proc_member(tf)

    def _check_header(self, tf: Any) -> None:
        limit = getattr(tf, "max_header_bytes", None)
        if limit is not None and not 0 <= self.size <= limit:
            raise tarfile.InvalidHeaderError(
                f"extended header of {self.size} bytes (limit max_header_bytes={limit})"
            )

    def _proc_gnulong(self, tarfile: Any) -> Any:
        self._check_header(tarfile)
        return super()._proc_gnulong(tarfile)

    def _proc_pax(self, tarfile: Any) -> Any:
        self._check_header(tarfile)
        return super()._proc_pax(tarfile)


class ResyncTarFile(tarfile.TarFile):
    """A :class:`tarfile.TarFile` that remembers the header blocks it skipped."""

    max_header_bytes: int | None = None

    def _dbg(self, level: int, msg: str) -> None:
        """``tarfile`` reports each skipped block here (with ``ignore_zeros``); record it."""
        if level != 2 or not msg.startswith("0x") or ": " not in msg:
            return
        where, why = msg.split(": ", 1)
        skipped = self.__dict__.setdefault("skipped", [])
        skipped.append(Skipped(int(where, 16), why == _ZERO_BLOCK, why))

    def next(self) -> tarfile.TarInfo | None:
        """The next member, or ``None`` at the end (also when opening already met the end)."""
        if self._loaded and self.firstmember is None:
            return None  # a second look would seek backwards past a partial block
        return super().next()

    def take_skipped(self) -> tuple[list[Skipped], list[str]]:
        """The blocks skipped since the last call, and the names read from damaged headers."""
        out = self.__dict__.get("skipped", []), self.__dict__.get("damaged_names", [])
        self.__dict__["skipped"] = []
        self.__dict__["damaged_names"] = []
        return out

    def ended_inside_a_header(self) -> bool:
        """True when the stream ended with a partial header block (a cut inside a header)."""
        return bool(self.fileobj.tell() != self.offset)


def open_tar(stream: Any, max_header_bytes: int) -> ResyncTarFile:
    """Open ``stream`` as a forward-only tar that skips and records bad header blocks."""
    cls = type("_LimitedResyncTarFile", (ResyncTarFile,), {"max_header_bytes": max_header_bytes})
    return cls.open(  # type: ignore[no-any-return]
        fileobj=stream, mode="r|", ignore_zeros=True, tarinfo=_LimitedTarInfo
    )


def describe_gap(blocks: list[Skipped], at_end: bool) -> tuple[str | None, bool]:
    """What a run of skipped blocks before a header (or before the end, ``at_end``) means.

    Returns ``(problem, damaged)``: ``(None, False)`` for zero blocks only (an end-of-archive
    marker, or tars concatenated); ``("trailing_data: …", False)`` when, at the end, invalid
    blocks came only after zero blocks (garbage after the archive, nothing lost);
    ``("corrupt_header: …", True)`` otherwise (something in the middle was skipped).
    """
    bad = [b for b in blocks if not b.zeros]
    if not bad:
        return None, False
    first_zero = next((b.offset for b in blocks if b.zeros), None)
    if at_end and first_zero is not None and first_zero < bad[0].offset:
        return f"trailing_data: {len(bad) * BLOCK} bytes after the end of the archive", False
    return (
        f"corrupt_header: {len(bad) * BLOCK} bytes skipped at offset {bad[0].offset} "
        f"({bad[0].why})",
        True,
    )
