"""How a pass hands its small tasks to whoever places them: the ``map_calls`` type and the
default that runs them here, in order.

An executor's :meth:`~pixsieve.executors.base.Executor.map_calls` fits :data:`MapCalls`
(threads locally, Ray tasks on Ray); the passes and ``pixsieve.dedup`` take one without
importing any executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

MapCalls = Callable[[Callable[..., Any], Iterable[tuple[Any, ...]]], Iterator[Any]]
"""``map_calls(fn, calls)``: ``fn(*args)`` for every ``args`` in ``calls``, results in order."""


def serial_calls(fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
    """Run the calls here, one after the other, in order."""
    for args in calls:
        yield fn(*args)
