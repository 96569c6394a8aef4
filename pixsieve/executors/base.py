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


def run_task(worker: TaskWorker, task: Any, retries: int, progress: Progress) -> TaskResult:
    """Run one task with resume, lazy set-up, retries and failure recording.

    This is the one per-task policy every executor calls. A finished task (``done``) is not
    run again, and its worker is not even set up: resuming a run whose model pass is complete
    loads no model. ``setup()`` must be idempotent (it is called before every task that runs);
    an exception from it is not a shard's fault and propagates, ending the run with its message.
    A task that keeps failing is handed to ``fail()``, which records its samples as errors but
    writes no completion marker, so the next run of the same command tries it again.
    """
    saved = worker.done(task)
    if saved is not None:
        progress(int(saved.get("samples", 0)))
        return TaskResult(task, saved, attempts=0, resumed=True)
    worker.setup()  # a failure here (no model, no GPU) is the environment's: it ends the run
    start = time.perf_counter()
    error = ""
    for attempt in range(1, retries + 2):
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
