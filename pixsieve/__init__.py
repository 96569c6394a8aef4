"""pixsieve: curate large image datasets in WebDataset format.

The public API: build a :class:`Pipeline` from stage objects and run it::

    from pixsieve import Pipeline
    from pixsieve.stages import DecodeStage, ImageSizeFilter

    Pipeline([DecodeStage(), ImageSizeFilter(min_side=64)]).run(["shards/"], "out/")

or run the default pipeline from a config with :func:`pixsieve.curate.curate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixsieve.version import __version__

if TYPE_CHECKING:
    from pixsieve.batch import ImageBatch
    from pixsieve.pipeline import Pipeline, RunResult

__all__ = ["ImageBatch", "Pipeline", "RunResult", "__version__"]


def __getattr__(name: str) -> Any:
    """Import the public classes on first use, so ``import pixsieve.cli`` stays light.

    The command line checks its inputs and output before the heavy imports (pyarrow, torch).
    """
    if name == "ImageBatch":
        from pixsieve.batch import ImageBatch

        return ImageBatch
    if name in ("Pipeline", "RunResult"):
        from pixsieve import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'pixsieve' has no attribute {name!r}")
