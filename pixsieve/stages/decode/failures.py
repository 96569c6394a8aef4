"""Telling a bad image from a broken accelerator when a batch decode call raises.

A batch decoder raises for the whole call when one image is bad, and the accelerated stages
then bisect the call down to the CPU decoder. That is right for bad images only: an
out-of-memory error, a CUDA error or a bug (a ``TypeError`` in the resize, say) would
otherwise silently turn every image into CPU decoding. :func:`classify` sorts an exception
into one of three kinds; :class:`AcceleratorError` is what the stage raises for the last.
"""

from __future__ import annotations

from pixsieve.device_errors import is_device_error, is_out_of_memory

BAD_IMAGE = "bad_image"
"""Probably the data: split the call and let the CPU decoder judge the culprits."""
OUT_OF_MEMORY = "out_of_memory"
"""The call was too large for the device: split it, but never send its images to the CPU."""
SYSTEMATIC = "systematic"
"""The decoder itself failed (device error, a bug): raise, do not decode around it."""

IMAGE_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, OSError)
"""What batch decoders raise for bad data (DALI and torchvision: ``RuntimeError``; Pillow,
in tests: ``OSError``). Anything else is a bug, not an image."""

SYSTEMATIC_MIN_IMAGES = 16
"""A batch whose accelerated calls all failed the same way, on at least this many JPEGs that
the CPU decoder then read, is a systematic failure (a bug in the resize, say)."""


class AcceleratorError(RuntimeError):
    """The accelerated decoder failed for a reason that is not a bad image."""


def classify(error: BaseException) -> str:
    """:data:`BAD_IMAGE`, :data:`OUT_OF_MEMORY` or :data:`SYSTEMATIC` for a failed call."""
    if is_out_of_memory(error):
        return OUT_OF_MEMORY
    if isinstance(error, NotImplementedError | RecursionError):
        return SYSTEMATIC  # RuntimeError subclasses that no bad image raises
    if not isinstance(error, IMAGE_ERRORS) or is_device_error(error):
        return SYSTEMATIC
    return BAD_IMAGE


def describe(error: BaseException) -> str:
    """``Type: first line of the message`` (how failures are compared and reported)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}"
