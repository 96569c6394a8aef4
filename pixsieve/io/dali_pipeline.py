"""A NVIDIA DALI pipeline that turns JPEG bytes into model-sized RGB pixels.

The bytes come from pixsieve's own tar reader through ``fn.external_source`` (the reader keeps
sample grouping, keys, sidecars and bad-input accounting). Per image, the pipeline decodes
(``fn.decoders.image``: nvJPEG and the hardware JPEG engines with ``device="mixed"``,
libjpeg-turbo on the CPU), then resizes the source box that maps onto the centre crop straight
to ``size × size`` (``fn.resize`` with an absolute ROI, bicubic, antialiased). The box is the
one :func:`pixsieve.io.decode._resize_crop` uses (shortest side → ``size``, long side
truncated, crop offsets floored), so the geometry is exactly the CPU decoder's. EXIF
orientation is *not* applied here (``adjust_orientation=False``): the caller rotates the small
output, as the CPU decoder does, so both agree even where EXIF parsers differ.

DALI raises for the whole batch when one image fails; the caller decides what to do.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


def crop_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """Source box ``(y0, x0, y1, x1)`` that the CPU decoder resizes to ``size × size``."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    sx, sy = width / new_w, height / new_h
    return top * sy, left * sx, (top + size) * sy, (left + size) * sx


def _graph(size: int, on_gpu: bool, hw_decoder_load: float) -> Any:
    """DALI graph: encoded bytes + crop box in, ``(size, size, 3)`` uint8 HWC out."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    data = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1)
    box = fn.external_source(name="box", dtype=types.FLOAT, ndim=1)
    gpu_args: dict[str, Any] = {"hw_decoder_load": hw_decoder_load} if on_gpu else {}
    images = fn.decoders.image(
        data,
        device="mixed" if on_gpu else "cpu",
        output_type=types.RGB,
        adjust_orientation=False,
        **gpu_args,
    )
    return fn.resize(
        images,
        size=[size, size],
        roi_start=box[0:2],
        roi_end=box[2:4],
        roi_relative=False,
        interp_type=types.INTERP_CUBIC,
        antialias=True,
    )


class DaliJpegDecoder:
    """A built DALI pipeline; :meth:`decode` runs one batch of at most ``batch_size`` images.

    Args:
        size: output side in pixels.
        batch_size: the most images one :meth:`decode` call takes.
        threads: DALI CPU worker threads.
        device_id: CUDA device for ``mixed`` decoding and GPU resizing; ``None`` runs on CPU.
        hw_decoder_load: share of JPEGs sent to the hardware JPEG engines (A100/H100) on GPU.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        threads: int,
        device_id: int | None,
        hw_decoder_load: float = 0.65,
    ) -> None:
        from nvidia.dali import pipeline_def

        self.size = size
        self.batch_size = batch_size
        self.device_id = device_id
        self._lock = threading.Lock()
        build = pipeline_def(
            batch_size=batch_size,
            num_threads=max(1, threads),
            device_id=device_id,
            exec_dynamic=True,  # recovers after a failed batch; errors surface in run()
            prefetch_queue_depth=1,  # run() returns this batch's output, not a queued one
        )(_graph)
        self._pipe = build(size=size, on_gpu=device_id is not None, hw_decoder_load=hw_decoder_load)
        self._pipe.build()

    def decode(self, items: list[bytes], boxes: np.ndarray, on_device: bool = False) -> Any:
        """Decode ``items`` to ``(M, size, size, 3)`` uint8; raise if any image fails.

        Returns a NumPy array, or with ``on_device=True`` on GPU a CUDA ``torch.Tensor``
        (no host round trip).
        """
        if not 0 < len(items) <= self.batch_size:
            raise ValueError(f"expected 1..{self.batch_size} images, got {len(items)}")
        with self._lock:
            self._pipe.feed_input("jpeg", [np.frombuffer(b, dtype=np.uint8) for b in items])
            self._pipe.feed_input("box", [np.asarray(b, dtype=np.float32) for b in boxes])
            (out,) = self._pipe.run()
            if self.device_id is None:
                return np.array(out.as_array(), dtype=np.uint8, copy=True)
            if not on_device:
                return np.array(out.as_cpu().as_array(), dtype=np.uint8, copy=True)
            return _to_torch(out.as_tensor(), self.device_id)


def _to_torch(tensor: Any, device_id: int) -> Any:
    """Copy a DALI ``TensorGPU`` into a new CUDA ``torch.Tensor`` (DALI reuses its buffers)."""
    import torch
    from nvidia.dali.plugin.pytorch import feed_ndarray

    out = torch.empty(tuple(tensor.shape()), dtype=torch.uint8, device=f"cuda:{device_id}")
    feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(device_id))
    return out
