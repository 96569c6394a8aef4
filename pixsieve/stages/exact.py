"""Exact dedup, the stage: remove samples the scan pass found byte-identical to an earlier one.

The decision is global (:func:`pixsieve.run.scan.exact_duplicates`, over every shard in input
order); this stage only applies it to one shard's batches, before anything is decoded, and
releases the duplicates' bytes. The score pass puts it first when exact dedup is on.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pixsieve.batch import ImageBatch
from pixsieve.stages.base import Stage

#: Position in the shard → (key, source shard) of the sample it repeats.
Duplicates = dict[int, tuple[str, str]]


class ExactDuplicateStage(Stage):
    """Remove samples the scan pass found to be byte-identical to an earlier one.

    Reason ``exact_duplicate``; columns ``duplicate_of`` (key of the first occurrence) and
    ``duplicate_of_source`` (its shard).
    """

    name: ClassVar[str] = "exact_dedup"

    def __init__(self, duplicates: Duplicates) -> None:
        self.duplicates = duplicates

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Mark duplicates (``reason=exact_duplicate``) and release their bytes."""
        hit = np.array([int(p) in self.duplicates for p in batch.position], dtype=bool)
        of = np.full(len(batch), None, dtype=object)
        src = np.full(len(batch), None, dtype=object)
        for i in np.flatnonzero(hit):
            of[i], src[i] = self.duplicates[int(batch.position[i])]
            batch.image_bytes[i] = None
        batch.drop(hit, "exact_duplicate")
        batch.set_column("duplicate_of", of)
        batch.set_column("duplicate_of_source", src)
        return batch
