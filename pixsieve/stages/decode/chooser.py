"""Which decode stage runs: the fastest backend installed for the device.

:func:`choose_decoder` picks DALI (:class:`~pixsieve.stages.decode.dali.DaliDecodeStage`),
then torchvision's nvJPEG (:class:`~pixsieve.stages.decode.nvjpeg.TorchvisionDecodeStage`),
then the CPU :class:`~pixsieve.stages.decode.cpu.DecodeStage`. The stage's ``backend``
attribute names the choice; ``run.json`` records it as ``decoder``. Nothing here imports
torch, DALI or torchvision until a GPU backend is asked about.
"""

from __future__ import annotations

import logging
from typing import Any

from pixsieve.stages.decode.base import DecoderStage, resolve_decode_device
from pixsieve.stages.decode.cpu import DecodeStage

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("dali", "nvjpeg", "pillow")
CPU_ONLY: tuple[str, ...] = ("max_decode_bytes", "decode_timeout")
"""The CPU decoder's own limits (the GPU stages do not take them)."""
CPU_SETTINGS: tuple[str, ...] = (
    "image_size",
    "max_pixels",
    "max_full_decode_pixels",
    "threads",
    *CPU_ONLY,
)
"""The settings the CPU decoder takes (the GPU stages take more: ``batch_size``...)."""


def available_backends(device: str = "auto") -> list[str]:
    """Backends that can run on ``device``, fastest first (``pillow`` is always there)."""
    from pixsieve.stages.decode.dali import dali_available

    out = []
    if dali_available():
        out.append("dali")  # runs CPU-only too, but the CPU DecodeStage is the CPU default
    if resolve_decode_device(device).type == "cuda":
        from pixsieve.stages.decode.nvjpeg import torchvision_decodes_on_gpu

        if torchvision_decodes_on_gpu():
            out.append("nvjpeg")
    return [*out, "pillow"]


def choose_decoder(device: str = "auto", backend: str = "auto", **settings: Any) -> DecoderStage:
    """The decode stage for ``device``: DALI, else torchvision nvJPEG, else the CPU decoder.

    On a CPU device ``auto`` gives the CPU :class:`DecodeStage` (``backend="pillow"``), which
    decodes JPEGs at reduced DCT scale and beats a CPU-only DALI. ``backend`` forces one of
    :data:`BACKENDS` (``ImportError`` with an install hint when it is missing). ``settings``
    go to the stage (``image_size``, ``max_pixels``, ``max_full_decode_pixels``, ``threads``;
    the GPU stages also take ``batch_size``, ``keep_on_device``...).
    """
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        on_gpu = resolve_decode_device(device).type == "cuda"
        backend = available_backends(device)[0] if on_gpu else "pillow"
    logger.info("decode backend: %s on %s", backend, device)
    if backend == "dali":
        from pixsieve.stages.decode.dali import DaliDecodeStage

        return DaliDecodeStage(device=device, **_gpu_settings(settings))
    if backend == "nvjpeg":
        from pixsieve.stages.decode.nvjpeg import TorchvisionDecodeStage

        return TorchvisionDecodeStage(device=device, **_gpu_settings(settings))
    return DecodeStage(**{k: v for k, v in settings.items() if k in CPU_SETTINGS})


def _gpu_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the CPU decoder's own limits."""
    return {k: v for k, v in settings.items() if k not in CPU_ONLY}
