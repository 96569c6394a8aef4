"""Executors decide where tasks run; stages and passes never import them."""

from __future__ import annotations

from typing import Any

from pixsieve.executors.base import Executor, TaskResult, run_task
from pixsieve.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "TaskResult", "make_executor", "run_task"]


def make_executor(spec: str | Executor, workers: int | None = None, **options: Any) -> Executor:
    """Build an executor from a name (``local`` or ``ray``) or return the given instance."""
    if isinstance(spec, Executor):
        return spec
    if spec == "local":
        return LocalExecutor(workers=workers)
    if spec == "ray":
        from pixsieve.executors.ray import RayExecutor

        return RayExecutor(workers=workers, **options)
    raise ValueError(f"unknown executor {spec!r} (choose 'local' or 'ray')")
