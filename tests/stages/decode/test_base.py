"""The decode family's shared parts: the decoder marker, the finish step, resources."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
from decode_parity import read_batch

from pixsieve import Pipeline
from pixsieve.batch import ERROR, KEPT, ImageBatch
from pixsieve.io.decode import DecodedImage, DecodeError
from pixsieve.stages import DecodeStage, ImageSizeFilter
from pixsieve.stages.base import DeviceResources, Stage, device_resources
from pixsieve.stages.decode import DecoderStage, find_decoder
from pixsieve.stages.decode.base import finish, gather


class GreyDecoder(DecoderStage):
    """A user's decoder: every sample becomes a mid-grey image of its declared size."""

    backend: ClassVar[str] = "grey"

    def process(self, batch: ImageBatch) -> ImageBatch:
        rows = np.flatnonzero(batch.alive).tolist()
        results = [DecodedImage(np.full((8, 8, 3), 128, np.uint8), 8, 8, "GREY") for _ in rows]
        pixels = np.zeros((len(batch), 8, 8, 3), np.uint8)
        return finish(batch, gather(len(batch), rows, results, into=pixels), pixels)


def test_find_decoder_by_marker_not_by_name() -> None:
    class NamedDecode(Stage):
        name: ClassVar[str] = "decode"  # a name alone does not make a decoder

        def process(self, batch: ImageBatch) -> ImageBatch:
            return batch

    grey = GreyDecoder()
    assert find_decoder([ImageSizeFilter(min_side=1), grey]) is grey
    assert find_decoder([NamedDecode()]) is None
    assert isinstance(find_decoder([DecodeStage()]), DecodeStage)


def test_pipeline_keeps_a_users_decoder_and_records_its_backend(tmp_path, good_shards) -> None:
    out = tmp_path / "o"
    pipeline = Pipeline([GreyDecoder()], exact_dedup=False)
    assert len(pipeline.stages) == 1  # no CPU decoder prepended
    pipeline.run([str(p) for p in good_shards], str(out))
    record = json.loads((out / "run.json").read_text())
    assert record["decoder"] == "grey"
    assert record["counters"]["decode"]["counts"]["in"] > 0


def test_gather_and_finish(good_shards) -> None:
    batch = read_batch(good_shards[0])
    n = len(batch)
    ok = DecodedImage(np.full((2, 2, 3), 7, np.uint8), 30, 20, "PNG")
    gathered = gather(n, [0, 2, 3], [ok, DecodeError("decode_error: broken"), ok])
    assert gathered.rows == [0, 3] and len(gathered.pixels) == 2
    out = finish(batch, gathered, gathered.place(np.zeros((n, 2, 2, 3), np.uint8)))
    assert out.pixels[[0, 3]].min() == 7 and out.pixels[[1, 2]].max() == 0
    assert out.width[:4].tolist() == [30, 0, 0, 30] and out.height[:4].tolist() == [20, 0, 0, 20]
    assert out.columns["format"][:4].tolist() == ["PNG", None, None, "PNG"]
    assert out.status[:4].tolist() == [KEPT, KEPT, ERROR, KEPT]
    assert out.reason[2] == "decode_error: broken"


def test_one_thread_decodes_like_many_without_a_pool(bad_shard) -> None:
    one = DecodeStage(threads=1)
    single = one.process(read_batch(bad_shard))
    assert one._pool is None
    many = DecodeStage(threads=3).process(read_batch(bad_shard))
    np.testing.assert_array_equal(single.pixels, many.pixels)
    assert single.status.tolist() == many.status.tolist()
    assert single.reason == many.reason


def test_device_resources_follow_the_setting() -> None:
    assert device_resources("cpu").gpus == 0 and device_resources("cuda:1").gpus == 1
    assert device_resources("auto").gpus == 1  # decided by the setting, not this machine

    class OnDevice(Stage):
        resources = DeviceResources()

        def __init__(self, device: str) -> None:
            self.device = device

        def process(self, batch: ImageBatch) -> ImageBatch:
            return batch

    stage = OnDevice("cpu")
    assert stage.resources.gpus == 0
    stage.device = "cuda"
    assert stage.resources.gpus == 1
    assert "resources" not in stage.describe()  # not a setting of its own
