"""Built-in stages and the base classes for writing your own."""

from __future__ import annotations

from pixsieve.stages.base import (
    Filter,
    Resources,
    ScoreFilter,
    Stage,
    StageLike,
    keep_at_least,
    keep_below,
)
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.filters import ImageSizeFilter

__all__ = [
    "DecodeStage",
    "Filter",
    "ImageSizeFilter",
    "Resources",
    "ScoreFilter",
    "Stage",
    "StageLike",
    "keep_at_least",
    "keep_below",
]
