"""What decoding one image may cost: memory estimated from its header, and a deadline.

* :func:`decode_bytes` estimates, from the header alone, the peak memory a decode takes for
  the image's format and mode: Pillow's pixel storage (4 bytes per RGB pixel), the conversions
  to RGB (alpha compositing makes three more full-size copies), and for progressive JPEGs
  libjpeg's whole-image coefficient buffer (2 bytes per sample, whatever the DCT scaling).
  Above ``max_decode_bytes`` the image is refused (``too_large``) before any pixel memory is
  allocated.
* :data:`BUDGET` is a process-wide budget of decode memory: concurrent decodes (threads of
  every decode stage in the process) together never hold more than ``max_decode_bytes``.
* :class:`DeadlineReader` feeds the compressed bytes to Pillow in small chunks and raises
  ``decode_timeout`` once the image's deadline has passed, so a pathological image (a
  progressive JPEG repeating one scan thousands of times) stops within a fraction of a second
  of its deadline and the decode thread goes on with the next image.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from pixsieve.io.limits import MemoryBudget

MiB = 1 << 20
DEFAULT_MAX_DECODE_BYTES: int = 512 * MiB
DEFAULT_DECODE_TIMEOUT: float = 10.0
CHUNK: int = 16384  # compressed bytes per step of Pillow's decoder (deadline granularity)
FAST_MAX_SCANS: int = 32  # more scans than this: not the uninterruptible fast path
SOS = b"\xff\xda"  # start of scan; entropy-coded data never holds it (0xFF is stuffed)

# bytes per pixel for Pillow's storage of each mode plus its conversion to RGB (to_rgb)
_PER_PIXEL: dict[str, int] = {
    "1": 5,
    "L": 5,
    "P": 5,
    "RGB": 4,
    "YCbCr": 8,
    "LAB": 8,
    "HSV": 8,
    "CMYK": 8,
    "RGBA": 20,
    "RGBa": 20,
    "LA": 20,
    "La": 20,
    "PA": 20,
    "I;16": 16,
    "I;16B": 16,
    "I;16L": 16,
    "I;16N": 16,
    "I": 18,
    "F": 18,
}
_UNKNOWN_MODE = 20


def jpeg_scans(data: bytes) -> int:
    """Number of scans in a JPEG (counted from its start-of-scan markers)."""
    return data.count(SOS)


def decode_bytes(im: Image.Image, fmt: str, size: int) -> int:
    """Peak memory (bytes) decoding ``im`` to ``size`` will take, from its header alone."""
    w, h = im.size
    if fmt == "JPEG":  # decoded with DCT scaling (draft); MPO frames are not
        scale = max(1, min(8, min(w, h) // max(size, 1)))  # DCT scaling: 1/2, 1/4, 1/8
        scale = 8 if scale >= 8 else 4 if scale >= 4 else 2 if scale >= 2 else 1
        out = (w // scale + 1) * (h // scale + 1) * _PER_PIXEL.get(im.mode, _UNKNOWN_MODE)
        layers = getattr(im, "layer", None) or []
        sampling = [hh * vv for _, hh, vv, _ in layers] or [1] * len(im.getbands())
        full = max(sampling) if sampling else 1
        coefficients = 0
        if im.info.get("progressive") or im.info.get("progression"):
            coefficients = int(w * h * 2 * sum(sampling) / full)
        return out + coefficients + w * 16 * 4 * 3
    per_pixel = _PER_PIXEL.get(im.mode, _UNKNOWN_MODE)
    if im.mode == "P" and "transparency" in im.info:
        per_pixel = _PER_PIXEL["RGBA"] + 1
    return w * h * per_pixel


@contextmanager
def held(n: int, capacity: int) -> Iterator[None]:
    """Hold ``n`` bytes of :data:`BUDGET` for the duration of the ``with`` block."""
    BUDGET.acquire(n, capacity)
    try:
        yield
    finally:
        BUDGET.release(n)


BUDGET = MemoryBudget()  # decoder memory of every decode running in this process


class DecodeTimeout(Exception):
    """The image's decode deadline passed."""


class DeadlineReader(io.BytesIO):
    """Compressed bytes for Pillow, handed over in chunks until a deadline passes."""

    def __init__(self, data: bytes, seconds: float) -> None:
        super().__init__(data)
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def read(self, size: int | None = -1) -> bytes:
        """Read as ``BytesIO`` does; raise :class:`DecodeTimeout` after the deadline."""
        if time.monotonic() > self.deadline:
            raise DecodeTimeout(f"not decoded within decode_timeout={self.seconds:g}s")
        return super().read(size)
