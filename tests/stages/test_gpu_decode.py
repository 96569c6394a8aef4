"""GPU decode plumbing that runs without a GPU: header routing, fallback, chooser, geometry.

The accelerated stages share :class:`AcceleratedDecodeStage`; here it is driven by a fake
"accelerator" that decodes with Pillow and, like DALI and nvJPEG, fails the whole call when
one image is bad. The real torchvision stage runs under the ``gpu`` marker.
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch
from decode_parity import assert_same_fates, corrupt_batch_shard, read_batch
from fixtures_shards import _bad_members, encode, load_photo, photo_jpegs
from PIL import Image

from pixsieve import Pipeline
from pixsieve.batch import ERROR, KEPT
from pixsieve.io.dali_pipeline import crop_box
from pixsieve.io.decode import _orient, _resize_crop
from pixsieve.io.jpeg_header import read_jpeg_header
from pixsieve.stages.accel_decode import AcceleratedDecodeStage, orient_nhwc
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.gpu_decode import (
    CpuDecodeStage,
    TorchvisionDecodeStage,
    available_backends,
    choose_decoder,
    resize_crop_chw,
)


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


# --- header reader -------------------------------------------------------------------------


def pillow_view(data: bytes) -> tuple[int, int, int]:
    im = Image.open(io.BytesIO(data))
    return im.width, im.height, int(im.getexif().get(0x0112, 1) or 1)


def with_exif(orientation: int) -> bytes:
    im = load_photo("chelsea.png")
    exif = im.getexif()
    exif[0x0112] = orientation
    return encode(im, exif=exif.tobytes())


def with_xmp(xmp: bytes, exif_orientation: int | None = None) -> bytes:
    im = load_photo("chelsea.png")
    kw: dict = {"xmp": xmp}
    if exif_orientation is not None:
        exif = im.getexif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif.tobytes()
    return encode(im, **kw)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_header_reads_exif_orientation_like_pillow(orientation):
    data = with_exif(orientation)
    header = read_jpeg_header(data)
    assert header is not None
    assert (header.width, header.height, header.orientation) == pillow_view(data)


def test_header_reads_xmp_orientation_like_pillow():
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    for data in (with_xmp(xmp), with_xmp(xmp, exif_orientation=3)):
        header = read_jpeg_header(data)
        assert header is not None and header.orientation == pillow_view(data)[2]


def test_header_matches_pillow_on_every_fixture_jpeg():
    for name, data in photo_jpegs():
        header = read_jpeg_header(data)
        assert header is not None, name
        assert (header.width, header.height, header.orientation) == pillow_view(data), name


def test_header_refuses_what_the_cpu_decoder_must_judge():
    bad = dict(_bad_members())
    chelsea = load_photo("chelsea.png")
    refused = [
        bad["001-truncated.jpg"],
        bad["002-random.jpg"],
        bad["003-empty.jpg"],
        bad["004-png-as-jpg.jpg"],
        bad["005-cmyk.jpg"],
        bad["011-webp.webp"],
        encode(chelsea, "JPEG", quality=90)[:-2],  # no end-of-image marker
        b"\xff\xd8\xff",
    ]
    for data in refused:
        assert read_jpeg_header(data) is None
    gray = read_jpeg_header(bad["006-gray.jpg"])
    assert gray is not None and gray.components == 1
    assert read_jpeg_header(bad["007-progressive.jpg"]) is not None
    rotated = read_jpeg_header(bad["008-exif-rotated.jpg"])
    assert rotated is not None and rotated.oriented_size == (300, 451)


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


def test_torch_resize_crop_close_to_pillow():
    for _, data in photo_jpegs()[:6]:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        chw = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        got = resize_crop_chw(chw, 224).numpy().astype(int)
        assert np.abs(got - np.asarray(_resize_crop(im, 224))).mean() < 0.5


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


# --- torchvision stage logic on CPU ----------------------------------------------------------


class PillowTorchvision(TorchvisionDecodeStage):
    """The torchvision stage with decode_jpeg replaced by Pillow (torchvision needs CUDA)."""

    def __init__(self, **kwargs):
        AcceleratedDecodeStage.__init__(self, **kwargs)
        self._device = torch.device("cpu")

    def _decode_tensors(self, items):
        out = []
        for data in items:
            im = Image.open(io.BytesIO(data))
            im.load()
            out.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
        return out


def test_torchvision_stage_logic_matches_cpu_stage(bad_shard):
    cpu = DecodeStage().process(read_batch(bad_shard))
    stage = PillowTorchvision(device="cpu")
    assert_same_fates(cpu, stage.process(read_batch(bad_shard)), mean_tol=4.0)
    assert stage.counts["accelerated"] == 8


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


# --- real GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
def test_torchvision_nvjpeg_matches_cpu_stage(bad_shard):
    pytest.importorskip("torchvision")
    cpu = DecodeStage().process(read_batch(bad_shard))
    stage = TorchvisionDecodeStage(device="cuda")
    assert_same_fates(cpu, stage.process(read_batch(bad_shard)), mean_tol=4.0)
    on_device = TorchvisionDecodeStage(device="cuda", keep_on_device=True)
    batch = on_device.process(read_batch(bad_shard))
    assert isinstance(batch.pixels, torch.Tensor) and batch.pixels.is_cuda
