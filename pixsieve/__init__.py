"""pixsieve: curate large image datasets in WebDataset format.

The public API: build a :class:`Pipeline` from stage objects and run it::

    from pixsieve import Pipeline
    from pixsieve.stages import DecodeStage, ImageSizeFilter

    Pipeline([DecodeStage(), ImageSizeFilter(min_side=64)]).run(["shards/"], "out/")

or run the default pipeline from a config with :func:`pixsieve.curate.curate`.
"""

from __future__ import annotations

from pixsieve.batch import ImageBatch
from pixsieve.pipeline import Pipeline, RunResult
from pixsieve.version import __version__

__all__ = ["ImageBatch", "Pipeline", "RunResult", "__version__"]
