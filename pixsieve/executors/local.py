"""Run everything in this process: threads for I/O-bound passes, one worker for model passes."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock
from typing import Any

from pixsieve.calls import shared_cores
from pixsieve.devices import set_bound_device
from pixsieve.executors.base import (
    Executor,
    Progress,
    TaskResult,
    TaskWorker,
    no_progress,
    run_task,
)


class LocalExecutor(Executor):
    """Executes tasks in the current process.

    Passes marked ``parallel`` (scan, export: reading, hashing and copying bytes, which release
    the GIL) use a thread pool of ``workers`` threads; model passes run their tasks one after
    the other with a single set-up worker, and parallelise inside (decode threads, torch),
    unless the worker names several ``replicas`` (devices): then one thread per device runs
    tasks with its own copy of the model on that device.
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def describe(self) -> dict[str, Any]:
        """Settings for ``run.json``."""
        return {"name": self.name, "workers": self.workers}

    def map(
        self,
        worker: TaskWorker,
        tasks: Sequence[Any],
        *,
        retries: int = 1,
        progress: Progress = no_progress,
        parallel: bool = True,
        resources: dict[str, float] | None = None,
    ) -> Iterator[TaskResult]:
        """Run the tasks here, in order of submission (``run_task`` sets the worker up lazily)."""
        lock = Lock()

        def locked_progress(n: int) -> None:
            with lock:
                progress(n)

        replicas = list(getattr(worker, "replicas", None) or [])
        if not parallel and len(replicas) > 1 and len(tasks) > 1:  # one thread per device
            yield from self._replicated(worker, tasks, replicas, retries, locked_progress)
            return
        if not parallel or self.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                yield run_task(worker, task, retries, progress)
            return
        pool = ThreadPoolExecutor(self.workers)
        try:
            yield from pool.map(lambda t: run_task(worker, t, retries, locked_progress), tasks)
        finally:  # on Ctrl-C (or a closed generator) start no new task; finish the running ones
            pool.shutdown(wait=True, cancel_futures=True)

    def map_calls(self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """Run the calls on ``workers`` threads (numpy, faiss and Arrow release the GIL),
        at most ``2 * workers`` in flight, results in call order."""
        if self.workers == 1:
            yield from super().map_calls(fn, calls)
            return
        pool = ThreadPoolExecutor(self.workers)
        pending: deque[Future[Any]] = deque()
        with shared_cores(self.workers, fn):
            try:
                for args in calls:
                    pending.append(pool.submit(fn, *args))
                    if len(pending) >= 2 * self.workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _replicated(
        self,
        worker: TaskWorker,
        tasks: Sequence[Any],
        devices: list[str],
        retries: int,
        progress: Progress,
    ) -> Iterator[TaskResult]:
        """Model tasks on one thread per device, each thread bound to its device (its copy of
        the stages runs there), results in task order."""
        free = list(devices)
        lock = Lock()

        def bind() -> None:
            with lock:
                set_bound_device(free.pop(0))

        pool = ThreadPoolExecutor(len(devices), initializer=bind)
        try:
            yield from pool.map(lambda t: run_task(worker, t, retries, progress), tasks)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
