"""Dedup against earlier runs: planted copies across batches, chains of runs, refused settings,
and the same survivors as one run over all batches (keep ``first``, witness mode)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixsieve.dedup import SemanticDedupConfig
from pixsieve.dedup.index import INDEX_DIR, INDEX_FILE
from pixsieve.dedup.io import REASON_EARLIER, REASON_SEMANTIC
from pixsieve.dedup.packing import fixed_list
from pixsieve.dedup.partitioned import dedup_files
from pixsieve.dedup.sources import InputError

DIM = 48
THRESHOLD = 0.95


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _copy(rng: np.random.Generator, x: np.ndarray, noise: float = 0.01) -> np.ndarray:
    """Near-copies of rows ``x`` (cosine about 0.998 at this noise and dimension)."""
    return _unit(x + noise * rng.standard_normal(x.shape))


def _base(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` items around 6 topics (clusters), about a fifth of them near-copies of another."""
    topics = _unit(rng.standard_normal((6, DIM)))
    x = _unit(topics[rng.integers(0, 6, n)] + 0.8 * rng.standard_normal((n, DIM)) / DIM**0.5)
    src = rng.choice(n, n // 5, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), n // 5, replace=False)
    x[dst] = _copy(rng, x[src])
    return x


def _write(folder, x: np.ndarray, prefix: str, n_files: int = 2) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f, part in enumerate(np.array_split(np.arange(len(x)), n_files)):
        path = folder / f"part-{f}.parquet"
        ids = [f"{prefix}{i:05d}" for i in part]
        pq.write_table(pa.table({"id": ids, "embedding": fixed_list(x[part])}), path)
        paths.append(str(path))
    return paths


def _greedy(x: np.ndarray, threshold: float) -> np.ndarray:
    """Reference for witness + keep first: visit in order, keep what no kept item duplicates."""
    x64 = x.astype(np.float64)
    kept: list[int] = []
    for i in range(len(x)):
        if not kept or (x64[kept] @ x64[i]).max() < threshold:
            kept.append(i)
    mask = np.zeros(len(x), dtype=bool)
    mask[kept] = True
    return mask


def _removed(out) -> pa.Table:
    return pq.read_table(out / "duplicates.parquet")


def _config(**kw) -> SemanticDedupConfig:
    return SemanticDedupConfig(**{"threshold": THRESHOLD, "keep": "first", "n_clusters": 8, **kw})


@pytest.fixture
def batches():
    """Batch A (earlier) and batch B: copies of A's kept, of A's removed, of each other, new."""
    rng = np.random.default_rng(7)
    a = _base(rng, 600)
    kept_a = _greedy(a, THRESHOLD)
    of_kept = _copy(rng, a[rng.choice(np.flatnonzero(kept_a), 40, replace=False)])
    of_removed = _copy(rng, a[rng.choice(np.flatnonzero(~kept_a), 40, replace=False)])
    fresh = _base(rng, 200)
    b = np.concatenate([of_kept, of_removed, fresh])
    order = rng.permutation(len(b))
    return a, b[order]


def test_against_removes_copies_of_earlier_kept(batches, tmp_path):
    a, b = batches
    out_a, out_b = tmp_path / "A", tmp_path / "B"
    dedup_files(_write(tmp_path / "in_a", a, "a"), out_a, _config())
    before = {p: p.read_bytes() for p in out_a.rglob("*") if p.is_file()}
    res = dedup_files(_write(tmp_path / "in_b", b, "b"), out_b, _config(), against=[out_a])
    # earlier output untouched
    assert {p: p.read_bytes() for p in out_a.rglob("*") if p.is_file()} == before

    expected = _greedy(np.concatenate([a, b]), THRESHOLD)
    table_a, table_b = _removed(out_a), _removed(out_b)
    removed_a = {int(s[1:]) for s in table_a.column("id").to_pylist()}
    removed_b = {int(s[1:]) for s in table_b.column("id").to_pylist()}
    assert removed_a == set(np.flatnonzero(~expected[: len(a)]).tolist())
    assert removed_b == set(np.flatnonzero(~expected[len(a) :]).tolist())

    run_a = json.loads((out_a / INDEX_DIR / INDEX_FILE).read_text())["run_id"]
    earlier = table_b.filter(pa.compute.equal(table_b.column("reason"), REASON_EARLIER))
    assert len(earlier) >= 40  # every copy of an earlier kept item, at least
    assert set(earlier.column("duplicate_of_run").to_pylist()) == {run_a}
    kept_a_ids = {f"a{i:05d}" for i in np.flatnonzero(expected[: len(a)])}
    assert set(earlier.column("duplicate_of").to_pylist()) <= kept_a_ids
    assert (earlier.column("similarity").to_numpy() >= THRESHOLD - 1e-6).all()
    # rows removed within the new batch name an id of the new batch
    inner = table_b.filter(pa.compute.equal(table_b.column("reason"), REASON_SEMANTIC))
    assert len(inner) > 0
    assert all(s.startswith("b") for s in inner.column("duplicate_of").to_pylist())
    assert inner.column("duplicate_of_run").null_count == len(inner)
    # the similarities are exact against the named items
    x = {f"a{i:05d}": v for i, v in enumerate(a)} | {f"b{i:05d}": v for i, v in enumerate(b)}
    for row in table_b.to_pylist():
        sim = float(np.dot(x[row["id"]].astype(np.float64), x[row["duplicate_of"]]))
        assert sim == pytest.approx(row["similarity"], abs=1e-6)
    assert res.counts["removed_as_earlier"] == len(earlier)
    assert 0.0 <= res.counts["beyond_radius_share"] <= 1.0


def test_same_survivors_as_one_run(batches, tmp_path):
    """Keep first, witness: A then B --against A keeps exactly what one run over A+B keeps."""
    a, b = batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    dedup_files(
        _write(tmp_path / "in_b", b, "b"), tmp_path / "B", _config(), against=[tmp_path / "A"]
    )
    both = tmp_path / "in_ab"
    _write(both / "0", a, "a")
    _write(both / "1", b, "b")
    files = sorted(str(p) for p in both.rglob("*.parquet"))
    # other centroids (trained on A+B); with 16 border candidates over 8 clusters every pair
    # at or above the threshold is found by both, so the survivors must be equal
    dedup_files(files, tmp_path / "AB", _config(seed=5))
    incremental = set(_removed(tmp_path / "A").column("id").to_pylist()) | set(
        _removed(tmp_path / "B").column("id").to_pylist()
    )
    assert incremental == set(_removed(tmp_path / "AB").column("id").to_pylist())


def test_chain_of_three_runs(batches, tmp_path):
    a, b = batches
    rng = np.random.default_rng(3)
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    dedup_files(
        _write(tmp_path / "in_b", b, "b"), tmp_path / "B", _config(), against=[tmp_path / "A"]
    )
    ab = np.concatenate([a, b])
    kept_ab = _greedy(ab, THRESHOLD)
    picks = rng.choice(np.flatnonzero(kept_ab), 60, replace=False)
    c = np.concatenate([_copy(rng, ab[picks]), _base(rng, 100)])
    # only B named: A comes in through B's index
    dedup_files(
        _write(tmp_path / "in_c", c, "c"), tmp_path / "C", _config(), against=[tmp_path / "B"]
    )
    expected = _greedy(np.concatenate([ab, c]), THRESHOLD)
    removed_c = {int(s[1:]) for s in _removed(tmp_path / "C").column("id").to_pylist()}
    assert removed_c == set(np.flatnonzero(~expected[len(ab) :]).tolist())
    table = _removed(tmp_path / "C")
    earlier = table.filter(pa.compute.equal(table.column("reason"), REASON_EARLIER)).to_pylist()
    runs = {
        json.loads((tmp_path / n / INDEX_DIR / INDEX_FILE).read_text())["run_id"]: n for n in "AB"
    }
    assert {runs[r["duplicate_of_run"]] for r in earlier} == {"A", "B"}
    for r in earlier:
        assert r["duplicate_of"][0] == runs[r["duplicate_of_run"]].lower()


def test_mismatched_settings_refused(batches, tmp_path):
    a, b = batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config(), model="clip-L14")
    new = _write(tmp_path / "in_b", b, "b")
    with pytest.raises(InputError, match="model 'clip-L14' there, 'siglip' here"):
        dedup_files(new, tmp_path / "B", _config(), against=[tmp_path / "A"], model="siglip")
    with pytest.raises(InputError, match="dimension 48, here 24"):
        dedup_files(
            _write(tmp_path / "in_c", _unit(b[:, :24]), "c"),
            tmp_path / "C",
            _config(),
            against=[tmp_path / "A"],
        )
    with pytest.raises(InputError, match="mode 'witness' there, 'components' here"):
        dedup_files(new, tmp_path / "D", _config(mode="components"), against=[tmp_path / "A"])
    with pytest.raises(InputError, match="no dedup index"):
        dedup_files(new, tmp_path / "E", _config(), against=[tmp_path / "in_a"])
    meta_path = tmp_path / "A" / INDEX_DIR / INDEX_FILE
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": 1}))
    with pytest.raises(
        InputError, match="index version 1, this pixsieve reads versions 3, 4, 5 and 6"
    ):
        dedup_files(new, tmp_path / "F", _config(), against=[tmp_path / "A"])


def _as_version_4(index: Path) -> None:
    """Rewrite a version 5 or 6 index in the layout of versions 3 and 4: one part per input file and
    bucket (``kept/bBBBB/fFFFFF.parquet`` with an ``id`` column, ``vectors/bBBBB/fFFFFF`` in
    float32), no ``ids/``."""
    meta = json.loads((index / INDEX_FILE).read_text())
    files = sorted((index / "ids").glob("f*.parquet"))
    ids = [pq.read_table(f).column("id").to_pylist() for f in files]
    items = [np.load(f.with_suffix(".f32.npy")) for f in files]
    for part in sorted((index / "kept").glob("b*.parquet")):
        table = pq.read_table(part)
        file, item = table.column("file").to_numpy(), table.column("item").to_numpy()
        for f in np.unique(file):
            mine = np.flatnonzero(file == f)  # still sorted by cluster, secondary, cosine
            sub = table.take(mine).drop_columns(["file", "item"])
            sub = sub.add_column(0, "id", pa.array([ids[f][i] for i in item[mine]], pa.string()))
            (index / "kept" / part.stem).mkdir(exist_ok=True)
            (index / "vectors" / part.stem).mkdir(exist_ok=True)
            pq.write_table(sub, index / "kept" / part.stem / f"f{f:05d}.parquet")
            np.save(index / "vectors" / part.stem / f"f{f:05d}.f32.npy", items[f][item[mine]])
        part.unlink()
        for store in (index / "vectors").glob(f"{part.stem}.*.npy"):
            store.unlink()
    shutil.rmtree(index / "ids")
    (index / INDEX_FILE).write_text(json.dumps({**meta, "version": 4}))


def test_index_parts_point_at_their_items(batches, tmp_path):
    """Version 6: every part has the one schema; a membership's ``file`` and ``item`` name its
    row in ``ids/`` (same ``row``, the float32 embedding its int8 copy was made from, within
    its error bound); the kept rows are exactly the rows not removed; nothing temporary is
    left."""
    from pixsieve.dedup.index import KEPT_SCHEMA

    a, _ = batches
    dedup_files(_write(tmp_path / "in_a", a, "a", 3), tmp_path / "A", _config())
    index = tmp_path / "A" / INDEX_DIR
    ids = [pq.read_table(p) for p in sorted(index.glob("ids/f*.parquet"))]
    items = [np.load(p) for p in sorted(index.glob("ids/f*.f32.npy"))]
    kept_rows = np.concatenate([t.column("row").to_numpy() for t in ids])
    removed = {int(i[1:]) for i in _removed(tmp_path / "A").column("id").to_pylist()}
    assert sorted(set(range(len(a))) - removed) == kept_rows.tolist()
    for part in sorted(index.glob("kept/b*.parquet")):
        table = pq.read_table(part)
        assert table.schema.equals(KEPT_SCHEMA)
        q = np.load(index / "vectors" / f"{part.stem}.i8.npy")
        meta = np.load(index / "vectors" / f"{part.stem}.i8s.npy")
        assert q.dtype == np.int8 and meta.shape == (len(table), 2)
        file, item = table.column("file").to_numpy(), table.column("item").to_numpy()
        for n, (f, i) in enumerate(zip(file, item, strict=True)):
            assert ids[f].column("row")[int(i)].as_py() == table.column("row")[n].as_py()
            error = np.linalg.norm(items[f][i].astype(np.float64) - meta[n, 0] * q[n])
            assert error <= meta[n, 1] < 0.05
    assert not [p for p in index.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_index_rows_from_the_read_phase_equal_those_from_the_partitions(
    batches, tmp_path, monkeypatch
):
    """The index's int8 rows are the same whether a chunk is read from the read phase (each
    item once: a dense chunk) or from the assignment partitions (one copy per membership)."""
    from pixsieve.dedup import readphase

    a, _ = batches
    data = _write(tmp_path / "in_a", a, "a", 3)
    stores = {}
    for dense in (0.0, 1e9):  # every chunk from the read phase; none
        monkeypatch.setattr(readphase, "DENSE", dense)
        dedup_files(data, tmp_path / f"A{dense}", _config())
        vectors = tmp_path / f"A{dense}" / INDEX_DIR / "vectors"
        stores[dense] = {p.name: p.read_bytes() for p in sorted(vectors.glob("b*.npy"))}
    assert stores[0.0] and stores[0.0] == stores[1e9]


def test_older_index_versions_are_read(batches, tmp_path, monkeypatch):
    """Indexes of versions 5 (a float16 search store), 4 and 3 (one part per input file and
    bucket, ids in the parts; version 3 with a float16 copy beside the float32 store) give the
    same removals as version 6."""
    a, b = batches
    dedup_files(_write(tmp_path / "in_a", a, "a", 3), tmp_path / "A", _config())
    new = _write(tmp_path / "in_b", b, "b")
    dedup_files(new, tmp_path / "B6", _config(), against=[tmp_path / "A"])
    assert len(_removed(tmp_path / "B6")) > 0
    index = tmp_path / "A" / INDEX_DIR
    _as_version_5(index)
    dedup_files(new, tmp_path / "B5", _config(), against=[tmp_path / "A"])
    assert _removed(tmp_path / "B5").equals(_removed(tmp_path / "B6"))
    _as_version_4(index)
    assert len(list((index / "kept").glob("b*/f*.parquet"))) >= 3
    dedup_files(new, tmp_path / "B4", _config(), against=[tmp_path / "A"])
    assert _removed(tmp_path / "B4").equals(_removed(tmp_path / "B6"))
    from pixsieve.dedup import crossmatch

    monkeypatch.setattr(crossmatch, "FEW_PARTS", 0)  # each side in blocks, as for many parts
    dedup_files(new, tmp_path / "B4m", _config(), against=[tmp_path / "A"])
    assert _removed(tmp_path / "B4m").equals(_removed(tmp_path / "B6"))
    meta_path = index / INDEX_FILE
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": 3}))
    for f32 in index.rglob("*.f32.npy"):
        np.save(f32.with_name(f32.name.replace(".f32", ".f16")), np.load(f32).astype(np.float16))
    dedup_files(new, tmp_path / "B3", _config(), against=[tmp_path / "A"])
    assert _removed(tmp_path / "B3").equals(_removed(tmp_path / "B6"))


def _as_version_5(index: Path) -> None:
    """Rewrite a version 6 index as version 5: a float16 copy of the kept memberships'
    embeddings (from ``ids/``) where version 6 has the int8 one."""
    items = [np.load(p) for p in sorted(index.glob("ids/f*.f32.npy"))]
    for part in sorted((index / "kept").glob("b*.parquet")):
        table = pq.read_table(part, columns=["file", "item"])
        file, item = table.column("file").to_numpy(), table.column("item").to_numpy()
        rows = [items[f][i] for f, i in zip(file, item, strict=True)]
        half = np.array(rows, np.float32).reshape(len(rows), -1).astype(np.float16)
        np.save(index / "vectors" / f"{part.stem}.f16.npy", half)
        (index / "vectors" / f"{part.stem}.i8.npy").unlink()
        (index / "vectors" / f"{part.stem}.i8s.npy").unlink()
    meta = json.loads((index / INDEX_FILE).read_text())
    (index / INDEX_FILE).write_text(json.dumps({**meta, "version": 5}))


def test_pairs_at_the_threshold_are_exact(tmp_path):
    """The float32 candidate search misses no pair at or above the threshold, and every pair
    it reports is at or above it in exact float64 arithmetic (pairs within 8e-4 of it)."""
    rng = np.random.default_rng(3)
    a = _unit(rng.standard_normal((400, DIM)))
    src = rng.choice(len(a), 200, replace=False)
    t = THRESHOLD + rng.uniform(-8e-4, 8e-4, len(src))
    u = rng.standard_normal((len(src), DIM))
    u -= (u * a[src]).sum(1, keepdims=True) * a[src]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    b = _unit(t[:, None] * a[src] + np.sqrt(1 - t**2)[:, None] * u)
    exact = np.einsum("ij,ij->i", b.astype(np.float64), a[src].astype(np.float64))
    assert (exact >= THRESHOLD).any() and (exact < THRESHOLD).any()
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    assert len(_removed(tmp_path / "A")) == 0
    dedup_files(
        _write(tmp_path / "in_b", b, "b"), tmp_path / "B", _config(), against=[tmp_path / "A"]
    )
    table = _removed(tmp_path / "B")
    ids, dups = table.column("id").to_pylist(), table.column("duplicate_of").to_pylist()
    got = {int(s[1:]): d for s, d in zip(ids, dups, strict=True)}
    assert set(got) == set(np.flatnonzero(exact >= THRESHOLD).tolist())
    assert all(d == f"a{src[i]:05d}" for i, d in got.items())


def test_resumes_after_an_interruption(batches, tmp_path):
    """Stopped before the earlier-run phase, or while writing its index, a rerun finishes with
    the answer of an uninterrupted run and does not redo finished files."""
    a, b = batches
    dedup_files(_write(tmp_path / "in_a", a, "a", 3), tmp_path / "A", _config())
    new = _write(tmp_path / "in_b", b, "b", 3)
    dedup_files(new, tmp_path / "ref", _config(), against=[tmp_path / "A"])
    done: list[str] = []

    def failing(stop: str, after: int):
        def run(fn, argument_tuples):
            for args in argument_tuples:
                if fn.__name__ == stop and done.count(stop) >= after:
                    raise KeyboardInterrupt  # as if the run was stopped half-way
                done.append(fn.__name__)
                yield fn(*args)

        return run

    for stop, after in (("cross_bucket", 0), ("index_bucket", 1)):
        out = tmp_path / f"out-{stop}"
        with pytest.raises(KeyboardInterrupt):
            dedup_files(
                new, out, _config(), map_calls=failing(stop, after), against=[tmp_path / "A"]
            )
        done.clear()
        finished = sorted((out / "work").glob("assign/f*/*")) + sorted(
            [*(out / INDEX_DIR).glob("kept/b*"), *(out / INDEX_DIR).glob("ids/f*")]
        )
        stamps = {p: p.stat().st_mtime_ns for p in finished}
        dedup_files(new, out, _config(), map_calls=failing("", 0), against=[tmp_path / "A"])
        assert stamps and {p: p.stat().st_mtime_ns for p in finished} == stamps  # not redone
        got, ref = _removed(out), _removed(tmp_path / "ref")
        assert got.drop_columns(["duplicate_of_run"]).equals(ref.drop_columns(["duplicate_of_run"]))
        assert got.column("duplicate_of_run").equals(ref.column("duplicate_of_run"))
        kept = pq.read_table(sorted((out / INDEX_DIR).glob("ids/*.parquet"))).column("id")
        ref = pq.read_table(sorted((tmp_path / "ref" / INDEX_DIR).glob("ids/*.parquet")))
        kept, ref_kept = kept.to_pylist(), ref.column("id").to_pylist()
        assert sorted(kept) == sorted(ref_kept)


@pytest.mark.parametrize("mode", ["components", "semdedup"])
def test_other_modes_remove_copies_of_earlier_kept(batches, tmp_path, mode):
    """In every mode a new copy of an item the earlier run kept is removed as its duplicate,
    and nothing the earlier run kept is touched."""
    a, b = batches
    config = _config(mode=mode)
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", config)
    kept_a = set(f"a{i:05d}" for i in range(len(a))) - set(
        _removed(tmp_path / "A").column("id").to_pylist()
    )
    rng = np.random.default_rng(1)
    picks = rng.choice(sorted(int(s[1:]) for s in kept_a), 30, replace=False)
    new = np.concatenate([_copy(rng, a[picks]), b])
    dedup_files(
        _write(tmp_path / "in_b", new, "b"), tmp_path / "B", config, against=[tmp_path / "A"]
    )
    table = _removed(tmp_path / "B").to_pylist()
    earlier = {r["id"]: r for r in table if r["reason"] == REASON_EARLIER}
    for i in range(len(picks)):
        assert f"b{i:05d}" in earlier
        assert earlier[f"b{i:05d}"]["similarity"] >= THRESHOLD
    assert {r["duplicate_of"] for r in earlier.values()} <= kept_a


def test_far_new_items_are_reported(batches, tmp_path):
    """New items far from every earlier cluster are still assigned, counted and noted."""
    a, _ = batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    rng = np.random.default_rng(9)
    near = dedup_files(
        _write(tmp_path / "in_near", _copy(rng, a[:100], 0.05), "n"),
        tmp_path / "near",
        _config(),
        against=[tmp_path / "A"],
    )
    far = dedup_files(
        _write(tmp_path / "in_far", _unit(rng.standard_normal((100, DIM))), "f"),
        tmp_path / "far",
        _config(),
        against=[tmp_path / "A"],
    )
    assert near.counts["beyond_radius_share"] < 0.25 and not near.notes
    assert far.counts["beyond_radius_share"] > 0.9
    assert any("beyond the earlier clusters' radius" in note for note in far.notes)
    assert json.loads((tmp_path / "far" / "dedup.json").read_text())["counts"]["beyond_radius"] > 90


def test_integer_ids_stay_integers_when_nothing_is_removed_within_the_batch(tmp_path):
    """Only copies of earlier kept items in the new batch: ``id`` keeps the input's type."""
    rng = np.random.default_rng(3)
    a = _unit(rng.standard_normal((200, DIM)))
    b = _copy(rng, a[:20])

    def write(folder, x, offset):
        folder.mkdir()
        table = pa.table({"id": np.arange(len(x)) + offset, "embedding": fixed_list(x)})
        pq.write_table(table, folder / "part.parquet")
        return [str(folder / "part.parquet")]

    dedup_files(write(tmp_path / "a", a, 0), tmp_path / "A", _config())
    dedup_files(write(tmp_path / "b", b, 1000), tmp_path / "B", _config(), against=[tmp_path / "A"])
    table = _removed(tmp_path / "B")
    assert len(table) == 20
    assert set(table.column("reason").to_pylist()) == {REASON_EARLIER}
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("duplicate_of").type == pa.int64()


def test_the_assign_search_writes_the_cross_memberships(batches, tmp_path, monkeypatch):
    """Against runs with this run's centroids: the assign phase's search writes the cross
    memberships (no second search); they equal those of a separate cross-assign pass."""
    from pixsieve.dedup import crossassign, partition

    a, b = batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    new = _write(tmp_path / "in_b", b, "b")
    searched: list[str] = []

    class Counting(crossassign.CentroidSearch):
        def search(self, x):
            searched.append("search")
            return super().search(x)

    monkeypatch.setattr(crossassign, "CentroidSearch", Counting)
    one = dedup_files(new, tmp_path / "B", _config(), against=[tmp_path / "A"], keep_work=True)
    assert searched == []  # the cross-assign tasks found their files written
    monkeypatch.setattr(partition, "CrossWriter", lambda plan, index: _Done())
    two = dedup_files(new, tmp_path / "C", _config(), against=[tmp_path / "A"], keep_work=True)
    assert searched  # here the cross-assign pass searched
    for x_dir in (tmp_path / "B" / "work").glob("x*"):
        for part in sorted(x_dir.glob("assign/f*/b*.parquet")):
            other = tmp_path / "C" / "work" / part.relative_to(tmp_path / "B" / "work")
            assert pq.read_table(part).equals(pq.read_table(other))
    assert one.counts["earlier_memberships"] == two.counts["earlier_memberships"] > 0
    assert _removed(tmp_path / "B").equals(_removed(tmp_path / "C"))


class _Done:
    """A cross writer whose file is already written (the assign phase writes nothing)."""

    done = True


def test_index_member_counts_equal_the_parts(batches, tmp_path):
    """``members.npy`` holds per cluster what the parts hold (version 3 indexes, without it,
    are counted from the parts)."""
    from pixsieve.dedup.crossassign import earlier_counts
    from pixsieve.dedup.index import open_earlier

    a, _ = batches
    dedup_files(_write(tmp_path / "in_a", a, "a", 3), tmp_path / "A", _config())
    runs = open_earlier([tmp_path / "A"])
    k = int(runs[0].meta["clusters"])
    from_index = earlier_counts(runs, k)
    (tmp_path / "A" / INDEX_DIR / "members.npy").unlink()
    from_parts = earlier_counts(runs, k)
    for x, y in zip(from_index, from_parts, strict=True):
        np.testing.assert_array_equal(x, y)
    assert from_index[0].sum() > from_index[1].sum() > 0
    assert not list((tmp_path / "A" / INDEX_DIR / "kept").glob(".b*"))  # markers removed


def test_small_blocks_find_the_same_matches(batches, tmp_path, monkeypatch):
    """Clusters with more new rows than a block are matched block by block (each side with
    its own windows): the same removals as one block per side."""
    from pixsieve.dedup import crossmatch

    a, b = batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    new = _write(tmp_path / "in_b", b, "b")
    dedup_files(new, tmp_path / "B", _config(), against=[tmp_path / "A"])
    monkeypatch.setattr(crossmatch, "NEW_BLOCK", 3)
    dedup_files(new, tmp_path / "C", _config(), against=[tmp_path / "A"])
    assert len(_removed(tmp_path / "B")) > 0
    assert _removed(tmp_path / "B").equals(_removed(tmp_path / "C"))


def test_a_damaged_index_is_refused_in_one_line(batches, tmp_path):
    """A missing embedding store (a part's int8 copy or its scales, a file's kept items) is
    named before anything runs."""
    a, b = batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    new = _write(tmp_path / "in_b", b, "b")
    for store in ("vectors/*.i8.npy", "vectors/*.i8s.npy", "ids/*.f32.npy"):
        gone = next((tmp_path / "A" / INDEX_DIR).glob(store))
        gone.rename(gone.with_name("moved"))
        with pytest.raises(InputError, match=r"index damaged: 1 embedding store\(s\) missing"):
            dedup_files(new, tmp_path / "B", _config(), against=[tmp_path / "A"])
        gone.with_name("moved").rename(gone)


def test_an_earlier_output_elsewhere_is_read_from_a_local_copy(batches, tmp_path, monkeypatch):
    """``--against URL`` (here fsspec's in-memory filesystem): the index is copied once into
    ``$PIXSIEVE_CACHE/against`` and read there; the same removals as against the directory,
    and the URL is what the new run records."""
    import fsspec

    monkeypatch.setenv("PIXSIEVE_CACHE", str(tmp_path / "cache"))
    a, b = batches
    dedup_files(_write(tmp_path / "in_a", a, "a"), tmp_path / "A", _config())
    fs = fsspec.filesystem("memory")
    fs.put(str(tmp_path / "A" / INDEX_DIR), "/earlier/A/index", recursive=True)
    new, url = _write(tmp_path / "in_b", b, "b"), "memory://earlier/A"
    dedup_files(new, tmp_path / "B", _config(), against=[tmp_path / "A"])
    dedup_files(new, tmp_path / "C", _config(), against=[url])
    assert len(_removed(tmp_path / "B")) > 0
    assert _removed(tmp_path / "C").equals(_removed(tmp_path / "B"))
    parents = json.loads((tmp_path / "C" / INDEX_DIR / INDEX_FILE).read_text())["parents"]
    assert [p["path"] for p in parents] == [url]
    dedup_files(_write(tmp_path / "in_c", b[:5], "c"), tmp_path / "D", _config(), against=[url])
    assert len(list((tmp_path / "cache" / "against").iterdir())) == 1  # copied once
    with pytest.raises(InputError, match="--against memory://earlier/none: no dedup index"):
        dedup_files(new, tmp_path / "E", _config(), against=["memory://earlier/none"])
    fs.rm("/earlier", recursive=True)
