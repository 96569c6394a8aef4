"""``pixsieve.calls``: the serial default and the per-task share of BLAS/OpenMP threads."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from pixsieve.calls import cores, serial_calls, shared_cores, uses_torch
from pixsieve.dedup.workdir import thread_map


def _blas_threads() -> list[int]:
    """Threads of numpy's own BLAS (a process-wide setting; an OpenMP build such as faiss's
    OpenBLAS reports the calling thread's OpenMP setting instead)."""
    np.ones(2) @ np.ones(2)  # numpy's BLAS is loaded
    info = threadpool_info()
    return [p["num_threads"] for p in info if p["user_api"] == "blas" and "numpy" in p["filepath"]]


def test_serial_calls_in_order():
    assert list(serial_calls(lambda a, b: a + b, [(1, 2), (3, 4)])) == [3, 7]


def test_shared_cores_splits_the_cores_and_restores_them():
    before = _blas_threads()
    with shared_cores(2):
        inside = _blas_threads()
    assert inside and all(n == max(1, cores() // 2) for n in inside)
    assert _blas_threads() == before
    with shared_cores(1):  # one task at a time: the libraries keep every core
        assert _blas_threads() == before


def test_thread_map_limits_blas_while_its_tasks_run():
    seen = list(thread_map(2)(lambda i: (i, _blas_threads()), [(i,) for i in range(4)]))
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert all(n == max(1, cores() // 2) for _, threads in seen for n in threads)


def test_thread_map_gives_torch_tasks_their_share_of_the_cores(monkeypatch):
    """For tasks marked ``uses_torch``, torch's intra-op threads follow the split in the pool's
    threads (each takes the default at its first parallel operation) and are restored after;
    other tasks' maps leave them alone, and so does a map while torch is still being imported
    (another thread runs its import)."""
    import sys
    import types

    import torch

    before = torch.get_num_threads()

    @uses_torch
    def threads(i: int) -> int:
        return torch.get_num_threads()

    from pixsieve.executors.local import LocalExecutor

    for run in (thread_map(2), LocalExecutor(workers=2).map_calls):
        seen = list(run(threads, [(i,) for i in range(3)]))
        assert seen == [max(1, cores() // 2)] * 3 and torch.get_num_threads() == before
    assert list(thread_map(2)(lambda i: torch.get_num_threads(), [(0,)])) == [before]
    half = types.ModuleType("torch")
    half.__spec__ = types.SimpleNamespace(_initializing=True)  # no get_num_threads yet
    monkeypatch.setitem(sys.modules, "torch", half)
    assert list(thread_map(2)(threads, [(0,), (1,)])) == [before, before]


def test_task_end_runs_each_registered_hook_once_per_call():
    from pixsieve import calls

    ran: list[str] = []

    def hook() -> None:
        ran.append("hook")

    calls.at_task_end(hook)
    calls.at_task_end(hook)  # registered once
    try:
        calls.task_end()
        calls.task_end()
        assert ran == ["hook", "hook"]
    finally:
        calls._TASK_END.remove(hook)
