"""LAION aesthetic and NSFW filters over the CLIP ``embedding`` column.

Both score every sample that has an embedding (kept or already removed, so thresholds can be
swept later from the manifest) and leave NaN where there is none; a NaN score never removes a
sample. Weights load once per worker in ``setup()`` through :mod:`pixsieve.models.heads`.

Default thresholds:

- ``min_score=4.5`` (aesthetic, LAION's ~1–10 scale): the cut of LAION's broadest aesthetic
  subset (LAION-Aesthetics V2 4.5+; 5, 6 and 6.5 are progressively stricter). On LAION's
  reference embeddings for human ratings it sits between rating 4 (4.24) and rating 5 (4.70):
  clearly below-average images go, average ones stay.
- ``max_prob=0.5`` (NSFW): the detector's own decision boundary.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pixsieve.batch import ImageBatch
from pixsieve.stages.base import Filter
from pixsieve.stages.embed import EMBEDDING_COLUMN

if TYPE_CHECKING:
    from pixsieve.models.heads import HeadScorer

DEFAULT_MIN_AESTHETIC: float = 4.5
DEFAULT_MAX_NSFW: float = 0.5


class _HeadFilter(Filter):
    """A filter that scores the ``embedding`` column with one LAION head."""

    needs_embeddings: ClassVar[bool] = True
    column: ClassVar[str]

    def __init__(self, weights: str | os.PathLike[str] | None, score_only: bool) -> None:
        super().__init__(score_only=score_only)
        self.weights = None if weights is None else os.fspath(weights)
        self._head: HeadScorer | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_head": None}  # ship settings, never loaded weights

    @abstractmethod
    def _load(self) -> HeadScorer:
        """Load this filter's head from ``self.weights``."""

    def setup(self) -> None:
        """Load the head weights (once)."""
        if self._head is None:
            self._head = self._load()

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        """Score rows with a finite embedding; NaN elsewhere."""
        self.setup()
        assert self._head is not None
        out = np.full(len(batch), np.nan, dtype=np.float32)
        emb = batch.columns.get(EMBEDDING_COLUMN)
        if emb is not None:
            rows = np.isfinite(emb).all(axis=1)
            if rows.any():
                out[rows] = self._head(emb[rows])
        return {self.column: out}


class AestheticFilter(_HeadFilter):
    """Remove samples whose LAION aesthetic score is below ``min_score``.

    Column ``aesthetic_score`` (float32, ~1–10, NaN without an embedding); reason ``aesthetic``.
    ``weights``: path, known name, pinned URL or Hub id of the head (default: pinned LAION v2).
    """

    name: ClassVar[str] = "aesthetic"
    reason: ClassVar[str] = "aesthetic"
    column: ClassVar[str] = "aesthetic_score"

    def __init__(
        self,
        min_score: float = DEFAULT_MIN_AESTHETIC,
        weights: str | os.PathLike[str] | None = None,
        score_only: bool = False,
    ) -> None:
        super().__init__(weights, score_only)
        self.min_score = float(min_score)

    def _load(self) -> HeadScorer:
        from pixsieve.models.heads import load_aesthetic

        return load_aesthetic(self.weights)

    def keep(self, batch: ImageBatch) -> np.ndarray:
        """Keep scores ≥ ``min_score`` (and unscored samples)."""
        score = batch.columns[self.column]
        return np.isnan(score) | (score >= self.min_score)


class NSFWFilter(_HeadFilter):
    """Remove samples whose LAION NSFW probability is ≥ ``max_prob``.

    Column ``nsfw_prob`` (float32 in [0, 1], NaN without an embedding); reason ``nsfw``.
    ``weights``: path, known name, pinned URL or Hub id of the head (default: pinned LAION L/14).
    """

    name: ClassVar[str] = "nsfw"
    reason: ClassVar[str] = "nsfw"
    column: ClassVar[str] = "nsfw_prob"

    def __init__(
        self,
        max_prob: float = DEFAULT_MAX_NSFW,
        weights: str | os.PathLike[str] | None = None,
        score_only: bool = False,
    ) -> None:
        super().__init__(weights, score_only)
        self.max_prob = float(max_prob)

    def _load(self) -> HeadScorer:
        from pixsieve.models.heads import load_nsfw

        return load_nsfw(self.weights)

    def keep(self, batch: ImageBatch) -> np.ndarray:
        """Keep probabilities < ``max_prob`` (and unscored samples)."""
        prob = batch.columns[self.column]
        return np.isnan(prob) | (prob < self.max_prob)
