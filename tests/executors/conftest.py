"""Executor-test fixtures: a deadline on every test, one Ray session, a local S3 server."""

from __future__ import annotations

import faulthandler
import signal
import socket
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

RAY_TEST_SECONDS = 90
TEST_SECONDS = 60


@pytest.fixture(autouse=True)
def _deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail (never hang) a test that runs too long; dump every thread's stack first."""
    seconds = RAY_TEST_SECONDS if "ray" in request.keywords else TEST_SECONDS

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"{request.node.name} ran past its {seconds}s deadline")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    faulthandler.dump_traceback_later(seconds - 1, exit=False, file=sys.stderr)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A local 2-CPU Ray, started once for the whole test session (skip without Ray)."""
    ray = pytest.importorskip("ray")
    from executors import helpers

    ray.cloudpickle.register_pickle_by_value(helpers)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    try:
        yield ray
    finally:
        ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, Any]]:
    """A moto S3 server on 127.0.0.1; yields the fsspec ``storage_options`` to reach it."""
    server_mod = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield {
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
            "key": "x",
            "secret": "y",
        }
    finally:
        server.stop()
