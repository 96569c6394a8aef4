"""Keep policies: which member of a duplicate group survives."""

from __future__ import annotations

import numpy as np
import pytest

from pixsieve.dedup import SemanticDedupConfig, find_duplicates
from pixsieve.dedup.centroid_search import assign
from pixsieve.dedup.centroids import fit_centroids


def _groups(result) -> dict[int, np.ndarray]:
    comp = result.component_id
    return {int(c): np.flatnonzero(comp == c) for c in np.unique(comp[comp >= 0])}


def _check_survivor(result, best_of):
    groups = _groups(result)
    assert groups
    for members in groups.values():
        keep = best_of(members)
        assert not result.removed[keep]
        assert result.removed[members].sum() == len(members) - 1
        others = members[members != keep]
        np.testing.assert_array_equal(result.duplicate_of[others], keep)
        assert result.duplicate_of[keep] == -1


def test_first_keeps_lowest_index(random_planted):
    result = find_duplicates(random_planted.embeddings, SemanticDedupConfig(keep="first"))
    _check_survivor(result, lambda m: m.min())


def test_aesthetic_keeps_highest_score_and_nan_ranks_last(random_planted):
    x = random_planted.embeddings
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 10, len(x))
    scores[::7] = np.nan
    result = find_duplicates(x, SemanticDedupConfig(keep="aesthetic"), aesthetic=scores)
    ranked = np.where(np.isnan(scores), -np.inf, scores)
    _check_survivor(result, lambda m: m[np.lexsort((m, -ranked[m]))[0]])
    assert result.keep_policy == "aesthetic"


def test_aesthetic_without_scores_falls_back_to_first(random_planted):
    result = find_duplicates(random_planted.embeddings, SemanticDedupConfig())
    assert result.keep_policy == "first"
    assert any("no aesthetic scores" in note for note in result.notes)
    _check_survivor(result, lambda m: m.min())


@pytest.mark.parametrize("shape", ["pairs", "pixels"])
def test_resolution_keeps_largest_image(random_planted, shape):
    x = random_planted.embeddings
    rng = np.random.default_rng(1)
    wh = rng.integers(64, 2048, size=(len(x), 2))
    res = wh if shape == "pairs" else wh[:, 0] * wh[:, 1]
    result = find_duplicates(x, SemanticDedupConfig(keep="resolution"), resolution=res)
    pixels = wh[:, 0] * wh[:, 1]
    _check_survivor(result, lambda m: m[np.lexsort((m, -pixels[m]))[0]])


def test_farthest_keeps_item_least_similar_to_its_centroid(random_planted):
    x = random_planted.embeddings
    config = SemanticDedupConfig(keep="farthest", n_clusters=1)
    result = find_duplicates(x, config)
    centroid = fit_centroids(x, 1, iters=1, points_per_centroid=1, seed=0)
    sim = assign(x, centroid, 1)[0][:, 0]  # the same float32 values the library ranks by
    _check_survivor(result, lambda m: m[np.lexsort((m, sim[m]))[0]])


def test_wrong_length_scores_are_rejected(random_planted):
    from pixsieve.dedup import EmbeddingError

    with pytest.raises(EmbeddingError, match="aesthetic has 3 rows"):
        find_duplicates(random_planted.embeddings, aesthetic=np.zeros(3))
