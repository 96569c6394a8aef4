"""Aesthetic and NSFW filters on real ViT-L/14 embeddings with the real LAION weights."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from fixtures_clip import AESTHETIC_PTH, GOLDEN, NSFW_PTH, RATING_EMBEDDINGS

from pixsieve.batch import ERROR, KEPT, REMOVED, ImageBatch
from pixsieve.models.hub import ModelUnavailableError
from pixsieve.stages.base import StageStats, run_stage
from pixsieve.stages.scoring import AestheticFilter, NSFWFilter


def make_batch(embeddings: np.ndarray, status: np.ndarray | None = None) -> ImageBatch:
    n = len(embeddings)
    status = np.zeros(n, np.int8) if status is None else status.astype(np.int8)
    batch = ImageBatch(
        source="memory://shard-000.tar",
        shard_index=0,
        key=np.array([f"{i:03d}" for i in range(n)], dtype=object),
        position=np.arange(n, dtype=np.int64),
        members=[[f"{i:03d}.jpg"] for i in range(n)],
        image_name=[f"{i:03d}.jpg" for i in range(n)],
        image_bytes=[b"" for _ in range(n)],
        sidecars=[{} for _ in range(n)],
        status=status,
        reason=[None if s == KEPT else "earlier" for s in status],
        width=np.where(np.isfinite(embeddings).all(axis=1), 640, 0),
        height=np.full(n, 480),
    )
    batch.set_column("embedding", embeddings.astype(np.float32))
    return batch


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDEN / "heads.json").read_text())


@pytest.fixture(scope="module")
def ratings() -> np.ndarray:
    """Rows 0–9: LAION's reference embeddings for human ratings 0–9; row 10: no embedding."""
    rows = [np.load(RATING_EMBEDDINGS / f"rating{i}.npy") for i in range(10)]
    return np.concatenate([*rows, np.full((1, 768), np.nan, np.float32)])


def test_aesthetic_scores_and_removes_below_threshold(ratings, golden):
    stage = AestheticFilter(min_score=5.0, weights=AESTHETIC_PTH)
    assert (stage.name, stage.reason, stage.needs_embeddings) == ("aesthetic", "aesthetic", True)
    stats = StageStats()
    batch = run_stage(stage, make_batch(ratings), stats)

    score = batch.columns["aesthetic_score"]
    assert score.dtype == np.float32 and np.isnan(score[10])
    expected = golden["aesthetic_sac_logos_ava1_l14_linearMSE"]["scores_rating0_to_9"]
    np.testing.assert_allclose(score[:10], expected, atol=1e-4)
    removed = np.flatnonzero(batch.status == REMOVED).tolist()
    assert removed == [0, 1, 2, 3, 4, 5]  # ratings 0–5 score < 5.0; 6–9 score ≥ 5.07
    assert all(batch.reason[i] == "aesthetic" for i in removed)
    assert batch.status[10] == KEPT  # no embedding, no verdict
    assert dict(stats.counts) == {"in": 11, "kept": 5, "dropped_aesthetic": 6}


def test_default_aesthetic_threshold(ratings):
    stage = AestheticFilter(weights=AESTHETIC_PTH)
    assert stage.min_score == 4.5
    batch = stage.process(make_batch(ratings[:10]))
    assert np.flatnonzero(batch.status == REMOVED).tolist() == [0, 1, 2, 3, 4]


def test_score_only_records_but_keeps(ratings):
    batch = AestheticFilter(min_score=9, weights=AESTHETIC_PTH, score_only=True).process(
        make_batch(ratings)
    )
    assert (batch.status == KEPT).all()
    assert np.isfinite(batch.columns["aesthetic_score"][:10]).all()


def test_already_removed_samples_are_scored_and_keep_their_reason(ratings):
    status = np.zeros(11, np.int8)
    status[[0, 9]] = REMOVED
    batch = AestheticFilter(min_score=5.0, weights=AESTHETIC_PTH).process(
        make_batch(ratings, status)
    )
    assert np.isfinite(batch.columns["aesthetic_score"][[0, 9]]).all()
    assert batch.reason[0] == batch.reason[9] == "earlier"


def test_nsfw_removes_at_or_above_max_prob():
    inputs = np.load(GOLDEN / "nsfw_keras_inputs.npy")
    keras = np.load(GOLDEN / "nsfw_keras_outputs.npy")[:, 0]
    stage = NSFWFilter(max_prob=0.05, weights=NSFW_PTH)
    assert (stage.name, stage.reason, stage.max_prob) == ("nsfw", "nsfw", 0.05)
    batch = stage.process(make_batch(inputs))
    prob = batch.columns["nsfw_prob"]
    assert prob.dtype == np.float32
    np.testing.assert_allclose(prob, keras, atol=1e-3)
    removed = batch.status == REMOVED
    np.testing.assert_array_equal(removed, prob >= 0.05)
    assert 0 < removed.sum() < len(inputs)
    assert {batch.reason[i] for i in np.flatnonzero(removed)} == {"nsfw"}


def test_nsfw_default_keeps_real_photo_embeddings(ratings):
    stage = NSFWFilter(weights=NSFW_PTH)
    assert stage.max_prob == 0.5 and stage.column == "nsfw_prob"
    batch = stage.process(make_batch(ratings))
    assert (batch.status == KEPT).all()
    assert np.nanmax(batch.columns["nsfw_prob"]) < 1e-3


def test_missing_embedding_column_scores_nothing():
    batch = make_batch(np.zeros((2, 768)))
    del batch.columns["embedding"]
    out = NSFWFilter(weights=NSFW_PTH).process(batch)
    assert np.isnan(out.columns["nsfw_prob"]).all() and (out.status == KEPT).all()


def test_weights_load_in_setup_not_in_the_constructor(offline):
    stage = AestheticFilter()  # default pinned weights, empty offline cache
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.describe() == {"score_only": False, "weights": None, "min_score": 4.5}
    with pytest.raises(ModelUnavailableError, match="pixsieve models download"):
        clone.setup()


def test_error_rows_are_not_touched(ratings):
    status = np.zeros(11, np.int8)
    status[3] = ERROR
    batch = AestheticFilter(min_score=5.0, weights=AESTHETIC_PTH).process(
        make_batch(ratings, status)
    )
    assert batch.status[3] == ERROR and batch.reason[3] == "earlier"
