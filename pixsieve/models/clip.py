"""CLIP image encoder: model-sized uint8 pixels in, unit-norm embeddings out.

Resizing and centre cropping happen in the reader (:func:`pixsieve.io.decode.decode_image`),
so this module only rescales and normalises, vectorised on the model's device, then runs
``transformers.CLIPVisionModelWithProjection`` under ``torch.inference_mode``. Mean, std, scale
and crop size come from the model folder's ``preprocessor_config.json`` (OpenAI's constants when
it has none), so the pixels the model sees match its own Hugging Face image processor.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixsieve.device_errors import is_out_of_memory
from pixsieve.models.hub import ModelUnavailableError, resolve_clip

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects of its input: square size, rescale factor, per-channel mean/std."""

    image_size: int = 224
    rescale: float = 1 / 255
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD

    @classmethod
    def from_dir(cls, model_dir: Path, default_size: int) -> Preprocessing:
        """Read ``preprocessor_config.json`` (old int or new dict sizes); defaults without it."""
        path = model_dir / "preprocessor_config.json"
        if not path.is_file():
            return cls(image_size=default_size)
        cfg: dict[str, Any] = json.loads(path.read_text())
        crop = cfg.get("crop_size", cfg.get("size", default_size))
        if isinstance(crop, dict):
            crop = crop.get("height", crop.get("shortest_edge", default_size))
        normalize = bool(cfg.get("do_normalize", True))
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        return cls(
            image_size=int(crop),
            rescale=rescale,
            mean=tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)) if normalize else (0.0,) * 3,
            std=tuple(cfg.get("image_std", OPENAI_CLIP_STD)) if normalize else (1.0,) * 3,
        )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype:
    """``None`` → bf16 on CUDA, fp32 elsewhere; else one of :data:`PRECISIONS`."""
    if precision is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return PRECISIONS[precision.lower()]
    except KeyError:
        choices = sorted(PRECISIONS)
        raise ValueError(f"precision must be one of {choices}, got {precision!r}") from None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence load reports and progress bars (e.g. the text tower's unused weights)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class ClipEncoder:
    """A loaded CLIP vision tower with projection. Use :func:`load_clip` to build one."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: Preprocessing,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
        source: Path,
    ) -> None:
        self.model = model
        self.preprocessing = preprocessing
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.source = source
        self.projection_dim = int(model.config.projection_dim)
        shape = (1, -1, 1, 1)
        self._mean = torch.tensor(preprocessing.mean, device=device).view(shape)
        self._std = torch.tensor(preprocessing.std, device=device).view(shape)
        self._staging: torch.Tensor | None = None  # page-locked upload buffer (CUDA)
        self._uploaded: torch.cuda.Event | None = None

    def describe(self) -> dict[str, Any]:
        """Settings for ``run.json``."""
        return {
            "source": str(self.source),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "projection_dim": self.projection_dim,
            "image_size": self.preprocessing.image_size,
        }

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Host → GPU through a reused page-locked buffer with a non-blocking copy."""
        if t.device == self.device or self.device.type != "cuda" or t.device.type != "cpu":
            return t.to(self.device)
        if self._uploaded is not None:
            self._uploaded.synchronize()  # the previous upload has left the buffer
        out = self._stage(t).to(self.device, non_blocking=True)
        self._uploaded = torch.cuda.Event()
        self._uploaded.record()
        return out

    def _stage(self, t: torch.Tensor) -> torch.Tensor:
        """Copy host ``t`` into the reused staging buffer (page-locked on CUDA); return it.

        The buffer is made outside inference mode: made inside (by ``encode``), it would be an
        inference tensor that a later ``preprocess()`` outside inference mode cannot write.
        """
        if self._staging is None or self._staging.numel() < t.numel():
            with torch.inference_mode(False):
                pin = self.device.type == "cuda"
                self._staging = torch.empty(t.numel(), dtype=torch.uint8, pin_memory=pin)
        host = self._staging[: t.numel()].view(t.shape)
        host.copy_(t)
        return host

    def preprocess(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(N, S, S, 3)`` uint8 → ``(N, 3, S, S)`` normalised tensor on the model's device.

        ``pixels`` may be a NumPy array or a torch tensor, on the host or already on the GPU
        (a GPU decoder's output is used without a round trip through host memory).
        """
        size = self.preprocessing.image_size
        if isinstance(pixels, torch.Tensor):
            if pixels.dtype != torch.uint8:
                raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
            t = pixels
        else:
            if pixels.dtype != np.uint8:
                raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
            arr = np.ascontiguousarray(pixels)
            t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        if t.ndim != 4 or tuple(t.shape[1:]) != (size, size, 3):
            raise ValueError(f"pixels must have shape (N, {size}, {size}, 3), got {tuple(t.shape)}")
        t = self._to_device(t.contiguous())
        t = t.permute(0, 3, 1, 2).to(torch.float32) * self.preprocessing.rescale
        return ((t - self._mean) / self._std).to(self.dtype)

    def _embed(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=self.preprocess(pixels))
        emb = out.image_embeds
        expected = (len(pixels), self.projection_dim)
        if not isinstance(emb, torch.Tensor) or tuple(emb.shape) != expected:
            got = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise RuntimeError(f"expected image_embeds of shape {expected}, got {got}")
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def encode(
        self, pixels: np.ndarray | torch.Tensor, batch_size: int | None = None
    ) -> np.ndarray:
        """Embed ``(N, S, S, 3)`` uint8 pixels → ``(N, D)`` float32, L2-normalised.

        Runs in chunks of ``batch_size``; when the device runs out of memory (a CUDA OOM, or a
        cuBLAS allocation failure, which arrives as a ``RuntimeError``) the chunk is halved and
        retried for the rest of this call; the next call starts at ``batch_size`` again.
        """
        if not isinstance(pixels, torch.Tensor):
            pixels = np.asarray(pixels)
        if len(pixels) == 0:
            self.preprocess(pixels.reshape(0, *pixels.shape[1:]))  # validate shape and dtype
            return np.zeros((0, self.projection_dim), dtype=np.float32)
        step = max(1, batch_size or self.batch_size)
        out: list[torch.Tensor] = []
        start = 0
        while start < len(pixels):
            chunk = pixels[start : start + step]
            try:
                out.append(self._embed(chunk))  # stays on the device until the end
            except RuntimeError as e:  # torch.OutOfMemoryError is one
                if step == 1 or not is_out_of_memory(e):
                    raise
                step //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning("out of device memory; retrying with batch size %d", step)
                continue
            start += len(chunk)
        return torch.cat(out).cpu().numpy().astype(np.float32, copy=False)


def load_clip(
    model: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    device: str | torch.device = "auto",
    precision: str | None = None,
    batch_size: int = 64,
) -> ClipEncoder:
    """Load a CLIP vision encoder from a local folder, a known name or a Hub id.

    ``model=None`` is the pinned OpenAI ViT-L/14. ``device="auto"`` picks CUDA when present;
    ``precision`` is ``"fp32"``, ``"bf16"`` or ``"fp16"`` (default bf16 on CUDA, fp32 on CPU).
    """
    from transformers import CLIPVisionModelWithProjection

    path = resolve_clip(model, revision)
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    try:
        with _quiet_transformers():
            net = CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot load a CLIP vision model from {path}: {exc}") from exc
    net = net.to(dev).eval().requires_grad_(False)
    prep = Preprocessing.from_dir(path, default_size=int(net.config.image_size))
    return ClipEncoder(net, prep, dev, dtype, batch_size, path)
