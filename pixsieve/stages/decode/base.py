"""What every decode stage shares: the marker base class and the one finish step.

Every decoder (CPU, DALI, nvJPEG) ends the same way: the CPU decoder's results
(:class:`~pixsieve.io.decode.DecodedImage` or :class:`~pixsieve.io.decode.DecodeError`) become
the ``width``/``height``/``format`` columns and ``error`` rows with the decoder's reason, and
the pixels land in ``batch.pixels``. :func:`gather` and :func:`finish` are that step, written
once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pixsieve.batch import ERROR, ImageBatch
from pixsieve.io.decode import DecodedImage, DecodeError
from pixsieve.stages.base import Stage

if TYPE_CHECKING:
    import torch


def resolve_decode_device(device: str) -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else as given."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DecoderStage(Stage):
    """Base of the decode stages: image bytes → ``(size, size, 3)`` uint8 ``batch.pixels``.

    The pipeline finds its decoder by ``is_decoder`` (and prepends a CPU
    :class:`~pixsieve.stages.decode.DecodeStage` when there is none); ``backend`` names the
    decoder in ``run.json`` (``decoder``).
    """

    name: ClassVar[str] = "decode"
    backend: ClassVar[str] = "custom"
    is_decoder: ClassVar[bool] = True
    threads: int | None = None

    def _threads(self) -> int:
        """CPU threads to use (``threads`` or one per core)."""
        return self.threads or os.cpu_count() or 1


def find_decoder(stages: Iterable[object]) -> Any | None:
    """The first stage that decodes images (``is_decoder``), or ``None``."""
    return next((s for s in stages if getattr(s, "is_decoder", False)), None)


@dataclass
class Gathered:
    """Per-row outcome of a batch's CPU decodes: sizes, formats, failures, decoded pixels."""

    width: np.ndarray
    height: np.ndarray
    fmt: np.ndarray
    failed: np.ndarray
    reasons: list[str]
    rows: list[int] = field(default_factory=list)  # rows the CPU decoder decoded
    pixels: list[np.ndarray] = field(default_factory=list)  # their pixels, in that order

    def place(self, out: np.ndarray) -> np.ndarray:
        """Copy the decoded pixels into their rows of ``out`` (``(N, S, S, 3)``)."""
        for i, px in zip(self.rows, self.pixels, strict=True):
            out[i] = px
        return out


def gather(
    n: int,
    rows: Sequence[int],
    results: Iterable[DecodedImage | DecodeError],
    into: np.ndarray | None = None,
) -> Gathered:
    """Sort the CPU decoder's ``results`` for ``rows`` of an ``n``-row batch.

    Decoded pixels go straight into their rows of ``into`` when it is given (no list held),
    else they are kept in :attr:`Gathered.pixels` for the caller to place.
    """
    out = Gathered(
        width=np.zeros(n, dtype=np.int32),
        height=np.zeros(n, dtype=np.int32),
        fmt=np.full(n, None, dtype=object),
        failed=np.zeros(n, dtype=bool),
        reasons=[""] * n,
    )
    for i, res in zip(rows, results, strict=True):
        if isinstance(res, DecodeError):
            out.failed[i], out.reasons[i] = True, res.reason
        else:
            if into is not None:
                into[i] = res.pixels
            else:
                out.rows.append(i)
                out.pixels.append(res.pixels)
            out.width[i], out.height[i], out.fmt[i] = res.width, res.height, res.format
    return out


def finish(batch: ImageBatch, gathered: Gathered, pixels: Any) -> ImageBatch:
    """Write ``pixels`` and the gathered columns into ``batch``; failures become errors."""
    batch.pixels = pixels
    batch.width, batch.height = gathered.width, gathered.height
    batch.set_column("format", gathered.fmt)
    batch.drop(gathered.failed, gathered.reasons, status=ERROR)
    return batch
