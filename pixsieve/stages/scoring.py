"""LAION aesthetic and NSFW filters over the CLIP ``embedding`` column.

Both score every sample that has an embedding (kept or already removed, so thresholds can be
swept later from the manifest) and leave NaN where there is none; a NaN score never removes a
sample. Weights load once per worker in ``setup()`` through :mod:`pixsieve.models.heads`.

Default thresholds (each declared once, as the filter's ``default_threshold``):

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

from pixsieve.batch import EMBEDDING_COLUMN, ImageBatch
from pixsieve.stages.base import ScoreFilter, keep_at_least, keep_below

if TYPE_CHECKING:
    from pixsieve.models.heads import HeadScorer


class _HeadFilter(ScoreFilter):
    """A score filter that scores the ``embedding`` column with one LAION head."""

    needs_embeddings: ClassVar[bool] = True

    def __init__(
        self,
        threshold: float | None,
        weights: str | os.PathLike[str] | None,
        score_only: bool,
    ) -> None:
        super().__init__(threshold, score_only=score_only)
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
    threshold_setting: ClassVar[str] = "min_score"
    default_threshold: ClassVar[float] = 4.5
    threshold_key: ClassVar[str] = "aesthetic_min"
    label: ClassVar[str] = "aesthetic"
    title: ClassVar[str] = "Aesthetic score"
    score_format: ClassVar[str] = "{:.2f}"
    keep_scores = staticmethod(keep_at_least)

    def __init__(
        self,
        min_score: float | None = None,
        weights: str | os.PathLike[str] | None = None,
        score_only: bool = False,
    ) -> None:
        super().__init__(min_score, weights, score_only)

    def _load(self) -> HeadScorer:
        from pixsieve.models.heads import load_aesthetic

        return load_aesthetic(self.weights)


class NSFWFilter(_HeadFilter):
    """Remove samples whose LAION NSFW probability is ≥ ``max_prob``.

    Column ``nsfw_prob`` (float32 in [0, 1], NaN without an embedding); reason ``nsfw``.
    ``weights``: path, known name, pinned URL or Hub id of the head (default: pinned LAION L/14).
    """

    name: ClassVar[str] = "nsfw"
    reason: ClassVar[str] = "nsfw"
    column: ClassVar[str] = "nsfw_prob"
    threshold_setting: ClassVar[str] = "max_prob"
    default_threshold: ClassVar[float] = 0.5
    threshold_key: ClassVar[str] = "nsfw_max"
    threshold_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)
    threshold_meaning: ClassVar[str] = "a probability"
    label: ClassVar[str] = "NSFW"
    title: ClassVar[str] = "NSFW probability"
    score_format: ClassVar[str] = "{:.3f}"
    keep_scores = staticmethod(keep_below)

    def __init__(
        self,
        max_prob: float | None = None,
        weights: str | os.PathLike[str] | None = None,
        score_only: bool = False,
    ) -> None:
        super().__init__(max_prob, weights, score_only)

    def _load(self) -> HeadScorer:
        from pixsieve.models.heads import load_nsfw

        return load_nsfw(self.weights)


BUILTIN_SCORE_FILTERS: tuple[type[ScoreFilter], ...] = (AestheticFilter, NSFWFilter)
"""The score filters of the default pipeline, in their order (the report always shows them)."""
