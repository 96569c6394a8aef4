"""Pytest plugin: a tiny random CLIP model, the real LAION head weights, and a no-network guard.

``tiny_clip_dir`` is a tiny random full ``CLIPModel`` laid out like the OpenAI repo: a 2-layer,
64-wide ViT (patch 14, image 224) and a 1-layer, 32-wide text tower, both projecting to 768,
saved with ``save_pretrained`` plus a Pillow-backend ``CLIPImageProcessor`` config and CLIP's
real tokenizer files (``vocab.json`` and ``merges.txt`` derived from OpenAI's BPE vocabulary in
``tests/data/clip_tokenizer``), so tests load both towers through the real loaders exactly like
the OpenAI checkpoint, in well under a second. ``tiny_vision_clip_dir`` is the vision tower alone.
"""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fixtures_data import AESTHETIC_PTH, GOLDEN, NSFW_PTH, PHOTOS, RATING_EMBEDDINGS, WEIGHTS

if TYPE_CHECKING:
    from pixsieve.models.clip import ClipEncoder

TOKENIZER_DATA = Path(__file__).resolve().parent / "data" / "clip_tokenizer"
BPE_VOCAB = TOKENIZER_DATA / "bpe_simple_vocab_16e6.txt.gz"
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


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars), strict=True))


def save_clip_tokenizer(folder: Path) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` derived from OpenAI's ``bpe_simple_vocab_16e6``.

    The same construction as OpenAI's ``simple_tokenizer.py``: 256 byte symbols, the same with
    the end-of-word marker ``</w>``, the first 48,894 merges in order, then the start and end
    markers (ids 49406 and 49407), 49,408 tokens in all.
    """
    lines = gzip.decompress(BPE_VOCAB.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


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
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            projection_dim=768,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=1,
        )
        config = CLIPConfig(
            text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=768
        )
        model: torch.nn.Module = CLIPModel(config)
        save_clip_tokenizer(folder)
    else:
        model = CLIPVisionModelWithProjection(vision)
    model.save_pretrained(folder)
    CLIPImageProcessorPil().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random full ``CLIPModel`` (both towers) and its tokenizer files."""
    return _save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), full_model=True)


@pytest.fixture(scope="session")
def tiny_full_clip_dir(tiny_clip_dir: Path) -> Path:
    """The same folder as ``tiny_clip_dir`` (the layout of the OpenAI repo: both towers)."""
    return tiny_clip_dir


@pytest.fixture(scope="session")
def tiny_vision_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random ``CLIPVisionModelWithProjection`` alone (no text tower)."""
    return _save_tiny_clip(tmp_path_factory.mktemp("tiny-vision-clip"))


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
