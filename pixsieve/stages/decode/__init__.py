"""The decode family: image bytes → model-sized RGB pixels, on the CPU or an accelerator.

- :mod:`~pixsieve.stages.decode.base`: :class:`DecoderStage` (the marker base: the pipeline
  finds its decoder by ``is_decoder``) and the one finish step every decoder ends with.
- :mod:`~pixsieve.stages.decode.cpu`: :class:`DecodeStage`, simplejpeg + Pillow in threads.
- :mod:`~pixsieve.stages.decode.accelerated`: the batch-decoder base (header routing, CPU
  fallback, EXIF orientation), filled by :mod:`~pixsieve.stages.decode.nvjpeg` (torchvision)
  and :mod:`~pixsieve.stages.decode.dali` (NVIDIA DALI).
- :mod:`~pixsieve.stages.decode.chooser`: :func:`choose_decoder`, the fastest installed backend.

Importing this package imports neither torch nor DALI; the accelerated modules do.
"""

from __future__ import annotations

from pixsieve.stages.decode.base import DecoderStage, find_decoder, resolve_decode_device
from pixsieve.stages.decode.chooser import BACKENDS, available_backends, choose_decoder
from pixsieve.stages.decode.cpu import CpuDecodeStage, DecodeStage

__all__ = [
    "BACKENDS",
    "CpuDecodeStage",
    "DecodeStage",
    "DecoderStage",
    "available_backends",
    "choose_decoder",
    "find_decoder",
    "resolve_decode_device",
]
