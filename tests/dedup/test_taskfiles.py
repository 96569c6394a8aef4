"""Per-bucket pieces of a task's rows: grouped by bucket in stable order, never longer than
WRITE_ROWS."""

from __future__ import annotations

import numpy as np

from pixsieve.dedup import taskfiles
from pixsieve.dedup.taskfiles import bucket_parts


def test_bucket_parts_group_stably_in_bounded_pieces(monkeypatch):
    monkeypatch.setattr(taskfiles, "WRITE_ROWS", 4)
    bucket = np.array([2, 0, 2, 2, 1, 2, 2, 0, 2, 2])
    parts = list(bucket_parts(bucket))
    assert all(0 < len(p) <= 4 for p in parts)
    assert all(len(set(bucket[p])) == 1 for p in parts)
    assert np.concatenate(parts).tolist() == [1, 7, 4, 0, 2, 3, 5, 6, 8, 9]
    assert list(bucket_parts(np.empty(0, np.int64))) == []
