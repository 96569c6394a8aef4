"""What every executor shares: the task protocol and the per-task policy.

Executors only decide *where* tasks run. Everything that must be the same everywhere — skipping
finished tasks (resume), retries, timing, turning a final failure into a recorded shard error —
lives in :func:`run_task`, which every executor calls on its workers.
"""

from __future__ import annotations

import logging
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def no_progress(_: int) -> None:
    """A progress callback that ignores updates (used inside remote workers)."""


class TaskWorker(Protocol):
    """A unit of per-task work; built on the driver, shipped to workers, set up there once."""

    def setup(self) -> None:
        """Load heavy state (models) once per worker."""

    def done(self, task: Any) -> dict[str, Any] | None:
        """Return the saved result when ``task`` already completed (resume), else ``None``."""
        ...

    def run(self, task: Any, progress: Progress) -> dict[str, Any]:
        """Do the task, write its outputs and completion marker, return a result summary."""
        ...

    def fail(self, task: Any, error: str) -> dict[str, Any]:
        """Record a task that failed for good (its samples as errors); return a summary."""
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


def run_task(worker: TaskWorker, task: Any, retries: int, progress: Progress) -> TaskResult:
    """Run one task with resume, retries and failure recording (the one per-task policy)."""
    saved = worker.done(task)
    if saved is not None:
        progress(int(saved.get("samples", 0)))
        return TaskResult(task, saved, attempts=0, resumed=True)
    start = time.perf_counter()
    error = ""
    for attempt in range(1, retries + 2):
        try:
            summary = worker.run(task, progress)
            return TaskResult(task, summary, attempt, time.perf_counter() - start)
        except Exception as e:  # a failing shard must not sink the run
            error = f"{type(e).__name__}: {e}"
            log.warning("task %s failed (attempt %d/%d): %s", task, attempt, retries + 1, error)
            log.debug("%s", traceback.format_exc())
    summary = worker.fail(task, error)
    return TaskResult(task, summary, retries + 1, time.perf_counter() - start, error=error)


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
        for args in calls:
            yield fn(*args)

    def describe(self) -> dict[str, Any]:
        """Settings for ``run.json``."""
        return {"name": self.name}

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release resources held between passes."""
