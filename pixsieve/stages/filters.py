"""Built-in simple filters; the pattern every other filter follows.

A filter is a :class:`~pixsieve.stages.base.Filter` with a ``name``, a ``reason`` and a
``keep(batch)`` hook that returns a boolean mask. See ``docs/writing-a-filter.md``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pixsieve.batch import ImageBatch
from pixsieve.stages.base import Filter


class ImageSizeFilter(Filter):
    """Remove images whose shorter side is below ``min_side`` or whose aspect ratio is extreme.

    Reasons: ``too_small`` (shorter side < ``min_side`` pixels) and ``aspect_ratio`` (longer
    side / shorter side > ``max_aspect_ratio``). Uses the original (EXIF-oriented) size.
    """

    name: ClassVar[str] = "size"
    reason: ClassVar[str] = "too_small"

    def __init__(
        self, min_side: int = 0, max_aspect_ratio: float | None = None, score_only: bool = False
    ) -> None:
        super().__init__(score_only=score_only)
        self.min_side = min_side
        self.max_aspect_ratio = max_aspect_ratio

    def _aspect(self, batch: ImageBatch) -> np.ndarray:
        short = np.minimum(batch.width, batch.height).astype(np.float64)
        long = np.maximum(batch.width, batch.height).astype(np.float64)
        return np.divide(long, short, out=np.full(len(batch), np.inf), where=short > 0)

    def keep(self, batch: ImageBatch) -> np.ndarray:
        """Keep images at least ``min_side`` on the short side and within the aspect ratio."""
        return ~self._too_small(batch) & ~self._too_elongated(batch)

    def _too_small(self, batch: ImageBatch) -> np.ndarray:
        return np.minimum(batch.width, batch.height) < self.min_side

    def _too_elongated(self, batch: ImageBatch) -> np.ndarray:
        if self.max_aspect_ratio is None:
            return np.zeros(len(batch), dtype=bool)
        return self._aspect(batch) > self.max_aspect_ratio

    def reasons(self, batch: ImageBatch, keep: np.ndarray) -> list[str]:
        """``too_small`` where the short side fails, else ``aspect_ratio``."""
        small = self._too_small(batch)
        return ["too_small" if s else "aspect_ratio" for s in small]
