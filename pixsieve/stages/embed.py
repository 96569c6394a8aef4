"""CLIP embedding stage: decoded pixels → an ``embedding`` column of unit-norm vectors.

The model code lives in :mod:`pixsieve.models.clip`; this stage only decides which rows to
embed (those whose pixels were decoded) and where the result goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pixsieve.batch import EMBEDDING_COLUMN, ImageBatch
from pixsieve.models.hub import DEFAULT_CLIP_ID, DEFAULT_CLIP_REVISION
from pixsieve.stages.base import DeviceResources, Stage

if TYPE_CHECKING:
    from pixsieve.models.clip import ClipEncoder

__all__ = ["EMBEDDING_COLUMN", "ClipEmbedder", "ClipModelStage"]


class ClipModelStage(Stage):
    """Settings shared by the stages that run a tower of one CLIP checkpoint: which model and
    revision (the pinned OpenAI ViT-L/14 by default), device, precision, batch size. The
    loaded model (``_encoder``) is never pickled; :attr:`resources` follows the device."""

    is_model: ClassVar[bool] = True
    resources = DeviceResources()  # one GPU unless the device is the CPU

    def __init__(
        self,
        model: str | None = None,
        revision: str | None = None,
        device: str = "auto",
        precision: str | None = None,
        batch_size: int = 64,
    ) -> None:
        self.model = model or DEFAULT_CLIP_ID
        if self.model == DEFAULT_CLIP_ID and revision is None:
            revision = DEFAULT_CLIP_REVISION
        self.revision = revision
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self._encoder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_encoder": None}  # ship settings, never the loaded model


class ClipEmbedder(ClipModelStage):
    """Embed every decoded sample with CLIP (default: pinned OpenAI ViT-L/14).

    Sets column ``embedding``: ``(N, D)`` float32, L2-normalised, NaN rows where the sample was
    not decoded. Removed samples that were decoded are embedded too, so their scores can still
    be recorded. The model loads once per worker in :meth:`setup`.
    """

    name: ClassVar[str] = "embed"

    def setup(self) -> None:
        """Load the CLIP model (once)."""
        if self._encoder is None:
            from pixsieve.models.clip import load_clip

            self._encoder = load_clip(
                self.model, self.revision, self.device, self.precision, self.batch_size
            )

    @property
    def encoder(self) -> ClipEncoder:
        """The loaded encoder (loads it on first use)."""
        self.setup()
        assert self._encoder is not None
        return self._encoder

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Add the ``embedding`` column for this batch."""
        encoder = self.encoder
        out = np.full((len(batch), encoder.projection_dim), np.nan, dtype=np.float32)
        rows = np.flatnonzero(batch.decoded)
        if len(rows):
            if batch.pixels is None:
                raise RuntimeError("embed needs decoded pixels: run the decode stage before it")
            pixels = batch.pixels
            if len(rows) < len(batch):  # index on the pixels' own device (a GPU decoder's)
                import torch

                device = getattr(pixels, "device", None)
                pixels = pixels[torch.as_tensor(rows, device=device) if device else rows]
            out[rows] = encoder.encode(pixels)
        batch.set_column(EMBEDDING_COLUMN, out)
        return batch
