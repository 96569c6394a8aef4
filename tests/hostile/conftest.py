"""Fixtures of the hostile suite: the fork server, and its figures at the end of a session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hostile.harness import FIGURES, CurateServer


@pytest.fixture(scope="session")
def curate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CurateServer]:
    """The fork server (one per session)."""
    server = CurateServer(tmp_path_factory.mktemp("hostile-runs"))
    yield server
    server.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print each hostile run's peak memory and seconds (the figures the docs quote)."""
    if not FIGURES:
        return
    terminalreporter.section("hostile runs: peak RSS and time per forked run")
    for f in FIGURES:
        terminalreporter.write_line(
            f"{f['case']:<28} rc={f['rc']:<3} peak RSS {f['max_rss'] / 2**20:7.0f} MiB "
            f"{f['seconds']:6.2f} s{'  TIMED OUT' if f['timed_out'] else ''}"
        )
