"""Limits on what one input sample may cost, checked before the memory or time is spent.

Every limit has a default a real dataset rarely reaches and is configurable (``[read]`` in a
config file, or :class:`ReadLimits` / :class:`pixsieve.stages.DecodeStage` arguments in
Python). A sample over a limit becomes an ``error`` row with reason ``too_large: …`` (or
``decode_timeout: …``); the rest of the shard goes on. ``docs/limits.md`` lists them all with
their reasons.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

MiB: int = 1 << 20

DEFAULT_MAX_SAMPLE_BYTES: int = 128 * MiB
DEFAULT_MAX_SIDECAR_BYTES: int = 16 * MiB
DEFAULT_MAX_SAMPLE_MEMBERS: int = 256
DEFAULT_MAX_HEADER_BYTES: int = 1 * MiB
DEFAULT_BATCH_BYTES: int = 64 * MiB
DEFAULT_READ_AHEAD_BYTES: int = 256 * MiB


class TooLarge(Exception):
    """A declared size is over a limit; ``reason`` is the manifest reason."""

    def __init__(self, detail: str) -> None:
        self.reason = f"too_large: {detail}"
        super().__init__(self.reason)


@dataclass(frozen=True)
class ReadLimits:
    """What the tar reader accepts per sample (every size is checked from the tar header).

    Attributes:
        max_sample_bytes: declared bytes of all members of one sample together (a GNU sparse
            member counts with its full declared size); above it the sample is ``too_large``
            and its members are skipped without being read.
        max_sidecar_bytes: declared bytes of one non-image member (caption, JSON...).
        max_sample_members: members in one sample.
        max_header_bytes: bytes of one extended (pax / GNU long name) header; a bigger one is
            treated as a corrupt header and skipped.
        batch_bytes: the score pass cuts a batch once its samples hold this many bytes, so a
            batch of big images holds fewer of them.
        read_ahead_bytes: sample bytes the score pass of one process holds between reading and
            scoring, all its shards together (:data:`READ_BUDGET`); a reader waits beyond it.
        keep_invalid_sidecars: a sample with a sidecar that does not parse (invalid JSON, a
            ``.txt``/``.caption`` that is not UTF-8) is an ``error`` (``invalid_json``,
            ``invalid_utf8``) and is not exported, since standard loaders raise on it; ``True``
            keeps it (when nothing else is wrong) with a ``warnings`` entry, bytes untouched.
    """

    max_sample_bytes: int = DEFAULT_MAX_SAMPLE_BYTES
    max_sidecar_bytes: int = DEFAULT_MAX_SIDECAR_BYTES
    max_sample_members: int = DEFAULT_MAX_SAMPLE_MEMBERS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    batch_bytes: int = DEFAULT_BATCH_BYTES
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES
    keep_invalid_sidecars: bool = False

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "keep_invalid_sidecars":
                if not isinstance(value, bool):
                    raise ValueError(f"ReadLimits.{name} must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ReadLimits.{name} must be a positive integer, got {value!r}")

    def describe(self) -> dict[str, Any]:
        """Settings for the run fingerprint and ``run.json``."""
        return asdict(self)


class MemoryBudget:
    """A process-wide count of bytes in use, shared by every thread that asks.

    :meth:`acquire` waits until ``n`` more bytes fit under the caller's ``capacity``, or until
    nothing is in use (so one request bigger than the capacity still runs, alone). Bytes may be
    released by another thread than the one that acquired them.
    """

    def __init__(self) -> None:
        self._used = 0
        self._cond = threading.Condition()

    def try_acquire(self, n: int, capacity: int) -> bool:
        """Take ``n`` bytes if they fit now; never waits."""
        with self._cond:
            if self._used and self._used + n > capacity:
                return False
            self._used += n
            return True

    def acquire(self, n: int, capacity: int) -> None:
        """Take ``n`` bytes, waiting for them to fit."""
        with self._cond:
            self._cond.wait_for(lambda: self._used == 0 or self._used + n <= capacity)
            self._used += n

    def release(self, n: int) -> None:
        """Give back ``n`` bytes."""
        if n:
            with self._cond:
                self._used -= n
                self._cond.notify_all()

    @property
    def used(self) -> int:
        """Bytes in use now."""
        return self._used


READ_BUDGET = MemoryBudget()  # sample bytes between reading and scoring (score pass)
