"""One large float32 work array per thread, reused by the tasks that thread runs.

A bucket's or a cross bucket's embeddings are hundreds of MB: above glibc's mmap threshold,
so a fresh array is fresh pages that the kernel zeroes on first touch, and each task paid that
again (up to half of the similarity phase's CPU as system time on a 100k ``--against`` run).
The array is dropped before a larger one is made, so a thread never holds two, and it goes
with its thread: the local executor's pools end with each phase. Where tasks run in a thread
that outlives the phase (the calling thread of a serial map) or in a process that outlives the
task (Ray's workers), :func:`pixsieve.calls.task_end` releases it.
"""

from __future__ import annotations

import threading

import numpy as np

from pixsieve.calls import at_task_end

_local = threading.local()


def rows_buffer(n: int, dim: int) -> np.ndarray:
    """An uninitialised ``(n, dim)`` float32 array, valid until this thread's next call."""
    have = getattr(_local, "rows", None)
    if have is None or have.shape[1] != dim or len(have) < n:
        _local.rows = have = None  # the old one goes before the new one is made
        _local.rows = have = np.empty((n, dim), np.float32)
    return have[:n]


def release() -> None:
    """Drop this thread's array (registered with :func:`pixsieve.calls.at_task_end`)."""
    _local.rows = None


at_task_end(release)
