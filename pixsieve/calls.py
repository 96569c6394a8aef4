"""How a pass hands its small tasks to whoever places them: the ``map_calls`` type and the
default that runs them here, in order.

An executor's :meth:`~pixsieve.executors.base.Executor.map_calls` fits :data:`MapCalls`
(threads locally, Ray tasks on Ray); the passes and ``pixsieve.dedup`` take one without
importing any executor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

MapCalls = Callable[[Callable[..., Any], Iterable[tuple[Any, ...]]], Iterator[Any]]
"""``map_calls(fn, calls)``: ``fn(*args)`` for every ``args`` in ``calls``, results in order."""


_TASK_END: list[Callable[[], None]] = []


def at_task_end(hook: Callable[[], None]) -> None:
    """Have ``hook`` run where module state kept for a thread's next task (a reused work array)
    must go: after every task in a process an executor keeps between tasks (Ray's workers), and
    after the last call of a map run in the calling thread (:func:`serial_calls`, the base
    executor's ``map_calls``). Pool threads take their state with them when a map ends."""
    if hook not in _TASK_END:
        _TASK_END.append(hook)


def task_end() -> None:
    """Run the :func:`at_task_end` hooks (an executor calls this after each task)."""
    for hook in list(_TASK_END):
        hook()


def serial_calls(fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
    """Run the calls here, one after the other, in order (then the :func:`task_end` hooks)."""
    try:
        for args in calls:
            yield fn(*args)
    finally:
        task_end()


def cores() -> int:
    """CPUs this process may run on (its affinity mask, which cgroups and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: Most task threads by default, before the spare one (:func:`default_workers`).
MAX_WORKERS: int = 4


def default_workers() -> int:
    """Tasks a dedup run takes at once unless told: one more than the cores (at most
    :data:`MAX_WORKERS` of them). Its tasks read and write their files synchronously (past the
    page cache), so a spare task computes while another waits on the device: measured on the
    1M benchmark on 2 cores, 3 tasks took 37.4-38.7 s against 41.1-41.6 s for 2."""
    return min(MAX_WORKERS, cores()) + 1


def uses_torch(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a task function that multiplies with torch: the maps that run it on threads share
    torch's intra-op threads between them (:func:`shared_cores`)."""
    fn.uses_torch = True  # type: ignore[attr-defined]
    return fn


def _imported(name: str) -> Any:
    """Module ``name`` if its import has finished (not while another thread still runs it)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return None if module is None or getattr(spec, "_initializing", False) else module


@contextmanager
def shared_cores(workers: int, fn: Callable[..., Any] | None = None) -> Iterator[None]:
    """While ``workers`` threads run tasks here, give numpy's BLAS ``cores() // workers``
    threads per call (at least one) instead of every core; when the task function ``fn`` is
    marked :func:`uses_torch`, torch's intra-op threads too (once torch's import has finished).

    OpenBLAS otherwise starts one thread per core for every call, so two task threads on two
    cores run four spinning threads (measured: 1.6x the wall time of the same products). The
    limit is process-wide for pthread-based BLAS (numpy's) and lifted on exit. torch's is a
    process-wide default each thread takes at its first parallel operation (the pool's threads
    are new): measured on the cross search's int8 products, one thread per task saved 1 s of
    its 10 (wall and CPU); set around every map, it cost the 1M read phase 3.8 s of system
    time (6.1 -> 9.9 s wall), so only maps of :func:`uses_torch` tasks ask for it. faiss's
    k-means runs in the calling thread, on every core.
    """
    if workers <= 1:
        yield
        return
    from threadpoolctl import threadpool_limits

    per = max(1, cores() // workers)
    torch = _imported("torch") if getattr(fn, "uses_torch", False) else None
    before = torch.get_num_threads() if torch is not None else 0
    try:
        if torch is not None:
            torch.set_num_threads(per)
        with threadpool_limits(per):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)
