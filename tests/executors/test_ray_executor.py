"""The Ray executor on toy workers: order, progress, lazy set-up, resume, retries, crashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from executors.helpers import EnvWorker, ToyWorker, Unpicklable, attempts

pytest.importorskip("ray")

from pixsieve.executors import make_executor
from pixsieve.executors.ray import PoolPlan, RayExecutor, plan_pool

ONE_NODE = [{"CPU": 2.0, "memory": 1e9}]


def test_plan_small_machine() -> None:
    # CPU passes: one 1-CPU actor per core, never more than tasks
    assert plan_pool(5, ONE_NODE) == PoolPlan(2, 1.0, 0.0)
    assert plan_pool(1, ONE_NODE) == PoolPlan(1, 1.0, 0.0)
    assert plan_pool(5, ONE_NODE, workers=1) == PoolPlan(1, 1.0, 0.0)
    # a request larger than any node is clamped, so it can always be scheduled
    assert plan_pool(5, ONE_NODE, resources={"cpus": 8}) == PoolPlan(1, 2.0, 0.0)
    # a model pass without GPUs: one model copy per `model_cpus` cores
    assert plan_pool(5, ONE_NODE, parallel=False) == PoolPlan(1, 2.0, 0.0)
    # GPUs asked for but none present: CPU actors
    assert plan_pool(5, ONE_NODE, parallel=False, resources={"gpus": 1}) == PoolPlan(1, 2.0, 0.0)


def test_plan_cluster() -> None:
    gpu_nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}]
    assert plan_pool(10, gpu_nodes, parallel=False, resources={"cpus": 1, "gpus": 1}) == (
        PoolPlan(4, 1.0, 1.0)
    )
    assert plan_pool(10, gpu_nodes, parallel=False, resources={"cpus": 1, "gpus": 0.5}).size == 8
    assert plan_pool(100, gpu_nodes).size == 16
    small = [{"CPU": 2.0}] * 3  # 6 CPUs in all, but a 4-CPU actor fits on no node
    assert plan_pool(10, small, parallel=False) == PoolPlan(3, 2.0, 0.0)


def test_make_executor_ray() -> None:
    ex = make_executor("ray", workers=2, address="auto")
    assert isinstance(ex, RayExecutor)
    assert (ex.workers, ex.address) == (2, "auto")


@pytest.mark.ray
def test_order_progress_and_setup_once(ray_session, tmp_path: Path) -> None:
    counter = str(tmp_path / "attempts")
    seen: list[int] = []
    ex = RayExecutor(workers=2)
    results = list(ex.map(ToyWorker(counter), list(range(8)), progress=seen.append))
    assert [r.task for r in results] == list(range(8))  # task order, not completion order
    assert sorted(seen) == list(range(8))  # one update per task, with its sample count
    pids = {r.summary["pid"] for r in results}
    assert len(pids) == 2
    assert all(r.summary["setups"] == 1 for r in results)
    assert sum(1 for line in attempts(counter) if line.startswith("setup")) == 2
    pool = ex.describe()["pools"][-1]
    assert pool.pop("start_s") > 0
    assert pool == {"tasks": 8, "size": 2, "num_cpus": 1.0, "num_gpus": 0.0}
    ex.shutdown()


@pytest.mark.ray
def test_retries_then_recorded_failure(ray_session, tmp_path: Path) -> None:
    counter = str(tmp_path / "attempts")
    ex = RayExecutor(workers=2)
    results = list(ex.map(ToyWorker(counter, raise_on=(2,), sleep=0), range(4), retries=2))
    bad = results[2]
    assert bad.error == "ValueError: task 2 is bad"
    assert bad.attempts == 3 and bad.summary["failed"]
    assert attempts(counter).count("run 2") == 3
    assert all(r.error is None and r.attempts == 1 for i, r in enumerate(results) if i != 2)
    ex.shutdown()


@pytest.mark.ray
def test_worker_process_death(ray_session, tmp_path: Path) -> None:
    """A process that dies is replaced; its task is retried, then recorded as failed."""
    counter = str(tmp_path / "attempts")
    worker = ToyWorker(counter, crash_on=(1,), crash_once=(3,), sleep=0)
    ex = RayExecutor(workers=2)
    results = list(ex.map(worker, range(5), retries=1))
    assert results[1].error is not None and "worker process died" in results[1].error
    assert results[1].summary["failed"] and results[1].attempts == 2
    assert attempts(counter).count("run 1") == 2
    assert results[3].error is None and results[3].attempts == 2  # died once, then succeeded
    assert [r.summary["samples"] for r in results] == [0, 0, 2, 3, 4]
    ex.shutdown()


@pytest.mark.ray
def test_fail_that_kills_its_process_is_not_retried_for_ever(ray_session, tmp_path: Path) -> None:
    """run() and fail() both kill the process: the driver records the failure (no loop)."""
    counter = str(tmp_path / "attempts")
    worker = ToyWorker(counter, crash_on=(1,), crash_in_fail=True, sleep=0)
    ex = RayExecutor(workers=2)
    seen: list[int] = []
    results = list(ex.map(worker, range(4), retries=1, progress=seen.append))
    assert [r.task for r in results] == [0, 1, 2, 3]
    bad = results[1]
    assert bad.error is not None and bad.error.startswith("worker process died")
    assert bad.attempts == 2 and bad.summary["samples"] == 0
    assert "recording the failure: worker process died" in bad.summary["error"]
    assert attempts(counter).count("run 1") == 2  # the first try and one retry
    assert attempts(counter).count("fail 1") == 2  # fail() once, then one more try
    assert all(r.error is None for i, r in enumerate(results) if i != 1)
    assert [r.summary["samples"] for r in results] == [0, 0, 2, 3]
    assert sorted(seen) == [0, 0, 2, 3]  # the driver-made result reports progress too
    ex.shutdown()


@pytest.mark.ray
def test_finished_pass_starts_no_actor(ray_session, tmp_path: Path) -> None:
    """Every task done (a resume): saved results from the driver, no pool, no set-up."""
    counter = str(tmp_path / "attempts")
    worker = ToyWorker(counter, crash_on=(0, 1, 2), done_tasks=(0, 1, 2))
    ex = RayExecutor(workers=2)
    seen: list[int] = []
    results = list(ex.map(worker, range(3), progress=seen.append, parallel=False))
    assert [(r.task, r.resumed, r.attempts) for r in results] == [(i, True, 0) for i in range(3)]
    assert [r.summary for r in results] == [{"samples": i, "saved": True} for i in range(3)]
    assert seen == [0, 1, 2]
    assert attempts(counter) == []  # nothing set up, run or failed anywhere
    assert ex._pool is None
    assert ex.describe()["pools"] == [{"tasks": 3, "resumed": 3}]
    ex.shutdown()


@pytest.mark.ray
def test_partly_finished_pass_sets_up_only_for_work(ray_session, tmp_path: Path) -> None:
    """Some tasks done: actors resume those without ``setup()``; one set-up for the one run."""
    counter = str(tmp_path / "attempts")
    ex = RayExecutor(workers=2)
    results = list(ex.map(ToyWorker(counter, done_tasks=(0, 1, 3), sleep=0), range(4)))
    assert [r.resumed for r in results] == [True, True, False, True]
    assert [r.summary["samples"] for r in results] == [0, 1, 2, 3]
    lines = attempts(counter)
    assert sum(1 for line in lines if line.startswith("setup")) == 1
    assert [line for line in lines if not line.startswith("setup")] == ["run 2"]
    ex.shutdown()


@pytest.mark.ray
def test_unpicklable_worker_is_refused(ray_session, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot be shipped to Ray workers"):
        list(RayExecutor().map(Unpicklable(str(tmp_path / "c")), range(2)))


@pytest.mark.ray
def test_pool_shape_change_does_not_deadlock(ray_session, tmp_path: Path) -> None:
    """1-CPU actors hold both CPUs; a 2-CPU model pool must still start (the old one goes)."""
    counter = str(tmp_path / "attempts")
    # a deadlock raises "no Ray actor started" after 45 s, well inside the 90 s test deadline
    ex = RayExecutor(start_timeout_s=45)
    assert len(list(ex.map(ToyWorker(counter, sleep=0), range(4)))) == 4
    results = list(ex.map(ToyWorker(counter, sleep=0), range(4), parallel=False))
    assert [r.task for r in results] == list(range(4))
    assert len({r.summary["pid"] for r in results}) == 1
    assert ex.describe()["pools"][-1]["num_cpus"] == 2.0
    ex.shutdown()


@pytest.mark.ray
def test_unschedulable_pool_raises(ray_session, tmp_path: Path) -> None:
    """Resources held elsewhere: a clear error after ``start_timeout_s``, not a silent hang."""
    ray = ray_session

    @ray.remote(num_cpus=2)
    class Hog:
        def ping(self) -> bool:
            return True

    hog = Hog.remote()
    ray.get(hog.ping.remote(), timeout=30)
    try:
        ex = RayExecutor(start_timeout_s=2)
        with pytest.raises(RuntimeError, match="no Ray actor started within 2s"):
            list(ex.map(ToyWorker(str(tmp_path / "c")), range(2)))
    finally:
        ray.kill(hog)


@pytest.mark.ray
def test_pass_uses_the_actors_left_after_a_node_is_lost(ray_session, tmp_path: Path) -> None:
    """A node is lost: the next passes run on the surviving actor, never on its replacement.

    Simulated on the 2-CPU test Ray: one actor of the pool is killed and another job takes its
    CPU (the lost node's), so a replacement can never be scheduled while the run's own
    surviving actor holds the last CPU. A one-task pass (export) must still run, at once.
    """
    ray = ray_session

    @ray.remote(num_cpus=1)
    class Hog:
        def ping(self) -> bool:
            return True

    counter = str(tmp_path / "attempts")
    ex = RayExecutor(workers=2, start_timeout_s=20)  # a wait would raise after 20 s
    first = list(ex.map(ToyWorker(counter), range(8)))
    assert len({r.summary["pid"] for r in first}) == 2  # both actors run
    assert ex._pool is not None
    lost, survivor = ex._pool.actors
    ray.kill(lost, no_restart=True)
    hog = Hog.remote()
    ray.get(hog.ping.remote(), timeout=30)  # the lost actor's CPU is gone for good
    try:
        # a pass of two actors: the dead one's replacement never starts; the survivor does all
        second = list(ex.map(ToyWorker(counter, sleep=0), range(3)))
        assert [(r.task, r.error) for r in second] == [(0, None), (1, None), (2, None)]
        pids = {r.summary["pid"] for r in second}
        assert len(pids) == 1
        # a one-task pass takes the running actor, not the replacement that never started
        third = list(ex.map(ToyWorker(counter, sleep=0), range(1)))
        assert [r.summary["pid"] for r in third] == list(pids)
        assert ex._pool.actors == [survivor]  # the pool shrank to the actor that exists
    finally:
        ray.kill(hog)
        ex.shutdown()


@pytest.mark.ray
def test_env_vars_reach_the_workers(ray_session, tmp_path: Path) -> None:
    """Ray was started by someone else (the fixture): ``env_vars`` still reach each actor."""
    worker = EnvWorker(str(tmp_path / "c"), "PIXSIEVE_TEST_SECRET")
    ex = RayExecutor(workers=1, env_vars={"PIXSIEVE_TEST_SECRET": "s3cret"})
    assert [r.summary["value"] for r in ex.map(worker, range(2))] == ["s3cret", "s3cret"]
    ex.shutdown()
    plain = RayExecutor(workers=1)
    assert [r.summary["value"] for r in plain.map(worker, range(1))] == [None]
    plain.shutdown()


OWN_RAY = """
import json, ray
from executors.helpers import EnvWorker
from pixsieve.executors.ray import RayExecutor
ex = RayExecutor(workers=1, num_cpus=1, env_vars={"PIXSIEVE_TEST_SECRET": "job-level"})
values = [r.summary["value"] for r in ex.map(EnvWorker(COUNTER, "PIXSIEVE_TEST_SECRET"), [0, 1])]
cluster = ex.describe()["cluster"]
ex.shutdown()
print(json.dumps({"values": values, "cluster": cluster, "after": ray.is_initialized()}))
"""


@pytest.mark.ray
@pytest.mark.slow
def test_executor_starts_and_stops_its_own_ray(tmp_path: Path) -> None:
    """Without a running Ray (a fresh process), the executor starts a local one and stops it."""
    import json
    import os
    import subprocess
    import sys

    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": tests, "RAY_ADDRESS": ""}
    code = OWN_RAY.replace("COUNTER", repr(str(tmp_path / "c")))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=80
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "values": ["job-level", "job-level"],
        "cluster": {"nodes": 1, "CPU": 1.0, "GPU": 0.0},
        "after": False,
    }
