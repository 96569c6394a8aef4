"""A score filter written outside the package is swept, refiltered and drawn like the built-ins.

``BlueFilter`` below is all a user writes: its name, reason, score column, threshold setting
and default, rule and score. Nothing in pixsieve names it; the sweep, ``refilter`` and the
report find it from the run's ``run.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pixsieve.batch import ImageBatch
from pixsieve.cli.report import sweep as sweep_command
from pixsieve.pipeline import Pipeline
from pixsieve.refilter import refilter
from pixsieve.report import write_report
from pixsieve.run.fates import OFF
from pixsieve.run.sweep import sweep
from pixsieve.stages.base import ScoreFilter, keep_below
from pixsieve.stages.decode import DecodeStage

THRESHOLDS = (0.30, 0.34, 0.38)


class BlueFilter(ScoreFilter):
    """Remove images whose blue share of the colour sum is ≥ ``max_blue``."""

    name: ClassVar[str] = "blueness"
    reason: ClassVar[str] = "too_blue"
    column: ClassVar[str] = "blue_share"
    threshold_setting: ClassVar[str] = "max_blue"
    default_threshold: ClassVar[float] = 0.34
    threshold_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)
    keep_scores = staticmethod(keep_below)

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        assert batch.pixels is not None
        m = batch.pixels.astype(np.float32).mean(axis=(1, 2)) + 1e-3
        share = m[:, 2] / m.sum(axis=1)
        return {self.column: np.where(batch.decoded, share, np.nan).astype(np.float32)}


def run_blue(inputs: list[Path], out: Path, max_blue: float | None = None) -> Path:
    stages = [DecodeStage(image_size=32), BlueFilter(max_blue)]
    Pipeline(stages, samples_per_shard=5).run([str(p) for p in inputs], str(out), workers=2)
    return out


def manifest(out: Path) -> pa.Table:
    parts = [pq.read_table(p) for p in sorted((out / "manifest").glob("*.parquet"))]
    table = pa.concat_tables(parts, promote_options="permissive")
    return table.sort_by([("source", "ascending"), ("position", "ascending")])


@pytest.fixture(scope="module")
def blue_runs(good_shards: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fresh run per threshold (the first is swept and refiltered)."""
    return {
        t: run_blue(good_shards, tmp_path_factory.mktemp("blue") / "out", t) for t in THRESHOLDS
    }


def test_the_filter_declares_its_rule_once() -> None:
    f = BlueFilter()
    assert f.max_blue == 0.34 and f.describe() == {"score_only": False, "max_blue": 0.34}
    assert BlueFilter.threshold_key == "blueness_threshold"
    with pytest.raises(ValueError, match="between 0 and 1"):
        BlueFilter(1.5)


def test_sweep_counts_what_fresh_runs_keep(blue_runs: dict) -> None:
    base = blue_runs[THRESHOLDS[0]]
    result = sweep(str(base), thresholds={"blueness": [*THRESHOLDS, OFF]})
    assert {"blueness_threshold", "removed_too_blue"} <= set(result.columns)
    by = {r["blueness_threshold"]: r for r in result.rows}
    for t, out in blue_runs.items():
        reasons = manifest(out)["reason"].to_pylist()
        assert by[t]["removed_too_blue"] == reasons.count("too_blue")
        assert by[t]["kept"] == manifest(out)["status"].to_pylist().count("kept")
    assert by[None]["removed_too_blue"] == 0
    assert len({r["kept"] for r in result.rows}) > 1  # the thresholds matter on this data
    assert by[THRESHOLDS[0]]["current"]


def test_refilter_writes_what_a_fresh_run_writes(blue_runs: dict, tmp_path: Path) -> None:
    base, target = blue_runs[THRESHOLDS[0]], THRESHOLDS[-1]
    out = tmp_path / "refiltered"
    refilter(str(base), str(out), thresholds={"blueness": target}, workers=2)
    columns = ["source", "position", "key", "status", "reason", "blue_share", "output_shard"]
    assert manifest(out).select(columns) == manifest(blue_runs[target]).select(columns)
    assert sweep(str(out)).rows[0]["blueness_threshold"] == target


def test_cli_sweeps_it_by_name(blue_runs: dict) -> None:
    out = str(blue_runs[THRESHOLDS[0]])
    result = CliRunner().invoke(sweep_command, [out, "--threshold", "blueness=0.3,off"])
    assert result.exit_code == 0, result.output
    table = pcsv.read_csv(Path(out) / "sweep.csv")
    assert table["blueness_threshold"].to_pylist() == [0.3, None]
    assert table["removed_too_blue"][1].as_py() == 0
    result = CliRunner().invoke(sweep_command, [out, "--threshold", "sharpness=1"])
    assert result.exit_code == 1 and "no score filter sharpness" in result.output


def test_report_draws_its_histogram_and_funnel_step(blue_runs: dict) -> None:
    out = blue_runs[THRESHOLDS[0]]
    page = Path(write_report(str(out))).read_text()
    assert "blue share" in page  # histogram title (from the column name)
    assert "max 0.3 (remove ≥)" in page  # its threshold line, in its rule's words
    assert ">blueness<" in page  # its funnel step
