"""The actors of a Ray pass: their body, the pool kept across passes, and the dispatch loop.

Only placement lives here. Each actor runs tasks through
:func:`~pixsieve.executors.base.run_task`; :class:`Dispatch` hands tasks to idle actors,
yields results in task order and reports actor deaths to the pass's
:class:`~pixsieve.executors.base.Attempts` (the one retry policy), which says whether to run
the task again or what its final result is. A pass takes the actors that are running, drops
replacements that never started (one for an actor lost with its node may never be scheduled)
and stops extra ones, so it never waits for resources its own idle actors hold; with no actor
able to work for ``start_timeout_s`` it raises instead of waiting forever. See ``docs/ray.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError

from pixsieve.executors.base import (
    Attempts,
    Progress,
    TaskResult,
    TaskWorker,
    no_progress,
    run_task,
)
from pixsieve.executors.placement import PoolPlan

log = logging.getLogger(__name__)


class TaskActor:
    """A Ray actor body: holds one pass's worker at a time and runs tasks with it."""

    def __init__(self) -> None:
        self.worker: TaskWorker | None = None
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def load(self, worker: TaskWorker) -> str:
        """Take the pass's worker (deserialised once per actor and pass).

        It is not set up here: :func:`run_task` calls ``setup()`` before the first task that
        is not done, so an actor whose tasks are all finished never loads a model.
        """
        self.worker = worker
        return self.where

    def run(self, task: Any, retries: int, crashes: int = 0, error: str = "") -> TaskResult:
        """Run one task under the shared per-task policy (``crashes``: earlier deaths)."""
        assert self.worker is not None, "load() a worker first"
        result = run_task(self.worker, task, retries, no_progress, crashes=crashes, error=error)
        result.extra["worker"] = self.where
        return result


class ActorPool:
    """Actors of one resource shape, kept across passes that ask for the same shape."""

    def __init__(self, plan: PoolPlan, runtime_env: dict[str, Any] | None) -> None:
        self.shape = (plan.num_cpus, plan.num_gpus)
        self.options: dict[str, Any] = {"num_cpus": plan.num_cpus, "num_gpus": plan.num_gpus}
        if runtime_env:
            self.options["runtime_env"] = runtime_env
        self.actors: list[Any] = []
        self.started: set[Any] = set()  # actors that loaded a worker (their process runs)

    def take(self, size: int) -> list[Any]:
        """The actors of a pass of ``size``: the running ones first, new ones if too few.

        Actors that never started (a replacement for one lost with its node may never be
        scheduled) are dropped, and running ones beyond ``size`` stopped: a pass never waits
        for resources that its own idle actors hold.
        """
        running = [a for a in self.actors if a in self.started]
        for actor in [a for a in self.actors if a not in self.started] + running[size:]:
            self._kill(actor)
        self.actors = running[:size]
        while len(self.actors) < size:
            self.actors.append(self._new())
        return list(self.actors)

    def _new(self) -> Any:
        return ray.remote(TaskActor).options(**self.options).remote()

    def _kill(self, actor: Any) -> None:
        ray.kill(actor, no_restart=True)
        self.started.discard(actor)

    def replace(self, actor: Any) -> Any:
        """Swap a dead actor for a fresh one."""
        self._kill(actor)
        new = self._new()
        self.actors[self.actors.index(actor)] = new
        return new

    def kill(self) -> None:
        """Stop every actor (frees their CPUs and GPUs for the next pool)."""
        for actor in self.actors:
            self._kill(actor)
        self.actors = []


def _short(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"worker process died ({type(error).__name__}){': ' + first if first else ''}"


class Dispatch:
    """Hand tasks to idle actors; collect results; report and replace actors that died."""

    def __init__(
        self,
        pool: ActorPool,
        actors: list[Any],
        worker_ref: Any,
        tasks: Sequence[Any],
        retries: int,
        progress: Progress,
        start_timeout_s: float,
    ) -> None:
        self.pool, self.worker_ref, self.tasks = pool, worker_ref, tasks
        self.retries, self.progress, self.start_timeout_s = retries, progress, start_timeout_s
        self.attempts = Attempts(tasks, retries)
        self.loading: dict[Any, Any] = {}
        self.idle: list[Any] = []
        self.running: dict[Any, tuple[int, Any]] = {}
        self.todo: deque[int] = deque(range(len(tasks)))
        self.results: dict[int, TaskResult] = {}
        self.load_failures = 0
        self.start_s = 0.0  # until the first actor was ready (new processes, worker loaded)
        for actor in actors:
            self.loading[actor.load.remote(worker_ref)] = actor

    def __iter__(self) -> Iterator[TaskResult]:
        begin = stalled = time.monotonic()
        following = 0
        while following < len(self.tasks):
            self._submit()
            ready, _ = ray.wait([*self.running, *self.loading], num_returns=1, timeout=1.0)
            for ref in ready:
                self._collect(ref)
            now = time.monotonic()
            if self.idle or self.running:  # some actor can work
                stalled = now
                self.start_s = self.start_s or now - begin
            elif now - stalled >= self.start_timeout_s:
                self._stalled()
            while following in self.results:
                yield self.results.pop(following)
                following += 1

    def _submit(self) -> None:
        while self.idle and self.todo:
            i = self.todo.popleft()
            actor = self.idle.pop()
            ref = actor.run.remote(self.tasks[i], self.retries, **self.attempts.kwargs(i))
            self.running[ref] = (i, actor)

    def _collect(self, ref: Any) -> None:
        if ref in self.loading:
            actor = self.loading.pop(ref)
            try:
                ray.get(ref)
            except RayActorError as e:
                self.load_failures += 1
                if self.load_failures > self.retries + len(self.pool.actors):
                    raise RuntimeError(f"Ray actors keep dying while loading: {e}") from e
                self._restart(actor)
                return
            self.pool.started.add(actor)
            self.idle.append(actor)
            return
        i, actor = self.running.pop(ref)
        try:
            result: TaskResult = ray.get(ref)
        except RayActorError as e:
            self._restart(actor)
            final = self.attempts.died(i, _short(e))
            if final is None:
                self.todo.appendleft(i)
            else:
                self._done(i, final)
            return
        self._done(i, result)
        self.idle.append(actor)

    def _done(self, i: int, result: TaskResult) -> None:
        self.results[i] = result
        self.progress(int(result.summary.get("samples", 0) or 0))

    def _restart(self, actor: Any) -> None:
        new = self.pool.replace(actor)
        self.loading[new.load.remote(self.worker_ref)] = new

    def _stalled(self) -> None:
        cpus, gpus = self.pool.shape
        raise RuntimeError(
            f"no Ray actor started within {self.start_timeout_s:.0f}s: each asks for "
            f"{cpus:g} CPU and {gpus:g} GPU, the cluster has {ray.available_resources()} "
            "available. Other actors or jobs may hold the resources, or nodes were lost; "
            "lower `workers`, or free the cluster."
        )
