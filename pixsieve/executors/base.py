"""What every executor shares: the task protocol, "which tasks are done" and the retry policy.

Executors only decide *where* tasks run. Everything that must be the same everywhere lives
here: :func:`run_task` (resume, lazy set-up, retries, timing, turning a final failure into a
recorded shard error), which every executor calls on its workers; :func:`saved_results`, which
answers a fully finished pass without starting a worker; and :class:`Attempts`, the one budget
of attempts per task that counts both exceptions (inside :func:`run_task`) and worker process
deaths (which an executor that runs tasks in other processes reports with
:meth:`Attempts.died`).
"""

from __future__ import annotations

import logging
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from pixsieve.calls import serial_calls
from pixsieve.progress import Progress, no_progress

log = logging.getLogger(__name__)

FAIL_CRASHES = 1
"""Process deaths tolerated while a task's ``fail()`` runs before the failure is recorded
without it (see :meth:`Attempts.died`)."""

DONE_THREADS = 16  # concurrent ``done()`` checks (object storage round trips)


class TaskWorker(Protocol):
    """A unit of per-task work; built on the driver, shipped to workers, set up there once."""

    def setup(self) -> None:
        """Load heavy state (models) once per worker; idempotent and thread-safe."""

    def done(self, task: Any) -> dict[str, Any] | None:
        """Return the saved result when ``task`` already completed (resume), else ``None``."""
        ...

    def run(self, task: Any, progress: Progress) -> dict[str, Any]:
        """Do the task, write its outputs and completion marker, return a result summary."""
        ...

    def fail(self, task: Any, error: str) -> dict[str, Any]:
        """Record a task that failed for good (its samples as errors, no completion marker)."""
        ...


@dataclass
class TaskResult:
    """What came of one task: its summary, attempts, seconds and whether it was resumed."""

    task: Any
    summary: dict[str, Any]
    attempts: int = 1
    seconds: float = 0.0
    resumed: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_task(
    worker: TaskWorker,
    task: Any,
    retries: int,
    progress: Progress,
    *,
    crashes: int = 0,
    error: str = "",
) -> TaskResult:
    """Run one task with resume, lazy set-up, retries and failure recording.

    This is the one per-task policy every executor calls. A finished task (``done``) is not
    run again, and its worker is not even set up: resuming a run whose model pass is complete
    loads no model. ``setup()`` must be idempotent (it is called before every task that runs);
    an exception from it is not a shard's fault and propagates, ending the run with its message.
    A task that keeps failing is handed to ``fail()``, which records its samples as errors but
    writes no completion marker, so the next run of the same command tries it again.

    ``crashes`` attempts (with the last ``error``) already ended in a dead worker process:
    they count against the same ``retries + 1`` attempts (see :class:`Attempts`), and when
    none is left the task goes straight to ``fail()``.
    """
    saved = worker.done(task)
    if saved is not None:
        progress(int(saved.get("samples", 0)))
        return TaskResult(task, saved, attempts=0, resumed=True)
    if crashes <= retries:
        worker.setup()  # a failure here (no model, no GPU) is the environment's: it ends the run
    start = time.perf_counter()
    for attempt in range(crashes + 1, retries + 2):
        try:
            summary = worker.run(task, progress)
            return TaskResult(task, summary, attempt, time.perf_counter() - start)
        except Exception as e:  # a failing shard must not sink the run
            if getattr(e, "ends_run", False):  # the output cannot be written: no shard's fault
                raise
            error = f"{type(e).__name__}: {e}"
            log.warning("task %s failed (attempt %d/%d): %s", task, attempt, retries + 1, error)
            log.debug("%s", traceback.format_exc())
    try:
        summary = worker.fail(task, error)
    except Exception as e:  # even recording the failure failed: keep the run going
        if getattr(e, "ends_run", False):
            raise
        log.error("task %s: recording its failure failed too: %s", task, e)
        summary = {"samples": 0, "error": f"{error}; recording it failed: {type(e).__name__}: {e}"}
    attempts = max(retries + 1, crashes)
    return TaskResult(task, summary, attempts, time.perf_counter() - start, error=error)


def saved_results(worker: TaskWorker, tasks: Sequence[Any]) -> list[dict[str, Any]] | None:
    """Every task's saved summary when ``worker.done()`` says all are done, else ``None``.

    Lets an executor answer a finished pass (a resume) without starting any worker. Checked in
    growing chunks so that a fresh pass costs one look-up. Any error here (this process cannot
    read the output, say) means "not known": :func:`run_task` checks each task again.
    """
    saved: list[dict[str, Any]] = []
    chunk = 1
    try:
        with ThreadPoolExecutor(DONE_THREADS) as pool:
            while len(saved) < len(tasks):
                found = list(pool.map(worker.done, tasks[len(saved) : len(saved) + chunk]))
                if any(s is None for s in found):
                    return None
                saved.extend(s for s in found if s is not None)
                chunk = min(chunk * 8, 1024)
    except Exception as e:  # an optimisation only: run_task decides
        log.debug("could not check finished tasks here: %s", e)
        return None
    return saved


def resumed_results(
    worker: TaskWorker, tasks: Sequence[Any], progress: Progress
) -> list[TaskResult] | None:
    """The results of a pass whose tasks are all done (progress reported), else ``None``."""
    saved = saved_results(worker, tasks)
    if saved is None:
        return None
    results = []
    for task, summary in zip(tasks, saved, strict=True):
        progress(int(summary.get("samples", 0) or 0))
        results.append(TaskResult(task, summary, attempts=0, resumed=True))
    return results


class Attempts:
    """The one retry budget of a pass's tasks, for executors whose worker processes can die.

    Each task has ``retries + 1`` attempts. An exception inside :func:`run_task` uses one (it
    retries there); so does a worker process that dies while running the task, which the
    executor reports with :meth:`died` and then runs the task again with :meth:`kwargs`.
    When no attempt is left, :func:`run_task` records the failure through ``fail()``; if that
    kills the process too (more than ``fail_crashes`` times), the failure is recorded here,
    without ``fail()`` (its samples are not in the manifest, and there is no marker).
    """

    def __init__(
        self, tasks: Sequence[Any], retries: int, fail_crashes: int = FAIL_CRASHES
    ) -> None:
        self.tasks, self.retries, self.fail_crashes = tasks, retries, fail_crashes
        self.crashes = [0] * len(tasks)  # process deaths while running the task
        self.fail_deaths = [0] * len(tasks)  # process deaths while recording its failure
        self.errors: dict[int, str] = {}

    def kwargs(self, i: int) -> dict[str, Any]:
        """Keyword arguments of :func:`run_task` for the next try of task ``i``."""
        return {"crashes": self.crashes[i], "error": self.errors.get(i, "")}

    def died(self, i: int, error: str) -> TaskResult | None:
        """The process running task ``i`` died: ``None`` to try again, else its final result."""
        if self.crashes[i] <= self.retries:  # it died running the task
            self.crashes[i] += 1
            self.errors[i] = error
            log.warning("task %s: %s (%d/%d)", self.tasks[i], error,
                        self.crashes[i], self.retries + 1)  # fmt: skip
            return None
        self.fail_deaths[i] += 1  # it died in fail()
        if self.fail_deaths[i] <= self.fail_crashes:
            log.warning("task %s: recording its failure: %s; trying again", self.tasks[i], error)
            return None
        log.error("task %s: recording its failure keeps killing the worker: %s",
                  self.tasks[i], error)  # fmt: skip
        summary = {"samples": 0, "error": f"{self.errors[i]}; recording the failure: {error}"}
        return TaskResult(self.tasks[i], summary, self.crashes[i], error=self.errors[i])


class Executor(ABC):
    """Places tasks on workers; results come back in task order."""

    name: str = "executor"

    @abstractmethod
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
        """Run ``worker`` on every task; ``parallel=False`` keeps one worker (model passes)."""

    def map_calls(self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """Apply a pure function to argument tuples; results in order.

        For fine-grained global work such as semantic dedup's per-cluster similarity search.
        Runs here, one call after the other, unless an executor spreads the calls out.
        """
        yield from serial_calls(fn, calls)

    def describe(self) -> dict[str, Any]:
        """Settings for ``run.json``."""
        return {"name": self.name}

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release resources held between passes."""
