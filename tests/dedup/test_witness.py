"""``mode="witness"``: every removed item is at or above the threshold to a kept item."""

from __future__ import annotations

import numpy as np
import pytest

from pixsieve.dedup import SemanticDedupConfig, find_duplicates, witness_groups
from pixsieve.dedup import witness as witness_module


def _brute_witness(x: np.ndarray, labels: np.ndarray, prio: np.ndarray, t: float) -> np.ndarray:
    """The rule, literally: visit each component in keep order, remove if close to a kept one."""
    x64 = x.astype(np.float64)
    out = np.full(len(x), -1)
    for label in np.unique(labels):
        ranked = sorted(np.flatnonzero(labels == label).tolist(), key=lambda i: (-prio[i], i))
        kept: list[int] = []
        for item in ranked:
            sims = x64[kept] @ x64[item] if kept else np.empty(0)
            if len(sims) and sims.max() >= t:
                out[item] = kept[int(np.argmax(sims))]
            else:
                kept.append(item)
    return out


def _assert_witness_invariants(x: np.ndarray, result, brute_pairs: set) -> None:
    removed = result.removed_indices()
    wit = result.duplicate_of[removed]
    assert not result.removed[wit].any(), "every witness is kept"
    exact = np.einsum("ij,ij->i", x[removed].astype(np.float64), x[wit].astype(np.float64))
    np.testing.assert_allclose(result.similarity[removed], exact, atol=1e-6)
    assert (result.similarity[removed] >= np.float32(result.config.threshold)).all()
    assert not result.chained.any()
    # no two survivors are duplicates, and every true pair lost at least one member
    kept = result.kept
    assert not any(kept[a] and kept[b] for a, b in brute_pairs)


@pytest.mark.parametrize("fixture", ["random_planted", "topic_planted"])
def test_witness_matches_brute_force_rule(fixture, request, brute):
    planted = request.getfixturevalue(fixture)
    x = planted.embeddings
    scores = np.random.default_rng(1).uniform(0, 1, len(x))
    config = SemanticDedupConfig(threshold=brute.THRESHOLD, mode="witness", n_clusters=20)
    result = find_duplicates(x, config, aesthetic=scores)
    truth = brute.pairs(x, brute.THRESHOLD)
    labels = np.array(brute.components(len(x), truth))
    expected = _brute_witness(x, labels, scores, brute.THRESHOLD)
    np.testing.assert_array_equal(result.duplicate_of, expected)
    assert result.removed.sum() > 300
    _assert_witness_invariants(x, result, truth)
    # groups are stars around a kept item
    grouped = result.component_id >= 0
    root = np.where(result.removed, result.duplicate_of, np.arange(len(x)))
    for c in np.unique(result.component_id[grouped])[:50]:
        members = np.flatnonzero(result.component_id == c)
        assert len(set(root[members].tolist())) == 1
        assert (result.component_size[members] == len(members)).all()


def test_witness_never_removes_through_a_chain():
    theta = np.arccos(0.96)
    x = np.zeros((3 + 200, 64), dtype=np.float32)
    x[:3, 0], x[:3, 1] = np.cos(theta * np.arange(3)), np.sin(theta * np.arange(3))
    noise = np.random.default_rng(0).standard_normal((200, 64)).astype(np.float32)
    x[3:] = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    comp = find_duplicates(x, SemanticDedupConfig(keep="first", n_clusters=1, mode="components"))
    wit = find_duplicates(x, SemanticDedupConfig(keep="first", n_clusters=1, mode="witness"))
    assert comp.removed[:3].tolist() == [False, True, True]  # c removed through b
    assert wit.removed[:3].tolist() == [False, True, False]  # c is kept: only b is near a
    assert wit.duplicate_of[1] == 0 and wit.similarity[1] == pytest.approx(0.96, abs=1e-5)


def test_witness_is_the_default_mode():
    assert SemanticDedupConfig().mode == "witness"


@pytest.mark.parametrize("small", [32, 2])
def test_small_and_large_component_paths_agree(small, monkeypatch):
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 32))
    x = np.concatenate([base[i] + 0.18 * rng.standard_normal((40, 32)) for i in range(6)])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    labels = np.repeat(np.arange(6), 40)
    prio = rng.uniform(0, 1, len(x))
    monkeypatch.setattr(witness_module, "SMALL_COMPONENT", small)
    monkeypatch.setattr(witness_module, "LARGE_BLOCK", 7)
    members = np.arange(len(x)) + 1000
    out = witness_groups(members, labels, x, prio, 0.9)
    expected = _brute_witness(x, labels, prio, 0.9)
    np.testing.assert_array_equal(out.witness, np.where(expected >= 0, expected + 1000, -1))
    assert (out.witness >= 0).sum() > 20
