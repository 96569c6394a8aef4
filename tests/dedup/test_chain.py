"""Chaining: groups linked only through intermediate members are flagged."""

from __future__ import annotations

import numpy as np

from pixsieve.dedup import SemanticDedupConfig, find_duplicates


def _rotation_chain(dim: int = 768, step_cos: float = 0.96, length: int = 3) -> np.ndarray:
    """Unit vectors ``v_k = cos(k t) e1 + sin(k t) e2``: neighbours at ``step_cos``."""
    theta = np.arccos(step_cos)
    out = np.zeros((length, dim), dtype=np.float32)
    out[:, 0] = np.cos(theta * np.arange(length))
    out[:, 1] = np.sin(theta * np.arange(length))
    return out


def test_chain_is_flagged_and_similarity_is_to_the_survivor():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((400, 768)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    chain = _rotation_chain()  # a~b 0.96, b~c 0.96, a~c ~0.84
    tight = np.roll(_rotation_chain(step_cos=0.99, length=2), 2, axis=1)  # on e3/e4
    x = np.concatenate([chain, tight, noise])
    result = find_duplicates(x, SemanticDedupConfig(keep="first", n_clusters=1, mode="components"))
    assert result.component_size[:3].tolist() == [3, 3, 3]
    assert result.removed[:3].tolist() == [False, True, True]
    assert result.duplicate_of[1:3].tolist() == [0, 0]
    np.testing.assert_allclose(result.similarity[1:3], [0.96, 2 * 0.96**2 - 1], atol=1e-5)
    assert result.chained[:3].all()
    assert result.component_size[3:5].tolist() == [2, 2]
    assert not result.chained[3:5].any()
    assert not result.chained[5:].any() and (result.component_id[5:] == -1).all()
    assert result.counts["chained_components"] == 1


def test_chain_margin_controls_the_flag():
    x = np.concatenate([_rotation_chain(), np.eye(768, dtype=np.float32)[10:50]])
    loose = find_duplicates(
        x, SemanticDedupConfig(keep="first", n_clusters=1, chain_margin=0.2, mode="components")
    )
    assert not loose.chained.any()
