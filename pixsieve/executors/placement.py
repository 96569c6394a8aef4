"""How many actors a pass gets and what each asks for: pure arithmetic, no Ray needed.

See ``docs/ray.md`` (resources per pass) for the rules that keep every request schedulable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
