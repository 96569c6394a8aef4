"""Built-in stages and the base classes for writing your own."""

from __future__ import annotations

from pixsieve.stages.base import Filter, Resources, Stage, StageLike
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.filters import ImageSizeFilter

__all__ = ["DecodeStage", "Filter", "ImageSizeFilter", "Resources", "Stage", "StageLike"]
