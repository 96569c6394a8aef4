"""Our reader + vectorised normalisation match CLIP's own Hugging Face image processor.

transformers 5 splits image processors by backend; without torchvision (which we do not
install) the Pillow one is ``CLIPImageProcessorPil`` (``AutoImageProcessor(..., backend="pil")``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_clip import PHOTOS
from PIL import Image, ImageOps

decode = pytest.importorskip("pixsieve.io.decode", reason="the reader is not in this checkout")

PHOTO_FILES = sorted(PHOTOS.glob("*.*"))


@pytest.fixture(scope="module")
def processor(tiny_clip_dir):
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(tiny_clip_dir, backend="pil")
    assert type(proc).__name__ == "CLIPImageProcessorPil"
    return proc


def _hf_pixels(processor, image: Image.Image) -> torch.Tensor:
    return processor(images=image, return_tensors="pt").pixel_values


def test_there_are_photos_to_compare():
    assert len(PHOTO_FILES) >= 8


@pytest.mark.parametrize("path", PHOTO_FILES, ids=lambda p: p.name)
def test_pixels_and_embeddings_match_the_hf_processor(path, processor, tiny_clip):
    data = path.read_bytes()
    original = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    decoded = decode.decode_image(data)
    assert (decoded.width, decoded.height) == original.size

    ours = tiny_clip.preprocess(decoded.pixels[None])
    ref = _hf_pixels(processor, original)
    assert ours.shape == ref.shape == (1, 3, 224, 224)
    std = torch.tensor(tiny_clip.preprocessing.std).view(1, 3, 1, 1)
    levels = (ours - ref).abs() * std * 255  # difference in 0–255 grey levels
    if Image.open(path).format == "JPEG":
        # the reader decodes JPEGs with libjpeg-turbo's scaled fast IDCT, not Pillow's exact one
        assert float(levels.mean()) < 3.0
        assert float((levels > 16).float().mean()) < 0.01
    else:
        # same bicubic resize and centre crop: at most one level of rounding
        assert float(levels.max()) <= 1.0 + 1e-3

    with torch.inference_mode():
        ref_emb = tiny_clip.model(pixel_values=ref).image_embeds
    ref_emb = torch.nn.functional.normalize(ref_emb, dim=-1).numpy()
    cosine = float(np.sum(tiny_clip.encode(decoded.pixels[None]) * ref_emb))
    assert cosine >= 0.999


@pytest.mark.parametrize("path", PHOTO_FILES[:3], ids=lambda p: p.name)
def test_normalisation_alone_is_exact(path, processor, tiny_clip):
    pixels = decode.decode_image(path.read_bytes()).pixels
    ref = _hf_pixels(processor, Image.fromarray(pixels))  # already 224²: resize/crop are no-ops
    torch.testing.assert_close(tiny_clip.preprocess(pixels[None]), ref, atol=1e-6, rtol=0)
