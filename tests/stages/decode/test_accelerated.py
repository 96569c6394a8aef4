"""The batch-decoder base without a GPU: header routing, fallback, orientation, pickling.

:class:`AcceleratedDecodeStage` is driven by a fake "accelerator" that decodes with Pillow
and, like DALI and nvJPEG, fails the whole call when one image is bad.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from decode_parity import assert_same_fates, corrupt_batch_shard, read_batch
from PIL import Image

from pixsieve.batch import ERROR, KEPT
from pixsieve.io.dali_pipeline import crop_box
from pixsieve.io.decode import _orient, _resize_crop
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.decode.accelerated import AcceleratedDecodeStage, orient_nhwc


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
