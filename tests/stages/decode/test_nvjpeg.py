"""The torchvision (nvJPEG) stage: its logic on the CPU with Pillow in place of nvJPEG, and
the real decoder under the ``gpu`` marker."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from decode_parity import assert_same_fates, read_batch
from fixtures_shards import photo_jpegs
from PIL import Image

from pixsieve.io.decode import _resize_crop
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.decode.accelerated import AcceleratedDecodeStage
from pixsieve.stages.decode.nvjpeg import TorchvisionDecodeStage, resize_crop_chw


def test_torch_resize_crop_close_to_pillow():
    for _, data in photo_jpegs()[:6]:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        chw = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        got = resize_crop_chw(chw, 224).numpy().astype(int)
        assert np.abs(got - np.asarray(_resize_crop(im, 224))).mean() < 0.5


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
