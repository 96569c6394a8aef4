"""Run passes on a Ray cluster: a pool of long-lived actors per resource shape.

This module joins or starts the cluster, sizes each pass's pool (:func:`plan_pool`), kills a
pool of another shape before the next one starts, and answers a pass whose tasks are all done
already (a resume) from :func:`~pixsieve.executors.base.resumed_results` without starting any
actor. The actors and the dispatch loop are in :mod:`pixsieve.executors.ray_pool`; resume,
retries and failure recording are :mod:`pixsieve.executors.base`'s. See ``docs/ray.md``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

from pixsieve.calls import task_end
from pixsieve.extras import RAY_HINT, MissingExtraError

try:
    import ray
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingExtraError(RAY_HINT) from e

from pixsieve.executors.base import (
    Executor,
    Progress,
    TaskResult,
    TaskWorker,
    no_progress,
    resumed_results,
)
from pixsieve.executors.placement import PoolPlan, plan_pool
from pixsieve.executors.ray_pool import ActorPool, Dispatch, TaskActor

__all__ = ["PoolPlan", "RayExecutor", "TaskActor", "plan_pool"]


def _task(fn: Callable[..., Any], *args: Any) -> Any:
    """One call in a Ray worker, then the task-end hooks (state kept for a thread's next task
    must not outlive the task in a worker that Ray keeps)."""
    try:
        return fn(*args)
    finally:
        task_end()


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
        self._pool: ActorPool | None = None
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

    def _pool_for(self, plan: PoolPlan) -> ActorPool:
        if self._pool is not None and self._pool.shape != (plan.num_cpus, plan.num_gpus):
            self._pool.kill()  # free its resources before asking for another shape
            self._pool = None
        if self._pool is None:
            self._pool = ActorPool(plan, self._actor_env)
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
        resumed = resumed_results(worker, tasks, progress)
        if resumed is not None:
            self._plans.append({"tasks": len(tasks), "resumed": len(tasks)})
            yield from resumed
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
        dispatch = Dispatch(
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
        remote = ray.remote(num_cpus=1, max_retries=2)(_task)
        window = max(2, 2 * int(self._cluster.get("CPU", 1)))
        pending: deque[Any] = deque()
        for args in calls:
            pending.append(remote.remote(fn, *args))
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
