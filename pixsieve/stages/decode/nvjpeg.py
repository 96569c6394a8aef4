"""GPU JPEG decoding with torchvision (``torchvision.io.decode_jpeg``: batched nvJPEG).

Install with ``pip install 'pixsieve[gpu]'`` (a CUDA build of torchvision).
"""

from __future__ import annotations

import importlib.util
import io
from typing import Any, ClassVar

import torch

from pixsieve.extras import TORCHVISION_HINT, MissingExtraError
from pixsieve.io.jpeg_header import JpegHeader
from pixsieve.stages.decode.accelerated import AcceleratedDecodeStage
from pixsieve.stages.decode.base import resolve_decode_device


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
    :class:`~pixsieve.stages.decode.accelerated.AcceleratedDecodeStage` for the arguments and the
    routing of what nvJPEG is not given or fails on to the CPU decoder.
    """

    backend: ClassVar[str] = "nvjpeg"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if importlib.util.find_spec("torchvision") is None:
            raise MissingExtraError(TORCHVISION_HINT)
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


def torchvision_decodes_on_gpu() -> bool:
    """Whether torchvision's GPU JPEG decoder can be imported (not whether it runs)."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # a torchvision build that does not match torch
        return False
    return True
