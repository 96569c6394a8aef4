"""DALI decode stage against the CPU DecodeStage: same samples, fates, sizes; close pixels.

Runs DALI CPU-only (``device="cpu"``, ``device_id=None``), so it needs no GPU, only
``nvidia-dali-cuda12x`` installed; skipped without it. The GPU variants carry the ``gpu`` marker.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from decode_parity import assert_same_fates, corrupt_batch_shard, read_batch
from fixtures_shards import make_tar, photo_jpegs
from PIL import Image

from pixsieve import Pipeline
from pixsieve.batch import ERROR, KEPT
from pixsieve.io.decode import _orient, _resize_crop
from pixsieve.stages.base import StageStats, run_stage
from pixsieve.stages.decode import DecodeStage

pytest.importorskip("nvidia.dali")

from pixsieve.stages.decode.dali import DaliDecodeStage

# DALI resizes full-size decodes; the CPU decoder uses libjpeg-turbo's scaled fast IDCT, which
# is up to ~3 grey levels (mean absolute difference) off a full decode on the fixture photos.
PER_IMAGE_TOL = 4.0
OVERALL_TOL = 2.0
FULL_DECODE_TOL = 0.5  # DALI against Pillow's full decode + the same resize and crop


@pytest.fixture(scope="module")
def dali_cpu() -> DaliDecodeStage:
    stage = DaliDecodeStage(device="cpu", threads=2, batch_size=32)
    stage.setup()
    return stage


def test_good_shards_match_cpu_stage(good_shards, dali_cpu):
    diffs = []
    for shard in good_shards:
        cpu = DecodeStage().process(read_batch(shard))
        got = dali_cpu.process(read_batch(shard))
        assert isinstance(got.pixels, np.ndarray) and got.pixels.dtype == np.uint8
        assert_same_fates(cpu, got, mean_tol=PER_IMAGE_TOL)
        assert (got.status == KEPT).all()
        diffs.append(np.abs(cpu.pixels.astype(int) - got.pixels).mean())
    assert np.mean(diffs) < OVERALL_TOL


def test_pixels_match_pillow_full_decode(good_shards, dali_cpu):
    batch = dali_cpu.process(read_batch(good_shards[0]))
    for i, data in enumerate(batch.image_bytes):
        im = Image.open(io.BytesIO(data))
        orientation = int(im.getexif().get(0x0112, 1) or 1)
        ref = _orient(np.asarray(_resize_crop(im.convert("RGB"), 224)), orientation)
        assert np.abs(batch.pixels[i].astype(int) - ref).mean() < FULL_DECODE_TOL


def test_bad_shard_same_fates_and_reasons(bad_shard, dali_cpu):
    cpu = DecodeStage().process(read_batch(bad_shard))
    before = dict(dali_cpu.counts)
    got = dali_cpu.process(read_batch(bad_shard))
    assert_same_fates(cpu, got, mean_tol=PER_IMAGE_TOL)
    after = dali_cpu.counts
    assert after["accelerated"] - before.get("accelerated", 0) == 8
    assert after["routed_cpu"] - before.get("routed_cpu", 0) == 8
    rotated = list(got.key).index("008-exif-rotated")
    assert (got.width[rotated], got.height[rotated]) == (300, 451)


def test_same_counters_as_cpu_stage(bad_shard, dali_cpu):
    cpu_stats, dali_stats = StageStats(), StageStats()
    run_stage(DecodeStage(), read_batch(bad_shard), cpu_stats)
    dali_cpu.tally(None, None)  # earlier tests' batches (the fixture is shared)
    run_stage(dali_cpu, read_batch(bad_shard), dali_stats)
    routing = {"accelerated", "routed_cpu", "fallback_cpu", "failed_calls", "oom_splits"}
    fates = {k: v for k, v in dali_stats.counts.items() if k not in routing}
    assert cpu_stats.counts == fates
    assert dali_stats.counts["accelerated"] == 8  # and the routing counters besides


def test_corrupt_jpeg_does_not_fail_the_batch(tmp_path):
    path = corrupt_batch_shard(tmp_path)
    stage = DaliDecodeStage(device="cpu", threads=2, min_split=1)
    got = stage.process(read_batch(path))
    cpu = DecodeStage().process(read_batch(path))
    assert_same_fates(cpu, got, mean_tol=PER_IMAGE_TOL)
    bad = list(got.key).index("bad")
    assert got.status[bad] == ERROR and got.reason[bad].startswith("decode_error")
    assert stage.counts["accelerated"] == 9 and stage.counts["fallback_cpu"] == 1
    # the pipeline is still usable after a failed run
    again = stage.process(read_batch(path))
    np.testing.assert_array_equal(again.pixels, got.pixels)


def test_more_images_than_the_dali_batch(tmp_path):
    members = [(f"{i:03d}.jpg", d) for i, (_, d) in enumerate(photo_jpegs() * 2)]
    path = make_tar(tmp_path / "many.tar", members)
    stage = DaliDecodeStage(device="cpu", threads=2, batch_size=8)
    got = stage.process(read_batch(path))
    assert_same_fates(DecodeStage().process(read_batch(path)), got, mean_tol=PER_IMAGE_TOL)
    assert stage.counts["accelerated"] == len(members)


def test_pickles_settings_and_runs_after_unpickling(good_shards, dali_cpu):
    clone = pickle.loads(pickle.dumps(dali_cpu))
    assert clone._accel is None
    got = clone.process(read_batch(good_shards[0]))
    assert (got.status == KEPT).all()
    assert clone.describe()["device"] == "cpu" and clone.backend == "dali"


def test_pipeline_run_same_manifest_and_run_json(tmp_path, good_shards, bad_shard):
    inputs = [str(p) for p in [*good_shards, bad_shard]]
    outs = {}
    for label, stage in (("cpu", DecodeStage()), ("dali", DaliDecodeStage(device="cpu"))):
        out = tmp_path / label
        Pipeline([stage], samples_per_shard=7).run(inputs, str(out))
        rows = ds.dataset(str(out / "manifest")).to_table().to_pylist()
        keep = ("source", "position", "key", "members", "status", "reason")
        outs[label] = sorted(
            ({k: r[k] for k in keep} for r in rows), key=lambda r: (r["source"], r["position"])
        )
        outs[label + "_decoder"] = json.loads((out / "run.json").read_text())["decoder"]
        outs[label + "_files"] = {
            p.name: p.read_bytes() for p in sorted(Path(out / "shards").glob("*.tar"))
        }
    assert outs["cpu"] == outs["dali"]
    assert outs["cpu_files"] == outs["dali_files"]  # same samples, keys and sidecars exported
    assert (outs["cpu_decoder"], outs["dali_decoder"]) == ("pillow", "dali")


@pytest.mark.gpu
@pytest.mark.parametrize("keep_on_device", [False, True])
def test_gpu_mixed_decoder_matches_cpu_stage(bad_shard, keep_on_device):
    stage = DaliDecodeStage(device="cuda", keep_on_device=keep_on_device)
    got = stage.process(read_batch(bad_shard))
    if keep_on_device:
        assert isinstance(got.pixels, torch.Tensor) and got.pixels.is_cuda
        got.pixels = got.pixels.cpu().numpy()
    assert_same_fates(DecodeStage().process(read_batch(bad_shard)), got, PER_IMAGE_TOL)
    assert stage.resources.gpus == 1.0


@pytest.mark.gpu
def test_gpu_corrupt_jpeg_does_not_fail_the_batch(tmp_path):
    path = corrupt_batch_shard(tmp_path)
    stage = DaliDecodeStage(device="cuda", min_split=1)
    got = stage.process(read_batch(path))
    assert_same_fates(DecodeStage().process(read_batch(path)), got, PER_IMAGE_TOL)
    assert stage.counts["fallback_cpu"] == 1
