"""Which devices model replicas run on, and how many CPUs this worker may use.

One place for both questions, asked by executors (where to place replicas) and by stages
(which device a replica's copy uses, how many decode threads to start); it imports no
executor and no torch until asked.

- :func:`replica_devices`: ``auto`` and ``cuda`` mean every visible GPU (one replica each;
  ``CUDA_VISIBLE_DEVICES`` narrows what is visible), ``cuda:N`` and ``cpu`` one replica.
- :func:`bind_device` / :func:`bound_device`: the device an executor gave the current thread;
  the score pass moves its copy of each device stage there.
- :func:`cpu_budget`: the CPUs this worker was given (``PIXSIEVE_CPUS``, set by the Ray actor
  from its assigned CPUs), else the CPUs this process may run on, not ``os.cpu_count()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CPUS_ENV = "PIXSIEVE_CPUS"
_bound = threading.local()


def cuda_devices() -> list[str]:
    """``["cuda:0", ...]``: the GPUs torch sees (after ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def replica_devices(setting: str, visible: list[str] | None = None) -> list[str]:
    """The devices to run one model replica on each, for a ``device`` setting.

    ``visible`` stands for :func:`cuda_devices` (tests pass a fake list). ``auto`` without a
    GPU is ``["cpu"]``; ``cuda`` without one stays ``["cuda"]`` so the stage fails loudly.
    """
    setting = str(setting)
    if setting not in ("auto", "cuda"):
        return [setting]
    found = cuda_devices() if visible is None else list(visible)
    if found:
        return found
    return ["cpu"] if setting == "auto" else ["cuda"]


@contextmanager
def bind_device(device: str | None) -> Iterator[None]:
    """Run the body with ``device`` as this thread's device (``None``: no binding)."""
    old = getattr(_bound, "device", None)
    _bound.device = device
    try:
        yield
    finally:
        _bound.device = old


def set_bound_device(device: str | None) -> None:
    """Bind ``device`` to this thread for its lifetime (a pool thread's initializer)."""
    _bound.device = device


def bound_device() -> str | None:
    """The device an executor bound to this thread, if any."""
    return getattr(_bound, "device", None)


def follows_binding(setting: str) -> bool:
    """Whether a stage's ``device`` setting may be moved to the bound device."""
    return str(setting) in ("auto", "cuda")


def cpu_budget() -> int:
    """CPUs this worker may use: ``PIXSIEVE_CPUS``, else its CPU affinity, else all."""
    given = os.environ.get(CPUS_ENV, "")
    if given.strip():
        try:
            return max(1, int(float(given)))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def place_stage(stage: Any, device: str | None, replicas: int) -> None:
    """Move a stage copy to its replica's ``device``; split the CPUs between decoders."""
    if device and follows_binding(getattr(stage, "device", "")):
        stage.device = device  # type: ignore[attr-defined]
    decoder = getattr(stage, "is_decoder", False)
    if replicas > 1 and decoder and getattr(stage, "threads", 0) is None:
        stage.threads = max(1, cpu_budget() // replicas)  # type: ignore[attr-defined]


def model_device(stages: list[Any]) -> str:
    """Where the first model stage runs (its resolved device when it says), else ``cpu``."""
    for stage in stages:
        if getattr(stage, "is_model", False):
            encoder = getattr(stage, "_encoder", None)
            return str(getattr(encoder, "device", None) or getattr(stage, "device", "cpu"))
    return "cpu"
