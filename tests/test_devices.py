"""Placement of model replicas on devices, tested with fake device lists (no GPU needed)."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest

from pixsieve import Pipeline
from pixsieve.batch import ImageBatch
from pixsieve.devices import (
    CPUS_ENV,
    bind_device,
    bound_device,
    cpu_budget,
    replica_devices,
)
from pixsieve.executors.local import LocalExecutor
from pixsieve.stages.base import Stage
from pixsieve.stages.decode import DecodeStage

EIGHT = [f"cuda:{i}" for i in range(8)]


def test_replica_devices_from_the_setting():
    assert replica_devices("auto", EIGHT) == EIGHT
    assert replica_devices("cuda", EIGHT) == EIGHT
    assert replica_devices("cuda:1", EIGHT) == ["cuda:1"]  # --device cuda:1 narrows it
    assert replica_devices("cpu", EIGHT) == ["cpu"]
    assert replica_devices("auto", []) == ["cpu"]
    assert replica_devices("cuda", []) == ["cuda"]  # fails loudly in the stage's setup


def test_cuda_visible_devices_narrows_what_torch_sees(monkeypatch):
    monkeypatch.setattr("pixsieve.devices.cuda_devices", lambda: ["cuda:0", "cuda:1"])
    assert replica_devices("auto") == ["cuda:0", "cuda:1"]


def test_binding_is_per_thread():
    seen: dict[str, Any] = {}
    with bind_device("cuda:3"):
        t = threading.Thread(target=lambda: seen.setdefault("other", bound_device()))
        t.start()
        t.join()
        assert bound_device() == "cuda:3"
    assert bound_device() is None and seen["other"] is None


def test_cpu_budget_follows_what_the_worker_was_given(monkeypatch):
    monkeypatch.setenv(CPUS_ENV, "3")
    assert cpu_budget() == 3
    monkeypatch.delenv(CPUS_ENV)
    assert cpu_budget() >= 1


class _Worker:
    """A model-pass worker that records the device bound to the thread of each task."""

    def __init__(self, replicas: list[str]) -> None:
        self.replicas = replicas
        self.where: dict[int, str | None] = {}

    def setup(self) -> None:
        pass

    def done(self, task: int) -> None:
        return None

    def run(self, task: int, progress: Any) -> dict[str, Any]:
        time.sleep(0.05)
        self.where[task] = bound_device()
        return {"task": task}

    def fail(self, task: int, error: str) -> dict[str, Any]:
        return {}


def test_local_executor_runs_one_replica_per_device():
    worker = _Worker(["cuda:0", "cuda:1", "cuda:2"])
    results = list(LocalExecutor(2).map(worker, list(range(9)), parallel=False))
    assert [r.summary["task"] for r in results] == list(range(9))  # in task order
    assert set(worker.where.values()) == {"cuda:0", "cuda:1", "cuda:2"}
    single = _Worker(["cuda:1"])
    list(LocalExecutor(2).map(single, list(range(3)), parallel=False))
    assert set(single.where.values()) == {None}  # one device: the stage's own setting


class _FakeModel(Stage):
    """A model stage whose copy reports which device the placement gave it."""

    name = "fake_model"
    is_model = True
    seen: ClassVar[set[str]] = set()

    def __init__(self) -> None:
        self.device = "auto"

    def process(self, batch: ImageBatch) -> ImageBatch:
        time.sleep(0.1)
        self.seen.add(self.device)
        return batch


@pytest.mark.parametrize("devices", [["fake:0", "fake:1"], ["cpu"]])
def test_curate_places_a_replica_on_every_device_and_says_so(
    devices, monkeypatch, good_shards, tmp_path
):
    monkeypatch.setattr("pixsieve.passes.replica_devices", lambda setting: list(devices))
    _FakeModel.seen = set()
    shards = [str(p) for p in good_shards] * 1
    result = Pipeline([DecodeStage(), _FakeModel()], batch_size=4, exact_dedup=False).run(
        shards, str(tmp_path / "out"), report=False
    )
    if len(devices) > 1:
        assert _FakeModel.seen == set(devices)
        assert result.record["devices"] == devices
    else:  # one replica: the stage keeps its own setting, and run.json says where it ran
        assert _FakeModel.seen == {"auto"}
        assert result.record["devices"] == ["auto"]
    assert result.record["decoder"] == "pillow"
