"""The pass sequence is a public object that can start from any pass."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pixsieve import Pipeline
from pixsieve.executors import LocalExecutor
from pixsieve.io.shards import discover_shards
from pixsieve.passes import PASSES, Passes
from pixsieve.run.layout import RunLayout
from pixsieve.stages import DecodeStage, ImageSizeFilter


def _files(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for sub in ("shards", "manifest")
        for p in sorted((out / sub).glob("*"))
    }


def test_starting_at_export_rewrites_the_same_outputs(
    good_shards: list[Path], tmp_path: Path
) -> None:
    pipeline = Pipeline(
        [DecodeStage(image_size=32), ImageSizeFilter(min_side=8)], samples_per_shard=4
    )
    out = tmp_path / "out"
    pipeline.run([str(p) for p in good_shards], str(out), workers=2, report=False)
    before = _files(out)
    layout = RunLayout.open(str(out))
    shards = discover_shards([str(p) for p in good_shards])
    for path in (out / "shards").glob("*"):
        path.unlink()
    passes = pipeline.passes(layout, shards, LocalExecutor(workers=2))
    passes.run(start="export")
    assert set(passes.results) == {"export"}  # scan and score were not even consulted
    assert all(not r.resumed for r in passes.results["export"])  # export redone, not resumed
    assert _files(out) == before
    assert ds.dataset(str(out / "manifest")).count_rows() > 0


def test_unknown_pass(tmp_path: Path) -> None:
    assert PASSES == ("scan", "score", "semantic", "export")
    passes = Passes(RunLayout.open(str(tmp_path)), [], LocalExecutor())
    with pytest.raises(ValueError, match="unknown pass 'decode'"):
        passes.run(start="decode")
