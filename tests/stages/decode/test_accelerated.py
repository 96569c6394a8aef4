"""The batch-decoder base without a GPU: header routing, fallback, orientation, pickling.

:class:`AcceleratedDecodeStage` is driven by a fake "accelerator" that decodes with Pillow
and, like DALI and nvJPEG, fails the whole call when one image is bad.
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch
from decode_parity import assert_same_fates, corrupt_batch_shard, read_batch
from fixtures_shards import make_tar, photo_jpegs
from PIL import Image

from pixsieve import Pipeline
from pixsieve.batch import ERROR, KEPT
from pixsieve.io.dali_pipeline import crop_box
from pixsieve.io.decode import _orient, _resize_crop
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.decode.accelerated import AcceleratedDecodeStage, orient_nhwc
from pixsieve.stages.decode.failures import SYSTEMATIC_MIN_IMAGES, AcceleratorError


class PillowAccel(AcceleratedDecodeStage):
    """A fake batch decoder: full-size Pillow decode, the whole call fails on one bad image."""

    backend = "fake"

    def _build(self, device: torch.device) -> object:
        self.calls: list[int] = []
        return object()

    def _accel_decode(self, items, headers):
        self.calls.append(len(items))
        out = []
        for data in items:
            im = Image.open(io.BytesIO(data))
            im.load()  # raises on corrupt data, failing the call
            out.append(np.asarray(_resize_crop(im.convert("RGB"), self.image_size)))
        return np.stack(out)


# --- geometry ------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_nhwc_matches_cpu_decoder(orientation):
    img = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    got = orient_nhwc(torch.from_numpy(img)[None], orientation)[0].numpy()
    np.testing.assert_array_equal(got, _orient(img, orientation))


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (640, 480), (224, 500), (1, 1)])
def test_crop_box_is_the_cpu_decoders_box(size):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), np.uint8))
    y0, x0, y1, x1 = crop_box(im.width, im.height, 224)
    via_box = im.resize((224, 224), Image.Resampling.BICUBIC, box=(x0, y0, x1, y1))
    np.testing.assert_array_equal(np.asarray(via_box), np.asarray(_resize_crop(im, 224)))


# --- routing and fallback (fake accelerator) -----------------------------------------------


def test_fake_accelerator_matches_cpu_stage_on_bad_shard(bad_shard):
    cpu = DecodeStage().process(read_batch(bad_shard))
    stage = PillowAccel(device="cpu")
    got = stage.process(read_batch(bad_shard))
    assert_same_fates(cpu, got, mean_tol=4.0)
    counts = stage.counts
    # plain JPEGs: good x2, gray, progressive, rotated, tiny, upper-case name, bad JSON
    assert counts["accelerated"] == 8
    # truncated, random, empty, PNG x2, CMYK, WebP, and the 16000 x 16000 JPEG
    assert counts["routed_cpu"] == 8
    assert counts["fallback_cpu"] == 0


def test_huge_jpegs_go_to_the_cpu_decoder(bad_shard):
    batch = PillowAccel(device="cpu").process(read_batch(bad_shard))
    huge = list(batch.key).index("010-huge")
    assert batch.status[huge] == KEPT and batch.width[huge] == 16000  # DCT-scaled on CPU
    stage = PillowAccel(device="cpu", max_accel_pixels=100_000)  # below 451 x 300
    stage.process(read_batch(bad_shard))
    assert stage.counts["accelerated"] == 1  # only the 1 x 1 image


def test_corrupt_jpeg_fails_only_itself(tmp_path):
    path = corrupt_batch_shard(tmp_path)
    stage = PillowAccel(device="cpu", min_split=1)
    out = stage.process(read_batch(path))
    cpu = DecodeStage().process(read_batch(path))
    assert_same_fates(cpu, out, mean_tol=4.0)
    bad = list(out.key).index("bad")
    assert out.status[bad] == ERROR and out.reason[bad].startswith("decode_error")
    assert (out.status == KEPT).sum() == 9
    assert stage.counts == {
        "accelerated": 9,
        "routed_cpu": 0,
        "fallback_cpu": 1,
        "failed_calls": stage.counts["failed_calls"],
    }
    assert stage.counts["failed_calls"] >= 2  # bisected down to the one bad image


def test_batch_size_splits_calls(good_shards):
    stage = PillowAccel(device="cpu", batch_size=4)
    batch = stage.process(read_batch(good_shards[0]))
    assert max(stage.calls) <= 4 and sum(stage.calls) == len(batch)
    assert batch.pixels.shape == (len(batch), 224, 224, 3)


def test_stage_pickles_settings_only():
    stage = PillowAccel(device="cpu", batch_size=7)
    stage.setup()
    clone = pickle.loads(pickle.dumps(stage))
    assert clone._accel is None and clone._pool is None and clone.batch_size == 7
    assert stage.describe()["batch_size"] == 7 and "device" in stage.describe()
    assert stage.resources.gpus == 0.0


# --- systematic failures are not bad images (fakes for GPU errors) ---------------------------


class BrokenAccel(PillowAccel):
    """The fake accelerator, failing every call with ``error`` (or above ``oom_above`` images
    with a CUDA out-of-memory error)."""

    def __init__(self, error=None, oom_above=None, **kwargs):
        super().__init__(**kwargs)
        self.error, self.oom_above = error, oom_above

    def _accel_decode(self, items, headers):
        if self.oom_above is not None and len(items) > self.oom_above:
            self.calls.append(-len(items))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        if self.error is not None:
            self.calls.append(-len(items))
            raise self.error
        return super()._accel_decode(items, headers)


@pytest.fixture(scope="module")
def many_jpegs(tmp_path_factory) -> str:
    """More plain JPEGs than :data:`SYSTEMATIC_MIN_IMAGES`, all readable."""
    jpegs = photo_jpegs() * 3
    assert len(jpegs) > SYSTEMATIC_MIN_IMAGES
    members = [(f"{i:03d}.jpg", d) for i, (_, d) in enumerate(jpegs)]
    return str(make_tar(tmp_path_factory.mktemp("many") / "many.tar", members))


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        TypeError("resize_crop() takes 2 positional arguments but 3 were given"),
    ],
)
def test_device_errors_and_bugs_raise_instead_of_decoding_on_cpu(error, good_shards):
    stage = BrokenAccel(error, device="cpu")
    with pytest.raises(AcceleratorError, match="not because of an image"):
        stage.process(read_batch(good_shards[0]))
    assert len(stage.calls) == 1  # no bisection down to the CPU decoder
    assert "fallback_cpu" not in stage.counts


def test_every_image_failing_the_same_way_is_systematic(many_jpegs):
    stage = BrokenAccel(RuntimeError("resize produced (0, 224) pixels"), device="cpu")
    with pytest.raises(AcceleratorError, match="the same way on all"):
        stage.process(read_batch(many_jpegs))


def test_out_of_memory_splits_the_call_and_never_falls_back(many_jpegs):
    stage = BrokenAccel(oom_above=4, device="cpu", batch_size=64)
    got = stage.process(read_batch(many_jpegs))
    assert_same_fates(DecodeStage().process(read_batch(many_jpegs)), got, mean_tol=4.0)
    assert max(stage.calls) <= 4 and stage.counts["oom_splits"] >= 1
    assert stage.counts["accelerated"] == len(got) and stage.counts["fallback_cpu"] == 0
    one = BrokenAccel(oom_above=0, device="cpu")  # not even one image fits: systematic
    with pytest.raises(AcceleratorError, match="out of memory"):
        one.process(read_batch(many_jpegs))


def test_a_few_bad_images_still_go_to_the_cpu(tmp_path):
    """Below the threshold, failures are bad images: the CPU decoder judges them."""
    path = corrupt_batch_shard(tmp_path)
    stage = BrokenAccel(RuntimeError("Error while decoding JPEG"), device="cpu")
    got = stage.process(read_batch(path))
    assert_same_fates(DecodeStage().process(read_batch(path)), got, mean_tol=4.0)
    assert stage.counts["fallback_cpu"] == 10


def test_run_json_records_routing_and_systematic_failures(tmp_path, good_shards, bad_shard):
    inputs = [str(p) for p in [*good_shards, bad_shard]]
    Pipeline([PillowAccel(device="cpu")]).run(inputs, str(tmp_path / "ok"))
    record = json.loads((tmp_path / "ok" / "run.json").read_text())
    counts = record["counters"]["decode"]["counts"]
    assert counts["accelerated"] + counts["routed_cpu"] == counts["in"]
    assert counts["routed_cpu"] == 8 and counts.get("fallback_cpu", 0) == 0

    broken = BrokenAccel(RuntimeError("CUDA error: device-side assert triggered"), device="cpu")
    result = Pipeline([broken], retries=0).run(inputs, str(tmp_path / "broken"))
    assert result.counts["kept"] == 0  # nothing silently decoded on the CPU instead
    assert all("AcceleratorError" in e["error"] for e in result.shard_errors)
