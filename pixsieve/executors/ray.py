"""Run passes on a Ray cluster: a pool of long-lived actors per resource shape.

Each actor holds the pass's worker object and runs tasks through
:func:`~pixsieve.executors.base.run_task`, so resume, lazy set-up (models load once per actor,
on its first task that is not done), retries and failure recording are the same as with the
local executor. The driver hands tasks to idle actors, yields results in task order and
updates the progress callback as results arrive. A pass whose tasks are all done already
(a resume) is answered on the driver from the saved results, without starting any actor.

An actor process that dies is replaced and its task retried like a failed attempt; a task that
keeps killing its process is handed to the worker's ``fail()``, and if that kills the process
too (more than :data:`FAIL_CRASHES` times) the driver records the failure itself.

Pools never ask for more than the cluster can hold (see :func:`plan_pool`), a pool of another
shape is killed before the next one starts, and a pool that cannot start in
``start_timeout_s`` raises instead of waiting forever: on a small machine Ray otherwise waits
silently for CPUs that its own idle actors hold. See ``docs/ray.md``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from pixsieve.extras import RAY_HINT, MissingExtraError

try:
    import ray
    from ray.exceptions import RayActorError
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingExtraError(RAY_HINT) from e

from pixsieve.executors.base import (
    Executor,
    Progress,
    TaskResult,
    TaskWorker,
    no_progress,
    run_task,
)

log = logging.getLogger(__name__)

FAIL_CRASHES = 1
"""Process deaths tolerated while a task's ``fail()`` runs before the driver records it."""

DONE_THREADS = 16  # concurrent ``done()`` checks on the driver (object storage round trips)


@dataclass(frozen=True)
class PoolPlan:
    """How many actors a pass gets and what each one asks Ray for."""

    size: int
    num_cpus: float
    num_gpus: float


def plan_pool(
    n_tasks: int,
    nodes: list[dict[str, float]],
    *,
    parallel: bool = True,
    resources: dict[str, float] | None = None,
    workers: int | None = None,
    model_cpus: float = 4.0,
) -> PoolPlan:
    """Size a pool so that every actor fits on some node and all of them fit at once.

    Args:
        n_tasks: tasks in the pass (never more actors than tasks).
        nodes: resources of each alive node (``{"CPU": 8, "GPU": 1, ...}``).
        parallel: ``False`` for model passes; without GPUs each model actor asks for
            ``model_cpus`` so a node holds few copies of the model.
        resources: the stages' largest request (``{"cpus": 1, "gpus": 0}``).
        workers: upper bound on actors (``None``: as many as fit).
        model_cpus: CPUs per CPU-only model actor.
    """
    resources = resources or {}
    max_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    max_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    cpus = float(resources.get("cpus", 1.0))
    gpus = float(resources.get("gpus", 0.0))
    gpus = min(gpus, max_gpu) if max_gpu > 0 else 0.0
    if not parallel and gpus == 0:
        cpus = max(cpus, model_cpus)
    cpus = min(cpus, max_cpu)  # a request larger than every node would never be scheduled
    fit = 0
    for node in nodes:
        per_node = min(
            node.get("CPU", 0.0) // cpus if cpus > 0 else math.inf,
            node.get("GPU", 0.0) // gpus if gpus > 0 else math.inf,
        )
        fit += n_tasks if per_node == math.inf else int(per_node)
    size = max(1, min(n_tasks, fit, workers or fit))
    return PoolPlan(size=size, num_cpus=cpus, num_gpus=gpus)


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

    def run(self, task: Any, retries: int) -> TaskResult:
        """Run one task under the shared per-task policy."""
        assert self.worker is not None, "load() a worker first"
        result = run_task(self.worker, task, retries, no_progress)
        result.extra["worker"] = self.where
        return result

    def fail(self, task: Any, error: str, attempts: int) -> TaskResult:
        """Record a task whose worker process kept dying as failed for good."""
        assert self.worker is not None, "load() a worker first"
        summary = self.worker.fail(task, error)
        return TaskResult(task, summary, attempts, error=error, extra={"worker": self.where})


class _Pool:
    """Actors of one resource shape, kept across passes that ask for the same shape."""

    def __init__(self, plan: PoolPlan, runtime_env: dict[str, Any] | None) -> None:
        self.shape = (plan.num_cpus, plan.num_gpus)
        self.options: dict[str, Any] = {"num_cpus": plan.num_cpus, "num_gpus": plan.num_gpus}
        if runtime_env:
            self.options["runtime_env"] = runtime_env
        self.actors: list[Any] = []

    def take(self, size: int) -> list[Any]:
        """The first ``size`` actors, starting new ones as needed."""
        while len(self.actors) < size:
            self.actors.append(self._new())
        return self.actors[:size]

    def _new(self) -> Any:
        return ray.remote(TaskActor).options(**self.options).remote()

    def replace(self, actor: Any) -> Any:
        """Swap a dead actor for a fresh one."""
        ray.kill(actor, no_restart=True)
        new = self._new()
        self.actors[self.actors.index(actor)] = new
        return new

    def kill(self) -> None:
        """Stop every actor (frees their CPUs and GPUs for the next pool)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


def _short(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"worker process died ({type(error).__name__}){': ' + first if first else ''}"


def _saved_results(worker: TaskWorker, tasks: Sequence[Any]) -> list[dict[str, Any]] | None:
    """Every task's saved summary when ``worker.done()`` says all are done, else ``None``.

    Checked on the driver, in growing chunks so that a fresh pass costs one look-up. Any error
    here (the driver cannot read the output, say) means "not known": the actors check again.
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
    except Exception as e:  # an optimisation only: the actors decide
        log.debug("could not check finished tasks on the driver: %s", e)
        return None
    return saved


class _Dispatch:
    """Hand tasks to idle actors; collect results; replace actors whose process died."""

    def __init__(
        self,
        pool: _Pool,
        actors: list[Any],
        worker_ref: Any,
        tasks: Sequence[Any],
        retries: int,
        progress: Progress,
        start_timeout_s: float,
    ) -> None:
        self.pool, self.worker_ref, self.tasks = pool, worker_ref, tasks
        self.retries, self.progress, self.start_timeout_s = retries, progress, start_timeout_s
        self.loading: dict[Any, Any] = {}
        self.idle: list[Any] = []
        self.running: dict[Any, tuple[int, Any]] = {}
        self.todo: deque[int] = deque(range(len(tasks)))
        self.crashes = [0] * len(tasks)  # process deaths while running the task
        self.fail_crashes = [0] * len(tasks)  # process deaths while recording its failure
        self.errors: dict[int, str] = {}
        self.results: dict[int, TaskResult] = {}
        self.load_failures = 0
        self.started = False
        self.start_s = 0.0  # until the first actor was ready (new processes, worker loaded)
        for actor in actors:
            self.loading[actor.load.remote(worker_ref)] = actor

    def __iter__(self) -> Iterator[TaskResult]:
        begin = time.monotonic()
        following = 0
        while following < len(self.tasks):
            self._submit()
            ready, _ = ray.wait([*self.running, *self.loading], num_returns=1, timeout=1.0)
            if not ready and not self.started:
                self._check_start(time.monotonic() - begin)
            for ref in ready:
                self._collect(ref)
            if self.started and not self.start_s:
                self.start_s = time.monotonic() - begin
            while following in self.results:
                yield self.results.pop(following)
                following += 1

    def _submit(self) -> None:
        while self.idle and self.todo:
            i = self.todo.popleft()
            actor = self.idle.pop()
            if self.crashes[i] > self.retries:
                ref = actor.fail.remote(self.tasks[i], self.errors[i], self.crashes[i])
            else:
                ref = actor.run.remote(self.tasks[i], self.retries - self.crashes[i])
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
            self.started = True
            self.idle.append(actor)
            return
        i, actor = self.running.pop(ref)
        try:
            result: TaskResult = ray.get(ref)
        except RayActorError as e:
            self._restart(actor)
            if self.crashes[i] > self.retries:  # it died in fail()
                self._fail_crashed(i, e)
                return
            self.crashes[i] += 1
            self.errors[i] = _short(e)
            log.warning("task %s: %s (%d/%d)", self.tasks[i], self.errors[i],
                        self.crashes[i], self.retries + 1)  # fmt: skip
            self.todo.appendleft(i)
            return
        if self.crashes[i] <= self.retries:  # fail() results already count the crashes
            result.attempts += self.crashes[i]
        self._done(i, result)
        self.idle.append(actor)

    def _fail_crashed(self, i: int, error: RayActorError) -> None:
        """``fail()`` killed its process: try again, or record the failure here (no marker)."""
        self.fail_crashes[i] += 1
        died = _short(error)
        if self.fail_crashes[i] <= FAIL_CRASHES:
            log.warning("task %s: recording its failure: %s; trying again", self.tasks[i], died)
            self.todo.appendleft(i)
            return
        log.error("task %s: recording its failure keeps killing the worker: %s",
                  self.tasks[i], died)  # fmt: skip
        summary = {"samples": 0, "error": f"{self.errors[i]}; recording the failure: {died}"}
        self._done(i, TaskResult(self.tasks[i], summary, self.crashes[i], error=self.errors[i]))

    def _done(self, i: int, result: TaskResult) -> None:
        self.results[i] = result
        self.progress(int(result.summary.get("samples", 0) or 0))

    def _restart(self, actor: Any) -> None:
        new = self.pool.replace(actor)
        self.loading[new.load.remote(self.worker_ref)] = new

    def _check_start(self, waited: float) -> None:
        if waited < self.start_timeout_s:
            return
        cpus, gpus = self.pool.shape
        raise RuntimeError(
            f"no Ray actor started within {self.start_timeout_s:.0f}s: each asks for "
            f"{cpus:g} CPU and {gpus:g} GPU, the cluster has {ray.available_resources()} "
            "available. Other actors or jobs may hold the resources; lower `workers`, "
            "or free the cluster."
        )


class RayExecutor(Executor):
    """Places tasks on a Ray cluster (an existing one, or a local one it starts).

    Args:
        workers: most actors per pass (``None``: as many as the cluster holds).
        address: cluster to join (``"auto"``, ``"ray://head:10001"``); ``None`` reads
            ``RAY_ADDRESS`` and otherwise starts a local cluster.
        num_cpus: CPUs of a local cluster (default: this machine's).
        num_gpus: GPUs of a local cluster (default: Ray detects them).
        env_vars: environment for every worker process (e.g. ``AWS_*`` for object storage).
        runtime_env: a Ray runtime environment (``py_modules``, ``pip``, ...).
        model_cpus: CPUs each model actor asks for when no GPU is used.
        start_timeout_s: raise if no actor of a pool can start within this many seconds.
        init_options: more keyword arguments for ``ray.init``.
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        env_vars: dict[str, str] | None = None,
        runtime_env: dict[str, Any] | None = None,
        model_cpus: float = 4.0,
        start_timeout_s: float = 300.0,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        self.workers = workers
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.model_cpus = model_cpus
        self.start_timeout_s = start_timeout_s
        self.init_options = init_options or {}
        self.runtime_env = dict(runtime_env or {})
        if env_vars:
            merged = {**self.runtime_env.get("env_vars", {}), **env_vars}
            self.runtime_env["env_vars"] = {k: str(v) for k, v in merged.items()}
        self._started = False
        self._actor_env: dict[str, Any] | None = None
        self._pool: _Pool | None = None
        self._cluster: dict[str, Any] = {}
        self._plans: list[dict[str, Any]] = []

    def _connect(self) -> None:
        """Join or start Ray once; remember the cluster's shape for ``run.json``."""
        if ray.is_initialized():
            self._actor_env = self.runtime_env or None  # caller's Ray: apply env per actor
        else:
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            options: dict[str, Any] = {"runtime_env": self.runtime_env or None}
            options.update(self.init_options)
            if address:
                ray.init(address=address, **options)
            else:
                options.setdefault("include_dashboard", False)
                cpus = self.num_cpus or os.cpu_count() or 1
                # "local": a fresh cluster, even if `ray start` left one on this machine
                ray.init(address="local", num_cpus=cpus, num_gpus=self.num_gpus, **options)
            self._started = True
        nodes = self._nodes()
        self._cluster = {
            "nodes": len(nodes),
            "CPU": sum(n.get("CPU", 0.0) for n in nodes),
            "GPU": sum(n.get("GPU", 0.0) for n in nodes),
        }

    @staticmethod
    def _nodes() -> list[dict[str, float]]:
        return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]

    def describe(self) -> dict[str, Any]:
        """Settings and cluster shape for ``run.json``."""
        return {
            "name": self.name,
            "workers": self.workers,
            "address": self.address or os.environ.get("RAY_ADDRESS") or "local",
            "cluster": self._cluster,
            "pools": self._plans,
        }

    def _pool_for(self, plan: PoolPlan) -> _Pool:
        if self._pool is not None and self._pool.shape != (plan.num_cpus, plan.num_gpus):
            self._pool.kill()  # free its resources before asking for another shape
            self._pool = None
        if self._pool is None:
            self._pool = _Pool(plan, self._actor_env)
        return self._pool

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
        """Run the tasks on Ray actors; yield results in task order.

        When ``worker.done()`` reports every task finished (checked here, on the driver), the
        saved results come back at once: no Ray connection, pool or actor is started, so a
        resumed run whose model pass is complete needs neither the model nor a GPU.
        """
        tasks = list(tasks)
        if not tasks:
            return
        saved = _saved_results(worker, tasks)
        if saved is not None:
            self._plans.append({"tasks": len(tasks), "resumed": len(tasks)})
            for task, summary in zip(tasks, saved, strict=True):
                progress(int(summary.get("samples", 0) or 0))
                yield TaskResult(task, summary, attempts=0, resumed=True)
            return
        if not ray.is_initialized() or not self._cluster:
            self._connect()
        plan = plan_pool(
            len(tasks),
            self._nodes(),
            parallel=parallel,
            resources=resources,
            workers=self.workers,
            model_cpus=self.model_cpus,
        )
        record = {"tasks": len(tasks), **asdict(plan)}
        self._plans.append(record)
        try:
            worker_ref = ray.put(worker)
        except Exception as e:
            raise TypeError(
                f"{type(worker).__name__} cannot be shipped to Ray workers ({e}); keep heavy "
                "or unpicklable state out of constructors and load it in setup()"
            ) from e
        pool = self._pool_for(plan)
        finished = False
        dispatch = _Dispatch(
            pool, pool.take(plan.size), worker_ref, tasks, retries, progress, self.start_timeout_s
        )
        try:
            yield from dispatch
            finished = True
            record["start_s"] = round(dispatch.start_s, 3)
        finally:
            if not finished:  # interrupted or failed: stop in-flight work
                pool.kill()
                self._pool = None

    def map_calls(self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """Run each call as a Ray task (one CPU), a bounded window in flight, results in order.

        The actor pool of the previous pass is stopped first, so the tasks never wait on CPUs
        that idle actors hold (the small-machine deadlock).
        """
        if not ray.is_initialized() or not self._cluster:
            self._connect()
        if self._pool is not None:
            self._pool.kill()
            self._pool = None
        remote = ray.remote(num_cpus=1, max_retries=2)(fn)
        window = max(2, 2 * int(self._cluster.get("CPU", 1)))
        pending: deque[Any] = deque()
        for args in calls:
            pending.append(remote.remote(*args))
            if len(pending) >= window:
                yield ray.get(pending.popleft(), timeout=self.start_timeout_s)
        while pending:
            yield ray.get(pending.popleft(), timeout=self.start_timeout_s)

    def shutdown(self) -> None:
        """Stop the actors; stop Ray too when this executor started it."""
        if self._pool is not None:
            self._pool.kill()
            self._pool = None
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False
