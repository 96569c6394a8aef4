"""CPU decode stage: image bytes → model-sized RGB pixels, in a thread pool.

Pillow releases the GIL while it decodes and resizes, so threads use every core without the
cost of shipping bytes to other processes. A sample that does not decode becomes an ``error``
with the decoder's reason; the rest of the batch goes on.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np

from pixsieve.batch import ERROR, ImageBatch
from pixsieve.io.decode import (
    DEFAULT_DECODE_TIMEOUT,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_FULL_DECODE_PIXELS,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    decode_or_error,
)
from pixsieve.stages.base import Resources, Stage


class DecodeStage(Stage):
    """Decode every still-kept sample's image to ``(size, size, 3)`` uint8 pixels."""

    name: ClassVar[str] = "decode"
    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def __init__(
        self,
        image_size: int = 224,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS,
        threads: int | None = None,
        max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
        decode_timeout: float = DEFAULT_DECODE_TIMEOUT,
    ) -> None:
        self.image_size = image_size
        self.max_pixels = max_pixels
        self.max_full_decode_pixels = max_full_decode_pixels
        self.max_decode_bytes = max_decode_bytes
        self.decode_timeout = decode_timeout
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def setup(self) -> None:
        """Start the decode thread pool (one thread per core unless set)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads or os.cpu_count() or 1)

    def _decode(self, data: bytes | None) -> DecodedImage | DecodeError:
        return decode_or_error(
            data,
            self.image_size,
            self.max_pixels,
            self.max_full_decode_pixels,
            self.max_decode_bytes,
            self.decode_timeout,
        )

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Decode the batch; failures become ``error`` rows with a reason."""
        self.setup()
        assert self._pool is not None
        n, s = len(batch), self.image_size
        pixels = np.zeros((n, s, s, 3), dtype=np.uint8)
        width = np.zeros(n, dtype=np.int32)
        height = np.zeros(n, dtype=np.int32)
        fmt = np.full(n, None, dtype=object)
        todo = np.flatnonzero(batch.alive)
        items = [batch.image_bytes[i] for i in todo]
        if self._pool._max_workers == 1:  # one thread: skip the hand-offs
            results = map(self._decode, items)
        else:
            results = self._pool.map(self._decode, items)
        failed = np.zeros(n, dtype=bool)
        reasons: list[str] = [""] * n
        for i, res in zip(todo, results, strict=True):
            if isinstance(res, DecodeError):
                failed[i] = True
                reasons[i] = res.reason
            else:
                pixels[i] = res.pixels
                width[i], height[i] = res.width, res.height
                fmt[i] = res.format
        batch.pixels, batch.width, batch.height = pixels, width, height
        batch.set_column("format", fmt)
        batch.drop(failed, reasons, status=ERROR)
        return batch
