"""Progress bars (rich) for the passes of a run, and a no-op stand-in when disabled.

:data:`Progress` is the callback type every task receives: ``progress(n)`` reports ``n`` more
samples done. Passes import it from here (never from an executor).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

Progress = Callable[[int], None]
"""A pass's progress callback: called with the number of samples a step finished."""


def no_progress(_: int) -> None:
    """A progress callback that ignores updates (used inside remote workers)."""


class RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task: Task) -> Text:
        """Render the task's speed as ``N img/s``."""
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} img/s" if speed else "– img/s", style="cyan")


class PassProgress:
    """One bar per pass; ``bar(name, total)`` returns an ``advance(n)`` callback."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self._progress = RichProgress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
        )

    def __enter__(self) -> PassProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def bar(self, name: str, total: int | None) -> Progress:
        """Add a bar for ``name`` counting images; return its advance callback."""
        task_id = self._progress.add_task(name, total=total)

        def advance(n: int) -> None:
            if n:
                self._progress.advance(task_id, n)

        return advance
