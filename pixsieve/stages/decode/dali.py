"""DALI decode stage: JPEG bytes → model-sized pixels with NVIDIA DALI (GPU, or CPU-only).

On CUDA, JPEGs are decoded by nvJPEG and the hardware JPEG engines (``device="mixed"``) and
resized on the GPU; with ``device="cpu"`` the same pipeline runs on libjpeg-turbo
(``device_id=None``), which is how the tests run it without a GPU. Everything DALI is not
given, or fails on, is decoded by the CPU decoder (see
:mod:`pixsieve.stages.decode.accelerated`). Install with ``pip install -e '.[dali]'`` in the
checkout.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np
import torch

from pixsieve.extras import DALI_HINT, MissingExtraError
from pixsieve.io.jpeg_header import JpegHeader
from pixsieve.stages.decode.accelerated import AcceleratedDecodeStage


def dali_available() -> bool:
    """Whether ``nvidia.dali`` can be found (not imported: that takes a second)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # no ``nvidia`` namespace package at all
        return False


class DaliDecodeStage(AcceleratedDecodeStage):
    """Decode still-kept samples with a DALI pipeline; same contract as ``DecodeStage``.

    See :class:`~pixsieve.stages.decode.accelerated.AcceleratedDecodeStage` for the arguments.
    ``hw_decoder_load`` is the share of JPEGs DALI gives the hardware JPEG engines on GPU.
    """

    backend: ClassVar[str] = "dali"

    def __init__(self, *args: Any, hw_decoder_load: float = 0.65, **kwargs: Any) -> None:
        if not dali_available():
            raise MissingExtraError(DALI_HINT)
        super().__init__(*args, **kwargs)
        self.hw_decoder_load = hw_decoder_load

    def _build(self, device: torch.device) -> Any:
        """Build the DALI pipeline on ``device`` (``device_id=None`` on CPU)."""
        from pixsieve.io.dali_pipeline import DaliJpegDecoder

        device_id = None
        if device.type == "cuda":
            device_id = device.index if device.index is not None else torch.cuda.current_device()
        return DaliJpegDecoder(
            self.image_size, self.batch_size, self._threads(), device_id, self.hw_decoder_load
        )

    def _accel_decode(self, items: list[bytes], headers: list[JpegHeader]) -> Any:
        """One DALI run over ``items`` (raises for the whole call if one image fails)."""
        from pixsieve.io.dali_pipeline import crop_box

        boxes = np.array([crop_box(h.width, h.height, self.image_size) for h in headers])
        return self._accel.decode(items, boxes, on_device=self._on_device)
