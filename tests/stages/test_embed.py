"""ClipEmbedder: settings-only constructor, lazy model, NaN rows where nothing was decoded."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from fixtures_clip import PHOTOS
from PIL import Image, ImageOps

from pixsieve.batch import ERROR, KEPT, REMOVED, ImageBatch
from pixsieve.models import hub
from pixsieve.stages.base import StageStats, run_stage
from pixsieve.stages.embed import ClipEmbedder


def make_batch(pixels: np.ndarray, width: np.ndarray, status: np.ndarray) -> ImageBatch:
    n = len(pixels)
    return ImageBatch(
        source="memory://shard-000.tar",
        shard_index=0,
        key=np.array([f"{i:03d}" for i in range(n)], dtype=object),
        position=np.arange(n, dtype=np.int64),
        members=[[f"{i:03d}.jpg"] for i in range(n)],
        image_name=[f"{i:03d}.jpg" for i in range(n)],
        image_bytes=[b"" for _ in range(n)],
        sidecars=[{} for _ in range(n)],
        status=status.astype(np.int8),
        reason=[None if s == KEPT else "x" for s in status],
        pixels=pixels,
        width=width,
        height=width.copy(),
    )


def photo_pixels(n: int) -> np.ndarray:
    out = []
    for path in sorted(PHOTOS.glob("*.*"))[:n]:
        im = ImageOps.fit(Image.open(path).convert("RGB"), (224, 224), Image.Resampling.BICUBIC)
        out.append(np.asarray(im))
    return np.stack(out)


@pytest.fixture
def embedder(tiny_clip_dir) -> ClipEmbedder:
    return ClipEmbedder(model=str(tiny_clip_dir), device="cpu", batch_size=2)


def test_constructor_stores_settings_only(offline):
    stage = ClipEmbedder()  # the pinned default is not cached and we are offline: still fine
    assert stage.name == "embed" and stage.is_model and not stage.needs_embeddings
    assert stage.describe() == {
        "model": hub.DEFAULT_CLIP_ID,
        "revision": hub.DEFAULT_CLIP_REVISION,
        "device": "auto",
        "precision": None,
        "batch_size": 64,
        "compile": False,
    }
    assert pickle.loads(pickle.dumps(stage)).describe() == stage.describe()
    with pytest.raises(hub.ModelUnavailableError, match="pixsieve models download"):
        stage.setup()


def test_resources_follow_the_device():
    assert ClipEmbedder(device="cpu").resources.gpus == 0
    assert ClipEmbedder(device="cuda:0").resources.gpus == 1
    # decided from the setting, not the driver: a cluster's head node may lack the GPU
    assert ClipEmbedder(device="auto").resources.gpus == 1


def test_embeds_decoded_rows_and_leaves_nan_elsewhere(embedder, tiny_clip):
    pixels = photo_pixels(5)
    width = np.array([512, 0, 512, 512, 512])  # row 1 never decoded
    status = np.array([KEPT, ERROR, REMOVED, KEPT, ERROR])  # row 4 failed after decoding
    batch = make_batch(pixels, width, status)
    stats = StageStats()
    out = run_stage(embedder, batch, stats)

    emb = out.columns["embedding"]
    assert emb.shape == (5, 768) and emb.dtype == np.float32
    assert np.isnan(emb[[1, 4]]).all()
    done = [0, 2, 3]  # a removed-but-decoded sample is embedded too (its scores get recorded)
    np.testing.assert_allclose(np.linalg.norm(emb[done], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[done], tiny_clip.encode(pixels[done]), atol=1e-5)
    assert stats.counts["in"] == stats.counts["kept"] == 2  # embedding drops nothing
    assert (out.status == status).all()


def test_model_loads_once_and_not_in_the_pickle(embedder):
    embedder.setup()
    encoder = embedder.encoder
    embedder.setup()
    assert embedder.encoder is encoder
    clone = pickle.loads(pickle.dumps(embedder))
    assert clone._encoder is None


def test_batch_without_decoded_rows(embedder):
    batch = make_batch(np.zeros((3, 224, 224, 3), np.uint8), np.zeros(3, int), np.full(3, ERROR))
    batch.pixels = None
    emb = embedder.process(batch).columns["embedding"]
    assert emb.shape == (3, 768) and np.isnan(emb).all()


def test_decoded_rows_without_pixels_is_an_error(embedder):
    batch = make_batch(np.zeros((2, 224, 224, 3), np.uint8), np.full(2, 100), np.full(2, KEPT))
    batch.pixels = None
    with pytest.raises(RuntimeError, match="decode stage"):
        embedder.process(batch)
