"""The CLIP encoder on a tiny random model: shapes, normalisation, batching, precision, OOM."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pixsieve.models import ModelUnavailableError, load_clip
from pixsieve.models.clip import Preprocessing, resolve_precision


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)


def test_encode_returns_unit_norm_float32(tiny_clip, pixels):
    emb = tiny_clip.encode(pixels)
    assert emb.shape == (5, 768) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(emb[0], emb[1])  # different images, different embeddings
    assert tiny_clip.describe()["dtype"] == "float32"
    assert tiny_clip.describe()["device"] == "cpu"


def test_batching_does_not_change_results(tiny_clip, pixels):
    np.testing.assert_allclose(
        tiny_clip.encode(pixels, batch_size=1), tiny_clip.encode(pixels, batch_size=5), atol=1e-5
    )


def test_matches_the_model_run_by_hand(tiny_clip, tiny_clip_dir, pixels):
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir).eval()
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(pixel_values=(x - mean) / std).image_embeds
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(tiny_clip.encode(pixels), ref, atol=1e-5)


def test_empty_input_and_bad_shapes(tiny_clip):
    assert tiny_clip.encode(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 768)
    with pytest.raises(ValueError, match="224, 224, 3"):
        tiny_clip.encode(np.zeros((2, 256, 256, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        tiny_clip.encode(np.zeros((2, 224, 224, 3), np.float32))


def test_bf16_is_selectable_and_close_to_fp32(tiny_clip, tiny_clip_dir, pixels):
    bf16 = load_clip(tiny_clip_dir, device="cpu", precision="bf16")
    assert bf16.dtype == torch.bfloat16
    cos = np.sum(bf16.encode(pixels) * tiny_clip.encode(pixels), axis=1)
    assert cos.min() > 0.99
    with pytest.raises(ValueError, match="precision must be one of"):
        load_clip(tiny_clip_dir, device="cpu", precision="int3")


def test_precision_defaults():
    assert resolve_precision(None, torch.device("cpu")) == torch.float32
    assert resolve_precision(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_precision("FP16", torch.device("cpu")) == torch.float16


def test_full_clip_checkpoint_loads_the_vision_tower(tiny_full_clip_dir, pixels):
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    encoder = load_clip(tiny_full_clip_dir, device="cpu")  # text-tower weights are ignored
    assert encoder.encode(pixels[:2]).shape == (2, 768)
    assert hf_logging.get_verbosity() == before  # load-report silencing is undone


def test_preprocessor_config_is_honoured(tiny_clip_dir, tmp_path, pixels):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_clip_dir, folder)
    cfg_path = folder / "preprocessor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    cfg_path.write_text(json.dumps(cfg))
    encoder = load_clip(folder, device="cpu")
    assert encoder.preprocessing.mean == (0.5, 0.5, 0.5)
    x = encoder.preprocess(pixels[:1])
    expected = torch.from_numpy(pixels[:1]).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


def test_legacy_int_sizes_and_missing_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"crop_size": 336, "size": 336}))
    assert Preprocessing.from_dir(tmp_path, 224).image_size == 336
    assert Preprocessing.from_dir(tmp_path / "nothing", 224) == Preprocessing()


def test_cuda_oom_halves_the_batch(tiny_clip_dir, pixels, monkeypatch):
    encoder = load_clip(tiny_clip_dir, device="cpu", batch_size=4)
    sizes: list[int] = []
    real = encoder._embed

    def flaky(chunk):
        sizes.append(len(chunk))
        if len(chunk) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(chunk)

    monkeypatch.setattr(encoder, "_embed", flaky)
    emb = encoder.encode(pixels)
    assert emb.shape == (5, 768)
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}
    assert encoder.batch_size == 4  # the smaller batch was for that call only
    reference = load_clip(tiny_clip_dir, device="cpu").encode(pixels)
    np.testing.assert_allclose(emb, reference, atol=1e-5)


def test_cublas_allocation_failure_halves_then_restores_the_batch(
    tiny_clip_dir, pixels, monkeypatch
):
    """cuBLAS reports running out of memory as a RuntimeError, not torch.OutOfMemoryError."""
    encoder = load_clip(tiny_clip_dir, device="cpu", batch_size=4)
    sizes: list[int] = []
    real = encoder._embed

    def flaky(chunk):
        sizes.append(len(chunk))
        if len(chunk) > 2:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate")
        return real(chunk)

    monkeypatch.setattr(encoder, "_embed", flaky)
    emb = encoder.encode(pixels)
    assert sizes == [4, 2, 2, 1] and encoder.batch_size == 4
    reference = load_clip(tiny_clip_dir, device="cpu").encode(pixels)
    np.testing.assert_allclose(emb, reference, atol=1e-5)
    sizes.clear()
    encoder.encode(pixels[:4])
    assert sizes == [4, 2, 2]  # the next call tries the full batch again


def test_other_runtime_errors_are_not_taken_for_memory(tiny_clip, pixels, monkeypatch):
    def broken(chunk):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(tiny_clip, "_embed", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        tiny_clip.encode(pixels)


def test_staging_buffer_made_in_inference_mode_is_writable_outside_it(tiny_clip, pixels):
    """The upload buffer first made inside ``encode`` (inference mode) is reused outside it."""
    tiny_clip._staging = None
    with torch.inference_mode():
        tiny_clip._stage(torch.from_numpy(pixels[:2]))
    host = tiny_clip._stage(torch.from_numpy(pixels[:1]))  # outside: writes the same buffer
    assert not tiny_clip._staging.is_inference()
    np.testing.assert_array_equal(host.numpy(), pixels[:1])


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match="pixsieve models download"):
        load_clip()  # the pinned OpenAI model is not in the empty, offline cache
    with pytest.raises(ModelUnavailableError, match="cannot load a CLIP vision model"):
        load_clip(tmp_path, device="cpu")  # an empty folder


@pytest.mark.gpu
def test_cuda_defaults_to_bf16_and_matches_cpu(tiny_clip, tiny_clip_dir, pixels):
    gpu = load_clip(tiny_clip_dir)  # device="auto"
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    cos = np.sum(gpu.encode(pixels) * tiny_clip.encode(pixels), axis=1)
    assert cos.min() > 0.99
