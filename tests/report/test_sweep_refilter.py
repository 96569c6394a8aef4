"""Sweeps count what a fresh run keeps; refilter writes what a fresh run writes."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from pixsieve.executors import LocalExecutor
from pixsieve.refilter import refilter
from pixsieve.run.fates import OFF
from pixsieve.run.finished import FinishedRun, RunError
from pixsieve.run.sweep import sweep

# (aesthetic_min, nsfw_max, dedup_threshold) that fresh runs are compared with (the scored
# run itself uses 3.0, 0.5, 0.99: see conftest.py)
COMBOS = [(2.0, 0.6, 0.99), (4.0, 0.4, 0.95), (3.5, 0.5, None)]


def manifest(out: Path) -> pa.Table:
    parts = [pq.read_table(p) for p in sorted((out / "manifest").glob("*.parquet"))]
    table = pa.concat_tables(parts, promote_options="permissive")
    return table.sort_by([("source", "ascending"), ("position", "ascending")])


def normalised(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    for r in rows:  # messages may quote object addresses
        r["reason"] = re.sub(r" at 0x[0-9a-f]+", "", r["reason"] or "") or None
    return rows


def members(out: Path) -> dict[tuple[str, str], str]:
    found = {}
    for path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                data = tf.extractfile(m).read()  # type: ignore[union-attr]
                found[(path.name, m.name)] = hashlib.sha256(data).hexdigest()
    return found


@pytest.fixture(scope="module")
def fresh_runs(
    run_inputs: list[Path], pipeline_runner, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """Fresh runs of the same inputs with each of COMBOS."""
    out = {}
    for a, p, t in COMBOS:
        path = tmp_path_factory.mktemp("fresh") / "out"
        pipeline_runner(run_inputs, path, aesthetic_min=a, nsfw_max=p, dedup_threshold=t)
        out[(a, p, t)] = path
    return out


def test_sweep_of_the_run_itself_matches_its_manifest(scored_run: Path, run_settings) -> None:
    result = sweep(str(scored_run))
    assert len(result.rows) == 1
    row = result.rows[0]
    kept = manifest(scored_run).filter(pa.compute.equal(manifest(scored_run)["status"], "kept"))
    assert row["current"] and row["kept"] == kept.num_rows
    assert {k: row[k] for k in run_settings} == run_settings
    assert result.samples == manifest(scored_run).num_rows - 1  # less the not-a-tar row


def test_sweep_equals_fresh_runs(scored_run: Path, fresh_runs: dict) -> None:
    result = sweep(
        str(scored_run),
        aesthetic_min=sorted({c[0] for c in COMBOS}),
        nsfw_max=sorted({c[1] for c in COMBOS}),
        dedup_threshold=[0.99, 0.95, OFF],
    )
    assert len(result.rows) == 3 * 3 * 3
    by = {(r["aesthetic_min"], r["nsfw_max"], r["dedup_threshold"]): r for r in result.rows}
    for (a, p, t), out in fresh_runs.items():
        table = manifest(out)
        status = table["status"].to_pylist()
        reason = table["reason"].to_pylist()
        row = by[(a, p, t)]
        assert row["kept"] == status.count("kept"), (a, p, t)
        assert row["removed_aesthetic"] == reason.count("aesthetic")
        assert row["removed_nsfw"] == reason.count("nsfw")
        assert row["removed_semantic_duplicate"] == reason.count("semantic_duplicate")
        assert row["fraction"] == pytest.approx(row["kept"] / result.samples)


def test_sweep_csv(scored_run: Path, tmp_path: Path) -> None:
    result = sweep(str(scored_run), aesthetic_min=[1.0, 5.0], nsfw_max=OFF, dedup_threshold=OFF)
    path = result.write_csv(str(tmp_path / "s.csv"))
    table = pcsv.read_csv(path)
    assert table.num_rows == 2 and table["kept"].to_pylist() == [r["kept"] for r in result.rows]
    assert table["nsfw_max"].null_count == 2
    assert result.rows[0]["kept"] > result.rows[1]["kept"]


@pytest.mark.parametrize("combo", COMBOS)
def test_refilter_equals_fresh_run(
    scored_run: Path, fresh_runs: dict, combo: tuple, tmp_path: Path
) -> None:
    a, p, t = combo
    out = tmp_path / "refiltered"
    result = refilter(
        str(scored_run),
        str(out),
        aesthetic_min=a,
        nsfw_max=p,
        dedup_threshold=OFF if t is None else t,
        workers=2,
    )
    fresh = fresh_runs[combo]
    assert normalised(manifest(out)) == normalised(manifest(fresh))
    assert members(out) == members(fresh)  # same kept samples, identical bytes, same shards
    assert result.counts["kept"] == manifest(fresh)["status"].to_pylist().count("kept")
    fresh_counters = json.loads((fresh / "run.json").read_text())["counters"]
    for name in ("aesthetic", "nsfw", "semantic_dedup"):  # recounted in the one shape
        if name in fresh_counters:
            assert result.record["counters"][name]["counts"] == fresh_counters[name]["counts"]
    assert (out / "report.html").exists()
    again = sweep(str(out))  # the new directory is itself a finished run
    assert again.rows[0]["kept"] == result.counts["kept"]
    assert again.rows[0]["aesthetic_min"] == a
    settings = FinishedRun.open(str(out)).semantic_config()  # the new run's own settings
    assert (settings is None) if t is None else (settings.threshold == t)


def test_refilter_refuses_to_clobber(scored_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="must differ"):
        refilter(str(scored_run), str(scored_run))
    out = tmp_path / "r"
    refilter(str(scored_run), str(out), report=False)
    with pytest.raises(RunError, match="already holds a run"):
        refilter(str(scored_run), str(out), report=False)
    refilter(str(scored_run), str(out), aesthetic_min=OFF, overwrite=True, report=False)


def test_thresholds_a_run_cannot_answer(plain_run: Path, scored_run: Path) -> None:
    with pytest.raises(RunError, match="no aesthetic_score scores"):
        sweep(str(plain_run), aesthetic_min=[4.0])
    with pytest.raises(RunError, match="no nsfw_prob scores"):
        refilter(str(plain_run), str(plain_run.parent / "x"), nsfw_max=0.5)
    assert sweep(str(plain_run)).rows[0]["kept"] == 21
    assert sweep(str(plain_run), dedup_threshold=OFF).rows[0]["dedup_threshold"] is None
    with pytest.raises(RunError, match="no cached embeddings"):
        sweep(str(plain_run), dedup_threshold=[0.9])
    with pytest.raises(RunError, match="probability"):
        sweep(str(scored_run), nsfw_max=[2.0])


def test_score_only_stage_is_off_by_default(
    run_inputs: list[Path], pipeline_runner, scored_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "score-only"
    pipeline_runner(run_inputs, out, aesthetic_score_only=True)
    kept = manifest(out)["status"].to_pylist().count("kept")
    own = sweep(str(out)).rows[0]
    assert own["aesthetic_min"] is None and own["kept"] == kept and own["current"]
    strict = sweep(str(out), aesthetic_min=3.0).rows[0]  # what the scored run applied
    assert strict["kept"] == manifest(scored_run)["status"].to_pylist().count("kept")
    refilter(str(scored_run), str(tmp_path / "off"), aesthetic_min=OFF, report=False)
    assert sweep(str(tmp_path / "off")).rows[0]["kept"] == kept


class CountingExecutor(LocalExecutor):
    """A local executor that counts what it is asked to place."""

    def __init__(self) -> None:
        super().__init__(workers=2)
        self.placed: list[str] = []

    def map(self, worker, tasks, **kw):  # type: ignore[no-untyped-def,override]
        self.placed.append(type(worker).__name__)
        return super().map(worker, tasks, **kw)

    def map_calls(self, fn, calls):  # type: ignore[no-untyped-def,override]
        self.placed.append(fn.__name__)
        return super().map_calls(fn, calls)


def test_refilter_places_its_passes_through_the_given_executor(
    scored_run: Path, tmp_path: Path
) -> None:
    ex = CountingExecutor()
    result = refilter(str(scored_run), str(tmp_path / "r"), executor=ex, report=False)
    assert ex.placed[-2:] == ["ExportWorker", "_index_part"]  # the export, then the index
    assert "bucket_edges" in ex.placed  # semantic dedup too
    assert result.record["executor"] == ex.describe()
    assert set(result.record["tasks"]) == {"export"}
    assert result.record["counters"]["semantic_dedup"]["counts"]["in"] > 0
