"""CPU image decoding straight to the size the model needs.

JPEGs are decoded by libjpeg-turbo at a DCT-domain scale (1/2, 1/4 or 1/8, the smallest that
keeps the shortest side ≥ ``size``) with its fast IDCT and upsampling, through simplejpeg;
Pillow's ``draft()`` does the same where simplejpeg cannot (CMYK, arithmetic coding, corrupt
data), so a 4000-px photo is never decoded at full resolution. The image
is then resized so its shortest side equals ``size`` (bicubic, like CLIP's processor), centre
cropped to ``size × size``, converted to RGB and rotated by its EXIF orientation.

The decompression-bomb guard reads the declared size from the header and refuses images above
``max_pixels`` before any pixel memory is allocated. Formats without DCT downscaling (PNG, WebP,
...) are decoded at full size, so they are also held to ``max_full_decode_pixels``; every image
is also held to ``max_decode_bytes`` of estimated decoder memory for its format and mode, and to
a ``decode_timeout`` deadline (see :mod:`pixsieve.io.decode_limits`). Only the formats in
:data:`FORMATS` are opened (no PostScript, no exotic Pillow plugins).
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pixsieve.io.decode_limits import (
    CHUNK,
    DEFAULT_DECODE_TIMEOUT,
    DEFAULT_MAX_DECODE_BYTES,
    FAST_MAX_SCANS,
    DeadlineReader,
    DecodeTimeout,
    decode_bytes,
    held,
    jpeg_scans,
)

try:  # libjpeg-turbo with fast scaled IDCT; Pillow's draft() is the fallback
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dependency
    simplejpeg = None

# Pillow refuses images above its own limit inside Image.open(), before we can look at the
# format: our guard below replaces it (stricter for formats decoded at full size).
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS: int = 16384 * 16384
DEFAULT_MAX_FULL_DECODE_PIXELS: int = 89_478_485  # Pillow's own default bomb limit
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_ORIENTATION_TAG = 0x0112
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


class DecodeError(Exception):
    """An image could not be decoded; ``reason`` is the manifest reason (``code: detail``)."""

    def __init__(self, code: str, detail: str = "") -> None:
        detail = _ADDRESS.sub("", detail).strip()  # reasons must not vary between runs
        self.code = code
        self.reason = f"{code}: {detail}" if detail else code
        super().__init__(self.reason)


@dataclass(frozen=True)
class DecodedImage:
    """Model-sized pixels plus the original (EXIF-oriented) dimensions and format."""

    pixels: np.ndarray
    width: int
    height: int
    format: str


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1–8) to an HWC array."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparent pixels are composited onto white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _resize_crop(im: Image.Image, size: int) -> Image.Image:
    """Shortest side → ``size`` (bicubic), then centre crop ``size × size`` (HF CLIP rules).

    Done in one resampling call over the source box that maps onto the crop: within one grey
    level of resizing everything and cropping afterwards (rounding differs), for less work.
    """
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    if (new_w, new_h) == (w, h):
        return im.crop((left, top, left + size, top + size))
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return im.resize((size, size), Image.Resampling.BICUBIC, box=box)


def _decode_jpeg_fast(data: bytes, w: int, h: int, size: int) -> Image.Image | None:
    """libjpeg-turbo scaled decode (fast IDCT and upsampling) via simplejpeg, if it can."""
    if simplejpeg is None:
        return None
    try:
        arr = simplejpeg.decode_jpeg(
            data,
            "RGB",
            fastdct=True,
            fastupsample=True,
            min_height=min(size, h),
            min_width=min(size, w),
        )
    except (ValueError, RuntimeError):
        return None  # CMYK, arithmetic coding, corrupt data...: Pillow decides
    return Image.fromarray(arr)


def decode_or_error(
    data: bytes | None,
    size: int = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT,
) -> DecodedImage | DecodeError:
    """:func:`decode_image`, returning the error instead of raising (``None`` = no image)."""
    if data is None:
        return DecodeError("missing_image")
    try:
        return decode_image(
            data, size, max_pixels, max_full_decode_pixels, max_decode_bytes, decode_timeout
        )
    except DecodeError as e:
        return e


@contextmanager
def opened(
    data: bytes,
    size: int = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT,
) -> Iterator[Image.Image]:
    """Open ``data`` with every limit checked from its header; decode inside the block.

    Inside the block the image's memory is held in the process-wide budget and its deadline
    runs (Pillow reads the bytes :data:`CHUNK` at a time). Every failure, in the block too,
    comes out as :class:`DecodeError`.
    """
    if not data:
        raise DecodeError("empty", "zero-byte image")
    src = DeadlineReader(data, decode_timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(src, formats=FORMATS)
    except Exception as e:
        raise DecodeError("decode_error", f"{type(e).__name__}: {e}") from e
    try:
        w, h = im.size
        if w * h > max_pixels:
            raise DecodeError("too_large", f"{w}x{h} exceeds max_pixels={max_pixels}")
        fmt = im.format or "unknown"
        if fmt != "JPEG" and w * h > max_full_decode_pixels:
            raise DecodeError(
                "too_large",
                f"{w}x{h} {fmt} exceeds max_full_decode_pixels={max_full_decode_pixels}",
            )
        need = decode_bytes(im, fmt, size)
        if need > max_decode_bytes:
            raise DecodeError(
                "too_large",
                f"{w}x{h} {fmt} {im.mode} needs ~{need >> 20} MiB to decode "
                f"(max_decode_bytes={max_decode_bytes})",
            )
        with held(need, max_decode_bytes):
            src.deadline = time.monotonic() + decode_timeout  # waiting for memory is not decoding
            im.decodermaxblock = CHUNK
            yield im
    except DecodeError:
        raise
    except DecodeTimeout as e:
        raise DecodeError("decode_timeout", str(e)) from e
    except Exception as e:
        raise DecodeError("decode_error", f"{type(e).__name__}: {e}") from e


def decode_image(
    data: bytes,
    size: int = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT,
) -> DecodedImage:
    """Decode ``data`` to ``(size, size, 3)`` uint8 RGB; raise :class:`DecodeError` on failure.

    Reasons: ``empty``, ``decode_error: …``, ``too_large: …`` (declared size or estimated
    decoder memory over a limit, refused from the header before any pixel memory is
    allocated) and ``decode_timeout: …`` (not decoded within ``decode_timeout`` seconds; the
    image is not tried again by another decoder).
    """
    with opened(
        data, size, max_pixels, max_full_decode_pixels, max_decode_bytes, decode_timeout
    ) as im:
        fmt = im.format or "unknown"
        w, h = im.size
        pixels, orientation = _pixels(im, data, fmt, size)
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    pixels = np.ascontiguousarray(_orient(pixels, orientation))
    return DecodedImage(pixels=pixels, width=w, height=h, format=fmt)


def _pixels(im: Image.Image, data: bytes, fmt: str, size: int) -> tuple[np.ndarray, int]:
    """Model-sized pixels of an opened image (limits already checked) and its orientation.

    JPEGs with few scans go to libjpeg-turbo in one call; everything else is fed to Pillow
    :data:`CHUNK` bytes at a time through the image's :class:`DeadlineReader`.
    """
    w, h = im.size
    orientation = 1
    try:
        orientation = int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # a broken EXIF block does not make the pixels unusable
        orientation = 1
    fast = None
    if fmt == "JPEG" and im.mode != "CMYK" and jpeg_scans(data) <= FAST_MAX_SCANS:
        fast = _decode_jpeg_fast(data, w, h, size)
    if fast is not None:
        im = fast
    elif fmt == "JPEG":
        scale = size / min(w, h)
        im.draft("RGB", (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999))))
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im.load()
    im = to_rgb(im)
    return np.asarray(_resize_crop(im, size), dtype=np.uint8), orientation
