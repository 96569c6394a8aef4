"""Partitioned dedup over files gives the in-memory answer, resumes, and reads many inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixsieve.dedup import SemanticDedupConfig, find_duplicates
from pixsieve.dedup.memory import Budget
from pixsieve.dedup.packing import fixed_list
from pixsieve.dedup.partitioned import dedup_files, thread_map
from pixsieve.dedup.sources import Columns, InputError


def _write_files(folder, x, scores, n_files: int = 4) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(x), n_files + 1).astype(int)
    paths = []
    for f, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        path = folder / f"part-{f:02d}.parquet"
        table = pa.table(
            {
                "id": [f"img-{i:05d}" for i in range(lo, hi)],
                "embedding": fixed_list(x[lo:hi]),
                "score": scores[lo:hi],
            }
        )
        pq.write_table(table, path, row_group_size=300)
        paths.append(path)
    return paths


def _as_arrays(path, n: int) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    rows = np.array([int(s[4:]) for s in table.column("id").to_pylist()], dtype=np.int64)
    dup = np.full(n, -1)
    dup[rows] = [int(s[4:]) for s in table.column("duplicate_of").to_pylist()]
    comp = np.full(n, -1)
    comp[rows] = table.column("component_id").to_numpy()
    sim = np.full(n, np.nan, dtype=np.float32)
    sim[rows] = table.column("similarity").to_numpy()
    return {"duplicate_of": dup, "component_id": comp, "similarity": sim}


def _check_same(path, expected) -> None:
    got = _as_arrays(path, len(expected))
    np.testing.assert_array_equal(got["duplicate_of"], expected.duplicate_of)
    removed = expected.removed
    np.testing.assert_array_equal(got["component_id"][removed], expected.component_id[removed])
    np.testing.assert_array_equal(got["similarity"], expected.similarity)


@pytest.mark.parametrize("mode", ["witness", "components", "semdedup"])
@pytest.mark.parametrize("fixture", ["random_planted", "topic_planted"])
def test_same_answer_as_in_memory(fixture, mode, request, tmp_path):
    planted = request.getfixturevalue(fixture)
    x = planted.embeddings
    scores = np.random.default_rng(1).uniform(0, 10, len(x))
    config = SemanticDedupConfig(mode=mode, n_clusters=24)
    expected = find_duplicates(x, config, aesthetic=scores)
    assert expected.n_removed > 300
    _write_files(tmp_path / "in", x, scores)
    result = dedup_files(
        tmp_path / "in", tmp_path / "out", config, columns=Columns(score="score"), workers=2
    )
    _check_same(result.duplicates, expected)
    assert result.counts["removed"] == expected.n_removed
    assert result.counts["components"] == expected.counts["components"]


def test_passes_read_the_read_phase_or_the_partitions_alike(random_planted, tmp_path, monkeypatch):
    """The similarity passes read a pass's rows from the read phase (each item once) or from
    the assignment partitions (a copy per membership): the same answer either way."""
    from pixsieve.dedup import buckets, readphase

    x = random_planted.embeddings
    scores = np.random.default_rng(1).uniform(0, 10, len(x))
    config = SemanticDedupConfig(n_clusters=24)
    expected = find_duplicates(x, config, aesthetic=scores)
    _write_files(tmp_path / "in", x, scores)
    used: list[str] = []

    def counted(name: str):
        real = getattr(buckets, name)

        def call(*args, **kwargs):
            used.append(name)
            return real(*args, **kwargs)

        return call

    for name in ("gather_rows", "read_partitions_into"):
        monkeypatch.setattr(buckets, name, counted(name))
    for dense in (0.0, 1e9):  # every pass from the read phase; none
        monkeypatch.setattr(readphase, "DENSE", dense)
        result = dedup_files(
            tmp_path / "in", tmp_path / f"out{dense}", config, columns=Columns(score="score")
        )
        _check_same(result.duplicates, expected)
    assert used[0] == "gather_rows" and used[-1] == "read_partitions_into"


def test_two_level_kmeans_and_search_same_answer_as_in_memory(tmp_path, monkeypatch):
    from dedup_tools.synthetic import planted_embeddings

    from pixsieve.dedup import centroid_search

    monkeypatch.setattr(centroid_search, "FLAT_MAX_CENTROIDS", 100)
    planted = planted_embeddings(12000, 768, dup_fraction=0.3, n_topics=200, seed=4)
    x = planted.embeddings
    scores = np.random.default_rng(3).uniform(0, 10, len(x))
    config = SemanticDedupConfig(n_clusters=400)  # two-level k-means: k > 256
    expected = find_duplicates(x, config, aesthetic=scores)
    pairs = find_duplicates(x, SemanticDedupConfig(n_clusters=400, return_pairs=True)).pairs
    truth = planted.planted_pairs(config.threshold)
    found = set(map(tuple, pairs.tolist()))
    assert len(found & set(map(tuple, truth.tolist()))) >= 0.995 * len(truth)
    _write_files(tmp_path / "in", x, scores)
    result = dedup_files(
        tmp_path / "in", tmp_path / "out", config, columns=Columns(score="score"), workers=2
    )
    _check_same(result.duplicates, expected)


def test_small_buckets_read_a_few_clusters_at_a_time(topic_planted, tmp_path, monkeypatch):
    x = topic_planted.embeddings
    scores = np.zeros(len(x))
    config = SemanticDedupConfig(keep="first", n_clusters=30)
    expected = find_duplicates(x, config)
    monkeypatch.setattr(Budget, "bucket_rows", property(lambda self: 400))
    monkeypatch.setattr(Budget, "buckets", lambda self, memberships: 3)
    _write_files(tmp_path / "in", x, scores, n_files=3)
    result = dedup_files(tmp_path / "in", tmp_path / "out", config)
    assert result.counts["bucket_passes"] > 3
    assert result.counts["buckets"] == 3
    _check_same(result.duplicates, expected)


def test_resume_redoes_only_missing_partitions(topic_planted, tmp_path):
    x = topic_planted.embeddings
    scores = np.random.default_rng(2).uniform(0, 1, len(x))
    config = SemanticDedupConfig(n_clusters=12)
    _write_files(tmp_path / "in", x, scores)
    calls: list[str] = []

    def failing(fn, argument_tuples):
        for args in argument_tuples:
            if fn.__name__ == "bucket_edges" and len(calls) >= 2:
                raise KeyboardInterrupt  # as if the run was stopped half-way
            calls.append(fn.__name__)
            yield fn(*args)

    with pytest.raises(KeyboardInterrupt):
        dedup_files(
            tmp_path / "in",
            tmp_path / "out",
            config,
            columns=Columns(score="score"),
            map_calls=failing,
            memory_limit=600 << 20,  # small: several buckets
        )
    work = tmp_path / "out" / "work"
    assign_dirs = sorted(work.glob("assign/f?????"))
    stamps = {p: p.stat().st_mtime_ns for p in assign_dirs}
    assert len(assign_dirs) == 4 and not (tmp_path / "out" / "duplicates.parquet").exists()
    seen: list[tuple[str, tuple]] = []

    def recording(fn, argument_tuples):
        for args in argument_tuples:
            seen.append((fn.__name__, args))
            yield fn(*args)

    result = dedup_files(
        tmp_path / "in",
        tmp_path / "out",
        config,
        columns=Columns(score="score"),
        map_calls=recording,
        memory_limit=600 << 20,
    )
    assert {p: p.stat().st_mtime_ns for p in assign_dirs} == stamps  # not redone
    assert [name for name, _ in seen].count("assign_file") == 4
    expected = find_duplicates(x, config, aesthetic=scores)
    _check_same(result.duplicates, expected)


def test_inputs_glob_list_and_foreign_files(topic_planted, tmp_path):
    x = topic_planted.embeddings[:1200]
    paths = _write_files(tmp_path / "in", x, np.zeros(len(x)), n_files=3)
    (tmp_path / "in" / "README.txt").write_text("not data")
    (tmp_path / "in" / "_SUCCESS").write_text("")
    config = SemanticDedupConfig(keep="first", n_clusters=4)
    expected = find_duplicates(x, config)
    for i, inputs in enumerate(
        [tmp_path / "in", str(tmp_path / "in" / "part-*.parquet"), [paths[0], *paths[1:]]]
    ):
        result = dedup_files(inputs, tmp_path / f"out{i}", config)
        _check_same(result.duplicates, expected)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.parquet", "no such file or directory"),
        (lambda d: d / "empty", "no Parquet files"),
        (lambda d: d / "notes.parquet", "is not a readable Parquet file"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, make, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    (tmp_path / "notes.parquet").write_text("this is not parquet")
    with pytest.raises(InputError, match=message) as info:
        dedup_files(make(tmp_path), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_memory_limit_too_small_is_refused(random_planted, tmp_path):
    x = random_planted.embeddings[:200]
    _write_files(tmp_path / "in", x, np.zeros(len(x)), n_files=1)
    with pytest.raises(InputError, match="too small"):
        dedup_files(tmp_path / "in", tmp_path / "out", memory_limit=100 << 20)


def test_thread_map_keeps_order():
    run = thread_map(3)
    assert list(run(lambda a, b: a * b, [(i, 2) for i in range(20)])) == [2 * i for i in range(20)]


def test_empty_input_writes_an_empty_result(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    empty = pa.table({"id": pa.array([], pa.string()), "embedding": fixed_list(np.zeros((0, 8)))})
    pq.write_table(empty, folder / "a.parquet")
    result = dedup_files(folder, tmp_path / "out")
    assert pq.read_table(result.duplicates).num_rows == 0
    assert result.counts["removed"] == 0


@pytest.mark.parametrize("mode", ["witness", "components", "semdedup"])
def test_partitioned_components_same_answer(mode, random_planted, tmp_path, monkeypatch):
    x = random_planted.embeddings
    scores = np.random.default_rng(1).uniform(0, 10, len(x))
    config = SemanticDedupConfig(mode=mode, n_clusters=24)
    expected = find_duplicates(x, config, aesthetic=scores)
    monkeypatch.setattr(Budget, "component_edges", property(lambda self: 150))
    _write_files(tmp_path / "in", x, scores)
    result = dedup_files(
        tmp_path / "in", tmp_path / "out", config, columns=Columns(score="score"), workers=2
    )
    assert result.counts["component_parts"] > 3
    _check_same(result.duplicates, expected)
    assert result.counts["removed"] == expected.n_removed
    assert result.counts["components"] == expected.counts["components"]


def test_spent_work_files_are_deleted_and_a_rerun_still_resumes(topic_planted, tmp_path):
    """Without an index, the assign partitions' embeddings go after the similarity phase and the
    read phase's after gather (in the background); a run stopped after that resumes and gives
    the same answer."""
    import time

    x = topic_planted.embeddings
    scores = np.random.default_rng(3).uniform(0, 1, len(x))
    config = SemanticDedupConfig(n_clusters=12)
    _write_files(tmp_path / "in", x, scores)
    run = {"config": config, "columns": Columns(score="score"), "index": False, "keep_work": False}

    def stop_at_resolve(fn, argument_tuples):
        for args in argument_tuples:
            if fn.__name__ == "resolve_bucket":
                raise KeyboardInterrupt
            yield fn(*args)

    with pytest.raises(KeyboardInterrupt):
        dedup_files(tmp_path / "in", tmp_path / "out", map_calls=stop_at_resolve, **run)
    work = tmp_path / "out" / "work"
    assert list(work.glob("assign/f*/b*.parquet")) and list(work.glob("read/f*/i*.parquet"))
    for _ in range(100):  # deleted on a background thread
        if not list(work.glob("assign/f*/b*.f32")) and not list(work.glob("read/f*/x.npy")):
            break
        time.sleep(0.05)
    assert not list(work.glob("assign/f*/b*.f32")) and not list(work.glob("read/f*/x.npy"))
    result = dedup_files(tmp_path / "in", tmp_path / "out", **run)
    _check_same(result.duplicates, find_duplicates(x, config, aesthetic=scores))
    assert not work.exists()
