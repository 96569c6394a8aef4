"""``pixsieve dedup`` on small Parquet tables: list and fixed-size-list columns, errors."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from dedup_tools.synthetic import planted_embeddings

from pixsieve.cli.dedup import dedup
from pixsieve.dedup import SemanticDedupConfig, directio, find_duplicates

DIM = 64


@pytest.fixture(scope="module")
def planted():
    return planted_embeddings(600, DIM, dup_fraction=0.4, seed=3)


def _ids(n: int) -> list[str]:
    return [f"img-{i:05d}" for i in range(n)]


def _fixed(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])


def _lists(x: np.ndarray) -> pa.Array:
    return pa.array([row.tolist() for row in x], type=pa.list_(pa.float64()))


def _run(*args: str):
    return CliRunner().invoke(dedup, [*args, "--no-progress"], catch_exceptions=False)


def test_fixed_size_list_column_with_custom_name(tmp_path, planted):
    x = planted.embeddings
    path = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"key": _ids(len(x)), "image_embedding": _fixed(x)}), path)
    out = tmp_path / "out"
    res = _run(
        str(path),
        "--output",
        str(out),
        "--id-column",
        "key",
        "--embedding-column",
        "image_embedding",
        "--keep",
        "first",
    )
    assert res.exit_code == 0, res.output
    table = pq.read_table(out / "duplicates.parquet")
    assert table.column_names == [
        "id",
        "duplicate_of",
        "similarity",
        "component_id",
        "component_size",
        "chained",
        "reason",
        "duplicate_of_run",
    ]
    expected = find_duplicates(x, SemanticDedupConfig(keep="first"))
    removed = expected.removed_indices()
    ids = np.array(_ids(len(x)))
    assert table.column("id").to_pylist() == ids[removed].tolist()
    assert table.column("duplicate_of").to_pylist() == ids[expected.duplicate_of[removed]].tolist()
    np.testing.assert_allclose(table.column("similarity").to_numpy(), expected.similarity[removed])
    assert (table.column("similarity").to_numpy() > 0.5).all()
    summary = json.loads((out / "dedup.json").read_text())
    assert summary["counts"]["removed"] == len(removed) > 50
    assert "duplicates" in res.output and "duplicates.parquet" in res.output


def test_list_column_in_a_directory_with_scores(tmp_path, planted):
    x = planted.embeddings
    scores = np.random.default_rng(0).uniform(0, 10, len(x))
    data = tmp_path / "embeddings"
    data.mkdir()
    half = len(x) // 2
    for part, sl in enumerate([slice(0, half), slice(half, None)]):
        pq.write_table(
            pa.table(
                {"id": np.arange(len(x))[sl], "embedding": _lists(x[sl]), "aesthetic": scores[sl]}
            ),
            data / f"part-{part}.parquet",
        )
    out = tmp_path / "out"
    res = _run(str(data), "-o", str(out), "--score-column", "aesthetic", "--threshold", "0.96")
    assert res.exit_code == 0, res.output
    table = pq.read_table(out / "duplicates.parquet").to_pandas()
    assert len(table)
    for _, row in table.iterrows():
        assert scores[row["duplicate_of"]] >= scores[row["id"]]
        # below the threshold only through a chain; flagged when far below
        assert row["similarity"] >= 0.96 - 0.05 or row["chained"]


def test_semdedup_mode(tmp_path, planted):
    x = planted.embeddings
    path = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"id": np.arange(len(x)), "embedding": _fixed(x)}), path)
    res = _run(
        str(path),
        "-o",
        str(tmp_path / "out"),
        "--mode",
        "semdedup",
        "--keep",
        "farthest",
        "--clusters",
        "4",
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "dedup.json").read_text())["config"]["mode"] == "semdedup"


def _bad_table(tmp_path, kind: str):
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    path = tmp_path / f"{kind}.parquet"
    if kind == "missing":
        table = pa.table({"id": np.arange(20), "vec": _fixed(x)})
    elif kind == "dims":
        rows = [row.tolist() for row in x]
        rows[7] = rows[7][:5]
        table = pa.table({"id": np.arange(20), "embedding": pa.array(rows)})
    elif kind == "nan":
        x[3, 2] = np.nan
        table = pa.table({"id": np.arange(20), "embedding": _fixed(x)})
    elif kind == "type":
        table = pa.table({"id": np.arange(20), "embedding": np.arange(20.0)})
    else:  # repeated ids
        table = pa.table({"id": np.zeros(20, dtype=np.int64), "embedding": _fixed(x)})
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "missing column(s) 'embedding'"),
        ("dims", "8 dimensions; 1 row(s), first id 7 has 5"),
        ("nan", "NaN or inf in embeddings: 1 row(s), first id 3"),
        ("type", "must be a list of floats"),
        ("ids", "ids must be unique; 0 appears more than once"),
    ],
)
def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, kind, message):
    path = _bad_table(tmp_path, kind)
    res = CliRunner().invoke(dedup, [str(path), "-o", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 1
    assert message in res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_help_mentions_eps():
    res = CliRunner().invoke(dedup, ["--help"])
    assert res.exit_code == 0
    assert "1 - eps" in res.output


@pytest.mark.parametrize("threshold", ["-0.5", "0", "1.5", "nan"])
def test_threshold_outside_0_1_is_refused_like_curate(tmp_path, threshold):
    path = _bad_table(tmp_path, "nan").with_name("unused.parquet")  # never read
    path.write_bytes(b"")
    res = CliRunner().invoke(dedup, [str(path), "-o", str(tmp_path / "out"), "-t", threshold])
    assert res.exit_code == 2
    assert "cosine similarity in (0, 1]" in res.output
    assert not (tmp_path / "out").exists()


def test_several_inputs_a_glob_and_foreign_files(tmp_path, planted):
    x = planted.embeddings
    data = tmp_path / "emb"
    data.mkdir()
    for part, sl in enumerate([slice(0, 200), slice(200, 400), slice(400, None)]):
        table = pa.table({"id": np.arange(len(x))[sl], "embedding": _fixed(x[sl])})
        pq.write_table(table, data / f"part-{part}.parquet")
    (data / "_SUCCESS").write_text("")
    expected = find_duplicates(x, SemanticDedupConfig(keep="first"))
    for i, inputs in enumerate(
        [[str(data)], [str(data / "part-0.parquet"), str(data / "part-[12].parquet")]]
    ):
        out = tmp_path / f"out{i}"
        res = _run(*inputs, "-o", str(out), "--keep", "first", "--memory-limit", "1GiB")
        assert res.exit_code == 0, res.output
        table = pq.read_table(out / "duplicates.parquet")
        assert table.column("id").to_pylist() == expected.removed_indices().tolist()
        assert not (out / "work").exists()  # removed after success


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory-limit", "lots"], "not a memory size"),
        (["--memory-limit", "10MiB"], "too small"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, planted, args, message):
    path = tmp_path / "emb.parquet"
    x = planted.embeddings
    pq.write_table(pa.table({"id": np.arange(len(x)), "embedding": _fixed(x)}), path)
    res = CliRunner().invoke(dedup, [str(path), "-o", str(tmp_path / "out"), *args])
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output


def test_a_file_that_is_not_parquet(tmp_path):
    path = tmp_path / "emb.parquet"
    path.write_text("id,embedding\n")
    res = CliRunner().invoke(dedup, [str(path), "-o", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert "is not a readable Parquet file" in res.output and "Traceback" not in res.output


def test_against_an_earlier_output(tmp_path, planted):
    """A second batch with copies of the first: removed as duplicates of the earlier run; a
    mismatched model id is one line, not a traceback."""
    x = planted.embeddings
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": _ids(len(x)), "embedding": _fixed(x)}), first)
    rng = np.random.default_rng(0)
    copies = x[:50] + 0.001 * rng.standard_normal((50, DIM)).astype(np.float32)
    new_ids = [f"new-{i:03d}" for i in range(50)]
    pq.write_table(pa.table({"id": new_ids, "embedding": _fixed(copies)}), second)
    res = _run(str(first), "-o", str(tmp_path / "A"), "--keep", "first", "--model-id", "clip")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "A" / "index" / "index.json").exists()
    args = [str(second), "-o", str(tmp_path / "B"), "--keep", "first", "--against"]
    res = _run(*args, str(tmp_path / "A"), "--model-id", "clip")
    assert res.exit_code == 0, res.output
    assert "removed as duplicates of earlier runs" in res.output
    table = pq.read_table(tmp_path / "B" / "duplicates.parquet")
    assert table.column("id").to_pylist() == new_ids
    assert set(table.column("reason").to_pylist()) == {"duplicate_of_earlier"}
    kept_first = set(_ids(len(x))) - set(
        pq.read_table(tmp_path / "A" / "duplicates.parquet")["id"].to_pylist()
    )
    assert set(table.column("duplicate_of").to_pylist()) <= kept_first
    res = CliRunner().invoke(
        dedup, [*args, str(tmp_path / "A"), "--model-id", "other", "--no-progress"]
    )
    assert res.exit_code != 0
    assert "Error: --against" in res.output and "model 'clip' there, 'other' here" in res.output
    assert "Traceback" not in res.output
    # --recluster: the same removals; without --against it is a one-line error
    res = _run(*args, str(tmp_path / "A"), "--recluster", "on", "-o", str(tmp_path / "R"))
    assert res.exit_code == 0, res.output
    again = pq.read_table(tmp_path / "R" / "duplicates.parquet")
    assert again.column("id").to_pylist() == new_ids
    res = CliRunner().invoke(dedup, [str(second), "-o", str(tmp_path / "X"), "--recluster", "on"])
    assert res.exit_code != 0 and "--recluster needs --against" in res.output
    assert "Traceback" not in res.output


def test_a_full_disk_is_one_line_naming_the_file_and_a_rerun_resumes(
    tmp_path, planted, monkeypatch
):
    path = tmp_path / "emb.parquet"
    x = planted.embeddings
    pq.write_table(pa.table({"id": _ids(len(x)), "embedding": _fixed(x)}), path)
    out = tmp_path / "out"
    real = directio._write_all
    full = {"left": 3}  # the disk fills a few writes in

    def write_all(fd, data, at, name):
        full["left"] -= 1
        if full["left"] < 0:
            real(fd, data[:0], at, name)  # nothing written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        real(fd, data, at, name)

    monkeypatch.setattr(directio, "_write_all", write_all)
    args = [str(path), "-o", str(out), "--no-progress", "--keep", "first"]
    res = CliRunner().invoke(dedup, args)
    assert res.exit_code == 1, res.output
    assert "No space left on device" in res.output and str(out / "work") in res.output
    assert "--work-dir" in res.output and "resume" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 4
    monkeypatch.setattr(directio, "_write_all", real)  # room again
    res = CliRunner().invoke(dedup, args)
    assert res.exit_code == 0, res.output
    expected = find_duplicates(x, SemanticDedupConfig(keep="first")).removed_indices()
    got = pq.read_table(out / "duplicates.parquet").column("id").to_pylist()
    assert got == np.array(_ids(len(x)))[expected].tolist()
