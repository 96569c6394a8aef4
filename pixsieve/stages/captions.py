"""Image–caption alignment: read captions, embed them with CLIP's text tower, score and filter.

Three small stages, in pipeline order:

- :class:`CaptionStage` (CPU, runs ahead with decoding): column ``caption`` (the text, at most
  :data:`~pixsieve.models.captions.MAX_CAPTION_CHARS` characters) and ``caption_status``
  (null when a caption was read, else why not: ``missing``, ``empty``, ``not_utf8``,
  ``bad_json``, ``not_text``).
- :class:`TextEmbedder` (model): column ``text_embedding`` (unit-norm, NaN rows without a
  caption or an image) and ``caption_truncated`` (over CLIP's 77 tokens and cut).
- :class:`ImageTextFilter`: column ``clip_score`` = cosine of the image and text embeddings
  (null without both), removes samples below ``min_score`` (reason ``caption_mismatch``).
  Samples without a caption are kept (and counted) unless ``require_caption`` is set.

Caption sources (``caption_from``): ``"txt"`` (default) is the ``.txt`` sidecar, else the
``caption`` field of the ``.json`` sidecar; ``"json:FIELD"`` (dotted for nested fields) or any
other sidecar extension name one source only. The reading rules live with
:class:`pixsieve.stages.documents.TextSource` (:func:`~pixsieve.stages.documents.read_caption`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pixsieve.batch import EMBEDDING_COLUMN, ImageBatch
from pixsieve.stages.base import ScoreFilter, Stage, keep_at_least
from pixsieve.stages.documents import CAPTION_PROBLEMS, caption_sources, read_caption
from pixsieve.stages.embed import ClipModelStage

if TYPE_CHECKING:
    from pixsieve.models.clip_text import ClipTextEncoder

TEXT_EMBEDDING_COLUMN = "text_embedding"


class CaptionStage(Stage):
    """Attach ``caption`` and ``caption_status`` to every sample (nothing is removed)."""

    name: ClassVar[str] = "captions"
    columns: ClassVar[Mapping[str, str]] = {"caption": "string", "caption_status": "string"}

    def __init__(self, caption_from: str = "txt") -> None:
        self.caption_from = caption_from.strip()
        caption_sources(self.caption_from)  # a bad spec fails here, on the driver

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Read each sample's caption from its sidecars."""
        sources = caption_sources(self.caption_from)
        read = [read_caption(sources, members) for members in batch.sidecars]
        batch.set_column("caption", np.array([c for c, _ in read], dtype=object))
        batch.set_column("caption_status", np.array([p for _, p in read], dtype=object))
        return batch


class TextEmbedder(ClipModelStage):
    """Embed each decoded sample's caption with the text tower of the same CLIP checkpoint.

    Takes the image embedder's settings (model, revision, device, precision, batch size) so
    both towers come from one snapshot and run on one device in one precision. Columns
    ``text_embedding`` (``(N, D)`` float32, NaN rows where there is no caption or no decoded
    image) and ``caption_truncated`` (bool; null where nothing was tokenised).
    """

    name: ClassVar[str] = "embed_text"
    columns: ClassVar[Mapping[str, str]] = {
        TEXT_EMBEDDING_COLUMN: "list<float32>",  # cache only (a vector)
        "caption_truncated": "bool",
    }

    def setup(self) -> None:
        """Load the text tower and tokenizer (once)."""
        if self._encoder is None:
            from pixsieve.models.clip_text import load_clip_text

            self._encoder = load_clip_text(
                self.model, self.revision, self.device, self.precision, self.batch_size
            )

    @property
    def encoder(self) -> ClipTextEncoder:
        """The loaded text encoder (loads it on first use)."""
        self.setup()
        assert self._encoder is not None
        return self._encoder

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Add ``text_embedding`` and ``caption_truncated`` for this batch."""
        encoder = self.encoder
        captions = batch.columns.get("caption")
        if captions is None:
            raise RuntimeError("embed_text needs captions: run CaptionStage before it")
        out = np.full((len(batch), encoder.projection_dim), np.nan, dtype=np.float32)
        truncated = np.full(len(batch), None, dtype=object)
        has = np.array([c is not None for c in captions], dtype=bool)
        rows = np.flatnonzero(has & batch.decoded)
        if len(rows):
            emb, cut = encoder.encode([captions[i] for i in rows])
            out[rows] = emb
            truncated[rows] = cut.tolist()
        batch.set_column(TEXT_EMBEDDING_COLUMN, out)
        batch.set_column("caption_truncated", truncated)
        return batch


class ImageTextFilter(ScoreFilter):
    """Remove samples whose image and caption disagree: ``clip_score`` below ``min_score``.

    Column ``clip_score`` (float32 cosine in [-1, 1]; null without an image embedding or a
    caption); reason ``caption_mismatch``. Samples without a caption are kept and counted
    (``no_caption_<why>``) unless ``require_caption`` (then removed, reason ``no_caption``).
    Captions cut at 77 tokens are counted as ``caption_truncated``. The default threshold is
    argued in docs/models.md.
    """

    name: ClassVar[str] = "caption"
    reason: ClassVar[str] = "caption_mismatch"
    column: ClassVar[str] = "clip_score"
    threshold_setting: ClassVar[str] = "min_score"
    default_threshold: ClassVar[float] = 0.2
    threshold_key: ClassVar[str] = "clip_score_min"
    threshold_range: ClassVar[tuple[float, float] | None] = (-1.0, 1.0)
    threshold_meaning: ClassVar[str] = "a cosine similarity"
    label: ClassVar[str] = "caption mismatch"
    title: ClassVar[str] = "Image–caption CLIP score"
    score_format: ClassVar[str] = "{:.3f}"
    needs_embeddings: ClassVar[bool] = True
    keep_scores = staticmethod(keep_at_least)

    def __init__(
        self,
        min_score: float | None = None,
        require_caption: bool = False,
        score_only: bool = False,
    ) -> None:
        super().__init__(min_score, score_only)
        self.require_caption = bool(require_caption)

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        """Cosine of rows with both embeddings; NaN elsewhere."""
        out = np.full(len(batch), np.nan, dtype=np.float32)
        image = batch.columns.get(EMBEDDING_COLUMN)
        text = batch.columns.get(TEXT_EMBEDDING_COLUMN)
        if image is not None and text is not None:
            rows = np.isfinite(image).all(axis=1) & np.isfinite(text).all(axis=1)
            a = image[rows] / np.linalg.norm(image[rows], axis=1, keepdims=True)
            b = text[rows] / np.linalg.norm(text[rows], axis=1, keepdims=True)
            out[rows] = np.einsum("ij,ij->i", a, b)
        return {self.column: out}

    def _captioned(self, batch: ImageBatch) -> np.ndarray:
        status = batch.columns.get("caption_status")
        if status is None:
            return np.zeros(len(batch), dtype=bool)
        return np.array([s is None for s in status], dtype=bool)

    def keep(self, batch: ImageBatch) -> np.ndarray:
        """Keep scores ≥ ``min_score``, unscored samples (unless a caption is required)."""
        keep = super().keep(batch)
        if self.require_caption:
            keep &= self._captioned(batch)
        return keep

    def reasons(self, batch: ImageBatch, keep: np.ndarray) -> str | list[str]:
        """``caption_mismatch``, or ``no_caption: <why>`` for a required caption missing."""
        if not self.require_caption:
            return self.reason
        status = batch.columns.get("caption_status")
        if status is None:
            return "no_caption: missing"
        return [self.reason if s is None else f"no_caption: {s}" for s in status]

    def tally(self, batch: ImageBatch, entered: np.ndarray) -> dict[str, int]:
        """``no_caption_<why>`` and ``caption_truncated`` among the samples that entered."""
        counts: dict[str, int] = {}
        status = batch.columns.get("caption_status")
        if status is not None:
            for why in CAPTION_PROBLEMS:
                counts[f"no_caption_{why}"] = int(sum(1 for s in status[entered] if s == why))
        cut = batch.columns.get("caption_truncated")
        if cut is not None:
            counts["caption_truncated"] = int(sum(1 for c in cut[entered] if c is True))
        return counts
