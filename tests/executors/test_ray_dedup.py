"""Semantic dedup's per-cluster work spread over Ray tasks gives the same answer as here."""

from __future__ import annotations

import numpy as np
import pytest
from dedup_tools.synthetic import planted_embeddings

from pixsieve.dedup import SemanticDedupConfig, find_duplicates
from pixsieve.executors import LocalExecutor


@pytest.mark.ray
@pytest.mark.parametrize("mode", ["components", "semdedup"])
def test_map_calls_on_ray_matches_local(ray_session, mode) -> None:
    from pixsieve.executors.ray import RayExecutor

    data = planted_embeddings(3000, dim=32, seed=3)
    config = SemanticDedupConfig(threshold=0.9, n_clusters=12, mode=mode, keep="first")
    here = find_duplicates(data.embeddings, config, map_calls=LocalExecutor().map_calls)
    ex = RayExecutor()
    there = find_duplicates(data.embeddings, config, map_calls=ex.map_calls)
    ex.shutdown()
    assert here.removed.sum() > 0
    for field in ("removed", "duplicate_of", "component_id", "component_size"):
        np.testing.assert_array_equal(getattr(here, field), getattr(there, field))
    np.testing.assert_allclose(here.similarity, there.similarity, equal_nan=True)
