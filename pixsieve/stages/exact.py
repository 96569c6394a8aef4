"""Exact dedup, the stage: remove samples the scan pass found byte-identical to an earlier one.

The decision is global (:func:`pixsieve.run.scan.exact_duplicates`, over every shard in input
order); this stage only applies it to one shard's batches, before anything is decoded, and
releases the duplicates' bytes. The score pass puts it first when exact dedup is on.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pixsieve.batch import ImageBatch
from pixsieve.dedup.io import REASON_EARLIER
from pixsieve.stages.base import Stage

#: Position in the shard → (key, source shard, earlier output or ``None``) of the sample it
#: repeats: an earlier output (``curate --against``) when that sample is one an earlier run kept.
Duplicates = dict[int, tuple[str, str, str | None]]


class ExactDuplicateStage(Stage):
    """Remove samples the scan pass found to be byte-identical to an earlier one.

    Reason ``exact_duplicate``; columns ``duplicate_of`` (key of the first occurrence) and
    ``duplicate_of_source`` (its shard). A repeat of a sample an earlier run kept (``curate
    --against``) has reason ``duplicate_of_earlier`` and ``duplicate_of_run`` (that output).
    """

    name: ClassVar[str] = "exact_dedup"

    def __init__(self, duplicates: Duplicates) -> None:
        self.duplicates = duplicates

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Mark duplicates (``reason=exact_duplicate``) and release their bytes."""
        hit = np.array([int(p) in self.duplicates for p in batch.position], dtype=bool)
        of = np.full(len(batch), None, dtype=object)
        src = np.full(len(batch), None, dtype=object)
        run = np.full(len(batch), None, dtype=object)
        for i in np.flatnonzero(hit):
            of[i], src[i], run[i] = self.duplicates[int(batch.position[i])]
            batch.image_bytes[i] = None
        reasons = [REASON_EARLIER if r is not None else "exact_duplicate" for r in run]
        batch.drop(hit, reasons)
        batch.set_column("duplicate_of", of)
        batch.set_column("duplicate_of_source", src)
        batch.set_column("duplicate_of_run", run)
        return batch
