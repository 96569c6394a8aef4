"""Pytest plugin: a tiny random CLIP model, the real LAION head weights, and a no-network guard.

``tiny_clip_dir`` is a 2-layer, 64-wide CLIP ViT (patch 14, image 224, projection 768) saved
with ``save_pretrained`` plus a Pillow-backend ``CLIPImageProcessor`` config, so tests load it
through the real loader exactly like the OpenAI checkpoint, in well under a second.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fixtures_data import AESTHETIC_PTH, GOLDEN, NSFW_PTH, PHOTOS, RATING_EMBEDDINGS, WEIGHTS

if TYPE_CHECKING:
    from pixsieve.models.clip import ClipEncoder

__all__ = ["AESTHETIC_PTH", "GOLDEN", "NSFW_PTH", "PHOTOS", "RATING_EMBEDDINGS", "WEIGHTS"]

TINY_CLIP = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 768,
}


def _save_tiny_clip(folder: Path, full_model: bool = False) -> Path:
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPTextConfig,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    vision = CLIPVisionConfig(**TINY_CLIP)
    if full_model:  # the layout of the real OpenAI repo: text and vision towers together
        text = CLIPTextConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        )
        config = CLIPConfig(
            text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=768
        )
        model: torch.nn.Module = CLIPModel(config)
    else:
        model = CLIPVisionModelWithProjection(vision)
    model.save_pretrained(folder)
    CLIPImageProcessorPil().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random ``CLIPVisionModelWithProjection`` and its processor config."""
    return _save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_full_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random full ``CLIPModel`` (text + vision), like the OpenAI repo."""
    return _save_tiny_clip(tmp_path_factory.mktemp("tiny-full-clip"), full_model=True)


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir: Path) -> ClipEncoder:
    """The tiny model loaded once through :func:`pixsieve.models.load_clip` (CPU, fp32)."""
    from pixsieve.models import load_clip

    return load_clip(tiny_clip_dir, device="cpu", batch_size=4)


def _is_local(host: object) -> bool:
    return str(host) in {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty ``PIXSIEVE_CACHE``, ``HF_HUB_OFFLINE=1`` and no non-loopback sockets.

    Returns the cache folder. Any attempt to reach the network fails the test loudly.
    """
    cache = tmp_path / "pixsieve-cache"
    monkeypatch.setenv("PIXSIEVE_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(host):
            raise AssertionError(f"test tried to reach the network: {address!r}")
        real_connect(self, address)

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if not _is_local(host):
            raise AssertionError(f"test tried to resolve a host name: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return cache
