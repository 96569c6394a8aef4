"""Choosing the decode backend for a device, and what run.json records."""

from __future__ import annotations

import json

import pytest

from pixsieve import Pipeline
from pixsieve.stages.decode import CpuDecodeStage, available_backends, choose_decoder

# --- chooser -------------------------------------------------------------------------------


def test_choose_decoder_on_cpu_is_the_cpu_stage():
    stage = choose_decoder("cpu", image_size=128, batch_size=99)
    assert isinstance(stage, CpuDecodeStage) and stage.backend == "pillow"
    assert stage.image_size == 128 and stage.name == "decode"


def test_choose_decoder_on_cuda_follows_what_is_installed():
    have = available_backends("cuda")
    assert have[-1] == "pillow"
    stage = choose_decoder("cuda")  # built, not set up: no GPU needed
    assert stage.backend == have[0]


def test_choose_decoder_rejects_unknown_and_missing_backends():
    with pytest.raises(ValueError, match="backend"):
        choose_decoder("cpu", backend="opencv")
    if "dali" not in available_backends("cpu"):
        with pytest.raises(ImportError, match="pixsieve\\[dali\\]"):
            choose_decoder("cpu", backend="dali")


def test_run_json_records_the_backend(tmp_path, good_shards):
    stage = choose_decoder("cpu")
    Pipeline([stage], exact_dedup=False).run([str(p) for p in good_shards], str(tmp_path / "o"))
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    assert record["decoder"] == "pillow"
