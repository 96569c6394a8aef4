"""The GPU benchmark's guards, run on the CPU: backends probed once, the model never reloaded."""

from __future__ import annotations

import copy
import importlib.util
import sys
from argparse import Namespace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bench.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_a_failing_backend_is_reported_and_skipped(gpu_bench, good_shards, monkeypatch):
    """A backend that imports but cannot run here: one line of error, the others go on."""
    from pixsieve.stages.decode import DecodeStage

    class NoKernel(DecodeStage):
        def setup(self) -> None:
            raise RuntimeError("CUDA error: no kernel image is available\nfor execution")

    real = gpu_bench.choose_decoder

    def choose(device, backend="auto", **settings):
        return NoKernel() if backend == "nvjpeg" else real(device, backend, **settings)

    monkeypatch.setattr(gpu_bench, "available_backends", lambda device: ["nvjpeg", "pillow"])
    monkeypatch.setattr(gpu_bench, "choose_decoder", choose)
    samples = gpu_bench.read_samples(good_shards)
    probes = gpu_bench.probe_decoders("cpu", samples, Namespace(batch=8))
    assert probes == {
        "nvjpeg": "RuntimeError: CUDA error: no kernel image is available",
        "pillow": None,
    }


def test_preloaded_stages_are_shared_by_deep_copies(gpu_bench):
    from pixsieve.stages.embed import ClipEmbedder

    embed = ClipEmbedder(device="cpu")
    embed._encoder = object()  # stands for a loaded, warmed model
    assert copy.deepcopy(embed)._encoder is None  # what the score pass would otherwise get
    shared = gpu_bench.preloaded(embed)
    assert copy.deepcopy([shared])[0] is embed
    assert "__deepcopy__" not in embed.describe()
