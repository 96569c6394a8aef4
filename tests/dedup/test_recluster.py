"""``recluster``: new items far from every earlier cluster get extra centroids; the pairs found
(across and within batches) are the same as without, at a lower within-batch cost, and a later
run against the re-clustered output shares its (extended) centroids."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pixsieve.dedup.index import INDEX_DIR
from pixsieve.dedup.io import REASON_EARLIER
from pixsieve.dedup.memory import Budget
from pixsieve.dedup.partitioned import dedup_files
from pixsieve.dedup.sources import InputError

from .test_against import DIM, THRESHOLD, _base, _config, _copy, _greedy, _removed, _unit, _write


def _far(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` items around 4 topics of their own (far from the earlier ones), a fifth of them
    near-copies of another."""
    topics = _unit(rng.standard_normal((4, DIM)))
    x = _unit(topics[rng.integers(0, 4, n)] + 0.8 * rng.standard_normal((n, DIM)) / DIM**0.5)
    src = rng.choice(n, n // 5, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), n // 5, replace=False)
    x[dst] = _copy(rng, x[src])
    return x


@pytest.fixture
def far_batches():
    """Batch A; batch B: copies of A's kept items and a far batch with copies of its own."""
    rng = np.random.default_rng(11)
    a = _base(rng, 600)
    kept = np.flatnonzero(_greedy(a, THRESHOLD))
    b = np.concatenate([_copy(rng, a[rng.choice(kept, 30, replace=False)]), _far(rng, 400)])
    return a, b[rng.permutation(len(b))], rng


def _ids(out) -> dict[str, str]:
    table = _removed(out)
    return dict(
        zip(table.column("id").to_pylist(), table.column("reason").to_pylist(), strict=True)
    )


def test_recluster_finds_the_same_pairs_at_lower_cost(far_batches, tmp_path):
    a, b, rng = far_batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    new = _write(tmp_path / "in_b", b, "b")
    plain = dedup_files(new, tmp_path / "plain", _config(), against=[tmp_path / "A"])
    again = dedup_files(new, tmp_path / "re", _config(), against=[tmp_path / "A"], recluster="on")
    # the same removals, and the ones one run over A+B (keep first) makes
    assert _ids(tmp_path / "re") == _ids(tmp_path / "plain")
    expected = _greedy(np.concatenate([a, b]), THRESHOLD)[len(a) :]
    assert {int(i[1:]) for i in _ids(tmp_path / "re")} == set(np.flatnonzero(~expected).tolist())
    assert list(_ids(tmp_path / "re").values()).count(REASON_EARLIER) >= 30
    # beyond the radius: counted alike; extra centroids; fewer memberships and similarities
    assert again.counts["beyond_radius"] == plain.counts["beyond_radius"] > 300
    assert again.counts["recluster_extra"] > 0
    # far new items are searched across batches by the radius scheme: fewer products
    assert plain.counts["earlier_by_radius"] > 0
    assert again.counts["n_clusters"] == 8 + again.counts["recluster_extra"]
    assert again.counts["border_memberships"] < plain.counts["border_memberships"]
    assert again.counts["similarities_computed"] < plain.counts["similarities_computed"]
    centroids = np.load(tmp_path / "re" / INDEX_DIR / "centroids.npy")
    earlier = np.load(tmp_path / "A" / INDEX_DIR / "centroids.npy")
    assert np.array_equal(centroids[: len(earlier)], earlier) and len(centroids) > len(earlier)

    # a later run against the re-clustered output (and, through it, A) finds copies of both
    kept_a = np.flatnonzero(_greedy(a, THRESHOLD))
    kept_b = np.flatnonzero(expected)
    c = np.concatenate(
        [
            _copy(rng, a[kept_a[:20]]),
            _copy(rng, b[kept_b[-20:]]),
            _unit(rng.standard_normal((20, DIM))),
        ]
    )
    dedup_files(
        _write(tmp_path / "in_c", c, "c"), tmp_path / "C", _config(), against=[tmp_path / "re"]
    )
    table = _removed(tmp_path / "C")
    earlier_rows = table.filter(pc.equal(table.column("reason"), REASON_EARLIER))
    named = set(earlier_rows.column("duplicate_of").to_pylist())
    assert {f"a{i:05d}" for i in kept_a[:20]} <= named
    assert {f"b{i:05d}" for i in kept_b[-20:]} <= named
    assert np.array_equal(
        np.load(tmp_path / "C" / INDEX_DIR / "centroids.npy"), centroids
    )  # shared, not extended again


def test_auto_and_refusals(far_batches, tmp_path):
    a, b, _ = far_batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    near = _write(tmp_path / "in_near", a[:50], "n")
    res = dedup_files(
        near, tmp_path / "near", _config(), against=[tmp_path / "A"], recluster="auto"
    )
    assert res.counts["recluster_extra"] == 0  # nothing beyond: the earlier centroids only
    far = dedup_files(
        _write(tmp_path / "in_b", b, "b"),
        tmp_path / "far",
        _config(),
        against=[tmp_path / "A"],
        recluster="auto",
    )
    assert far.counts["recluster_extra"] > 0
    with pytest.raises(InputError, match="--recluster needs --against"):
        dedup_files(near, tmp_path / "x", _config(), recluster="on")
    with pytest.raises(InputError, match="recluster 'sometimes'"):
        dedup_files(
            near, tmp_path / "y", _config(), against=[tmp_path / "A"], recluster="sometimes"
        )
    # two outputs whose centroid sets are not prefixes of one another cannot be combined
    dedup_files(_write(tmp_path / "in_o", b, "o"), tmp_path / "O", _config(seed=5))
    with pytest.raises(InputError, match="clustered independently"):
        dedup_files(near, tmp_path / "z", _config(), against=[tmp_path / "far", tmp_path / "O"])
    assert pq.read_table(tmp_path / "far" / "duplicates.parquet").num_rows > 0


def test_many_buckets_find_the_same_pairs(far_batches, tmp_path, monkeypatch):
    """Earlier and new runs split into several buckets (of different counts) remove the same
    rows as single-bucket runs, with and without extra centroids."""
    a, b, _ = far_batches
    in_a, in_b = _write(tmp_path / "in_a", a, "a"), _write(tmp_path / "in_b", b, "b")
    dedup_files(in_a, tmp_path / "A1", _config())
    dedup_files(in_b, tmp_path / "B1", _config(), against=[tmp_path / "A1"], recluster="on")
    monkeypatch.setattr(Budget, "bucket_rows", property(lambda self: 150))
    many = dedup_files(in_a, tmp_path / "A", _config())
    assert many.counts["buckets"] > 3
    for mode in ("off", "on"):
        res = dedup_files(
            in_b, tmp_path / mode, _config(), against=[tmp_path / "A"], recluster=mode
        )
        assert 1 < res.counts["buckets"] != many.counts["buckets"]
        assert _ids(tmp_path / mode) == _ids(tmp_path / "B1")
