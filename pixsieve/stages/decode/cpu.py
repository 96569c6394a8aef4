"""CPU decode stage: image bytes → model-sized RGB pixels, in a thread pool.

Pillow releases the GIL while it decodes and resizes, so threads use every core without the
cost of shipping bytes to other processes. A sample that does not decode becomes an ``error``
with the decoder's reason; the rest of the batch goes on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np

from pixsieve.batch import ImageBatch
from pixsieve.io.decode import (
    DEFAULT_DECODE_TIMEOUT,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_FULL_DECODE_PIXELS,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    decode_or_error,
)
from pixsieve.stages.base import Resources
from pixsieve.stages.decode.base import DecoderStage, finish, gather


class DecodeStage(DecoderStage):
    """Decode every still-kept sample's image to ``(size, size, 3)`` uint8 pixels."""

    backend: ClassVar[str] = "pillow"
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
        """Start the decode thread pool (one thread per core unless set; none for one)."""
        if self._pool is None and self._threads() > 1:
            self._pool = ThreadPoolExecutor(self._threads())

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
        todo = np.flatnonzero(batch.alive).tolist()
        items = [batch.image_bytes[i] for i in todo]
        # one thread: no pool, no hand-offs
        results = self._pool.map(self._decode, items) if self._pool else map(self._decode, items)
        pixels = np.zeros((len(batch), self.image_size, self.image_size, 3), dtype=np.uint8)
        return finish(batch, gather(len(batch), todo, results, into=pixels), pixels)


CpuDecodeStage = DecodeStage
"""The CPU decoder under the name the chooser gives it (``backend="pillow"``)."""
