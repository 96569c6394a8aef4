"""Choosing the decode backend for a device, and what run.json records."""

from __future__ import annotations

import json

import pytest

from pixsieve import Pipeline
from pixsieve.extras import DALI_HINT, MissingExtraError
from pixsieve.stages.decode import CpuDecodeStage, available_backends, choose_decoder
from pixsieve.stages.decode.chooser import WorkerChosenDecoder, choose_here

# --- chooser -------------------------------------------------------------------------------


def test_choose_decoder_on_cpu_is_the_cpu_stage():
    stage = choose_decoder("cpu", image_size=128, batch_size=99)
    assert isinstance(stage, CpuDecodeStage) and stage.backend == "pillow"
    assert stage.image_size == 128 and stage.name == "decode"


def test_choose_decoder_on_cuda_follows_what_is_installed():
    have = available_backends("cuda")
    assert have[-1] == "pillow"
    stage = choose_here("cuda")  # built, not set up: no GPU needed
    assert stage.backend == have[0]


def test_a_driver_without_a_gpu_lets_the_worker_choose(monkeypatch, good_shards):
    import pickle

    from pixsieve.stages.decode import chooser

    monkeypatch.setattr(chooser, "_cuda_here", lambda: False)
    stage = choose_decoder("cuda", image_size=224)
    assert isinstance(stage, WorkerChosenDecoder) and stage.backend == "auto"
    assert not isinstance(choose_decoder("cpu"), WorkerChosenDecoder)
    worker_copy = pickle.loads(pickle.dumps(choose_decoder("auto")))
    worker_copy.setup()  # this "worker" has no GPU: auto resolves to the CPU decoder here
    assert worker_copy.backend == "pillow" and worker_copy.describe()["image_size"] == 224
    monkeypatch.setattr(chooser, "_cuda_here", lambda: True)  # a driver that sees a GPU
    assert choose_decoder("cuda").backend == available_backends("cuda")[0]


def test_choose_decoder_rejects_unknown_and_missing_backends():
    with pytest.raises(ValueError, match="backend"):
        choose_decoder("cpu", backend="opencv")
    if "dali" not in available_backends("cpu"):
        with pytest.raises(MissingExtraError) as raised:
            choose_decoder("cpu", backend="dali")
        assert str(raised.value) == DALI_HINT  # the extra to install, from the checkout


def test_run_json_records_the_backend(tmp_path, good_shards):
    stage = choose_decoder("cpu")
    Pipeline([stage], exact_dedup=False).run([str(p) for p in good_shards], str(tmp_path / "o"))
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    assert record["decoder"] == "pillow"
