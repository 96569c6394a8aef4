"""GPU JPEG decoding with torchvision (nvJPEG), and the decode-backend chooser.

:func:`choose_decoder` picks, for a device, the fastest decode stage that is installed:
DALI (:class:`~pixsieve.stages.dali_decode.DaliDecodeStage`), then torchvision's nvJPEG
(:class:`TorchvisionDecodeStage`), then the CPU :class:`~pixsieve.stages.decode.DecodeStage`.
The stage's ``backend`` attribute names the choice; ``run.json`` records it as ``decoder``.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from typing import Any, ClassVar

import torch

from pixsieve.io.jpeg_header import JpegHeader
from pixsieve.stages.accel_decode import AcceleratedDecodeStage, resolve_decode_device
from pixsieve.stages.base import Stage
from pixsieve.stages.decode import DecodeStage

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("dali", "nvjpeg", "pillow")
TORCHVISION_HINT = "torchvision is not installed: pip install 'pixsieve[gpu]' (a CUDA build)"


class CpuDecodeStage(DecodeStage):
    """The CPU :class:`DecodeStage` (simplejpeg + Pillow), labelled with its ``backend``."""

    backend: ClassVar[str] = "pillow"


def resize_crop_chw(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(3, H, W)`` uint8 → ``(size, size, 3)`` uint8: shortest side → ``size``, centre crop.

    Bicubic with antialiasing (PyTorch's Pillow-compatible kernel), then the crop the CPU
    decoder takes (long side truncated, offsets floored).
    """
    _, h, w = image.shape
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = image.unsqueeze(0).float()
    if (new_w, new_h) != (w, h):
        x = torch.nn.functional.interpolate(
            x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
        )
    x = x[0, :, top : top + size, left : left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def _probe_jpeg() -> bytes:
    """A tiny valid JPEG to check that a decoder works on the device."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(buf, "JPEG")
    return buf.getvalue()


class TorchvisionDecodeStage(AcceleratedDecodeStage):
    """Decode JPEGs with ``torchvision.io.decode_jpeg`` on CUDA (nvJPEG), batched.

    Same contract as ``DecodeStage``; see
    :class:`~pixsieve.stages.accel_decode.AcceleratedDecodeStage` for the arguments and the
    routing of what nvJPEG is not given or fails on to the CPU decoder.
    """

    backend: ClassVar[str] = "nvjpeg"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if importlib.util.find_spec("torchvision") is None:
            raise ImportError(TORCHVISION_HINT)
        super().__init__(*args, **kwargs)
        self._device = resolve_decode_device(self.device)

    def _build(self, device: torch.device) -> Any:
        """Check that torchvision decodes a JPEG on ``device``; return the device."""
        self._device = device
        try:
            self._decode_tensors([_probe_jpeg()])
        except Exception as e:
            raise RuntimeError(
                f"torchvision cannot decode JPEGs on {device}: {e} ({TORCHVISION_HINT})"
            ) from e
        return device

    def _decode_tensors(self, items: list[bytes]) -> list[torch.Tensor]:
        """Batched decode to ``(3, H, W)`` uint8 tensors on the device, no EXIF orientation."""
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in items]
        out = decode_jpeg(data, mode=ImageReadMode.RGB, device=self._device)
        return list(out) if isinstance(out, list | tuple) else [out]

    def _accel_decode(self, items: list[bytes], headers: list[JpegHeader]) -> Any:
        """Decode, resize and crop ``items``; a CUDA tensor, or NumPy when not kept there."""
        images = self._decode_tensors(items)
        out = torch.stack([resize_crop_chw(im, self.image_size) for im in images])
        return out if self._on_device else out.cpu().numpy()


def _torchvision_decodes_on_gpu() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # a torchvision build that does not match torch
        return False
    return True


def available_backends(device: str = "auto") -> list[str]:
    """Backends that can run on ``device``, fastest first (``pillow`` is always there)."""
    from pixsieve.stages.dali_decode import dali_available

    out = []
    if dali_available():
        out.append("dali")  # runs CPU-only too, but the CPU DecodeStage is the CPU default
    if resolve_decode_device(device).type == "cuda" and _torchvision_decodes_on_gpu():
        out.append("nvjpeg")
    return [*out, "pillow"]


def choose_decoder(device: str = "auto", backend: str = "auto", **settings: Any) -> Stage:
    """The decode stage for ``device``: DALI, else torchvision nvJPEG, else the CPU decoder.

    On a CPU device ``auto`` gives the CPU :class:`DecodeStage` (``backend="pillow"``), which
    decodes JPEGs at reduced DCT scale and beats a CPU-only DALI. ``backend`` forces one of
    :data:`BACKENDS` (``ImportError`` with an install hint when it is missing). ``settings``
    go to the stage (``image_size``, ``max_pixels``, ``max_full_decode_pixels``, ``threads``;
    the GPU stages also take ``batch_size``, ``keep_on_device``...).
    """
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    on_gpu = resolve_decode_device(device).type == "cuda"
    if backend == "auto":
        have = available_backends(device) if on_gpu else ["pillow"]
        backend = have[0]
    logger.info("decode backend: %s on %s", backend, device)
    cpu_only = ("max_decode_bytes", "decode_timeout")  # the CPU decoder's own limits
    if backend == "dali":
        from pixsieve.stages.dali_decode import DaliDecodeStage

        return DaliDecodeStage(
            device=device, **{k: v for k, v in settings.items() if k not in cpu_only}
        )
    if backend == "nvjpeg":
        return TorchvisionDecodeStage(
            device=device, **{k: v for k, v in settings.items() if k not in cpu_only}
        )
    cpu_keys = ("image_size", "max_pixels", "max_full_decode_pixels", "threads", *cpu_only)
    return CpuDecodeStage(**{k: v for k, v in settings.items() if k in cpu_keys})


__all__ = [
    "BACKENDS",
    "CpuDecodeStage",
    "TorchvisionDecodeStage",
    "available_backends",
    "choose_decoder",
    "resize_crop_chw",
]
