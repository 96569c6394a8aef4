"""Clustered search vs brute force on planted duplicates: recall, precision, components."""

from __future__ import annotations

import numpy as np
import pytest
from dedup_tools.evaluate import exact_pairs, grouped_recall, pair_precision, pair_recall

from pixsieve.dedup import SemanticDedupConfig, find_duplicates


def _as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


def test_planted_pairs_are_the_only_pairs(random_planted, topic_planted, brute):
    for planted in (random_planted, topic_planted):
        truth = brute.pairs(planted.embeddings, brute.THRESHOLD)
        assert truth == _as_set(planted.planted_pairs(brute.THRESHOLD))
        assert len(truth) > 500


def test_exact_pairs_reference_matches_full_matrix(topic_planted, brute):
    x = topic_planted.embeddings[:1500]
    assert _as_set(exact_pairs(x, 0.95, block=256)) == brute.pairs(x, 0.95)


@pytest.mark.parametrize("fixture", ["random_planted", "topic_planted"])
def test_components_mode_finds_every_pair_and_only_real_ones(fixture, request, brute):
    planted = request.getfixturevalue(fixture)
    x = planted.embeddings
    config = SemanticDedupConfig(threshold=brute.THRESHOLD, return_pairs=True, keep="first")
    result = find_duplicates(x, config)
    truth = brute.pairs(x, brute.THRESHOLD)
    found = _as_set(result.pairs)
    recall = len(found & truth) / len(truth)
    assert recall >= 0.995
    assert found <= truth  # precision 100% relative to the threshold
    assert pair_precision(x, result.pairs, brute.THRESHOLD) == 1.0
    assert np.all(result.pair_similarity >= np.float32(brute.THRESHOLD))


def test_border_groups_are_split_across_clusters_and_still_found(topic_planted, brute):
    x = topic_planted.embeddings
    truth = topic_planted.planted_pairs(brute.THRESHOLD)
    config = SemanticDedupConfig(threshold=brute.THRESHOLD, n_clusters=30, return_pairs=True)
    result = find_duplicates(x, config)
    split = result.cluster[truth[:, 0]] != result.cluster[truth[:, 1]]
    assert split.mean() > 0.03, "the fixture must put some duplicates in different clusters"
    assert pair_recall(result.pairs, truth, len(x)) >= 0.995
    assert (
        pair_recall(
            result.pairs[np.isin(result.pairs[:, 0], truth[split, 0])], truth[split], len(x)
        )
        >= 0.99
    )
    assert result.counts["border_memberships"] > 0

    hard = SemanticDedupConfig(
        threshold=brute.THRESHOLD, n_clusters=30, return_pairs=True, border_candidates=1
    )
    hard_result = find_duplicates(x, hard)
    assert pair_recall(hard_result.pairs, truth, len(x)) < pair_recall(result.pairs, truth, len(x))


@pytest.mark.parametrize("fixture", ["random_planted", "topic_planted"])
def test_components_match_brute_force(fixture, request, brute):
    planted = request.getfixturevalue(fixture)
    x = planted.embeddings
    config = SemanticDedupConfig(threshold=brute.THRESHOLD, keep="first", mode="components")
    result = find_duplicates(x, config)
    truth = brute.pairs(x, brute.THRESHOLD)
    labels = np.array(brute.components(len(x), truth))
    in_group = np.bincount(labels, minlength=len(x))[labels] >= 2
    np.testing.assert_array_equal(result.component_id >= 0, in_group)
    np.testing.assert_array_equal(result.component_size, np.bincount(labels)[labels])
    # same partition: items share a component id exactly when they share a brute-force label
    grouped = np.flatnonzero(in_group)
    pairs_ours = result.component_id[grouped][:, None] == result.component_id[grouped][None, :]
    pairs_ref = labels[grouped][:, None] == labels[grouped][None, :]
    np.testing.assert_array_equal(pairs_ours, pairs_ref)
    # keep="first": the representative is the smallest member, everything else is removed
    np.testing.assert_array_equal(result.removed, in_group & (labels != np.arange(len(x))))
    np.testing.assert_array_equal(result.duplicate_of[result.removed], labels[result.removed])
    assert grouped_recall(result.component_id, np.array(sorted(truth))) == 1.0


def test_small_blocks_give_the_same_answer(topic_planted):
    x = topic_planted.embeddings
    big = find_duplicates(x, SemanticDedupConfig(return_pairs=True, n_clusters=4))
    small = find_duplicates(x, SemanticDedupConfig(return_pairs=True, n_clusters=4, block_size=64))
    np.testing.assert_array_equal(big.pairs, small.pairs)
    np.testing.assert_array_equal(big.removed, small.removed)


def test_deterministic_for_a_seed(topic_planted):
    x = topic_planted.embeddings
    a = find_duplicates(x, SemanticDedupConfig(seed=3))
    b = find_duplicates(x, SemanticDedupConfig(seed=3))
    np.testing.assert_array_equal(a.cluster, b.cluster)
    np.testing.assert_array_equal(a.duplicate_of, b.duplicate_of)
