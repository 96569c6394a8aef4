"""Caption alignment after the run: swept, refiltered and reported like any score filter."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from pixsieve.cli import main
from pixsieve.cli.report import sweep as sweep_command
from pixsieve.config import CurateConfig, EmbedConfig, FilterConfig, RunConfig
from pixsieve.curate import curate
from pixsieve.refilter import refilter
from pixsieve.report.documents import to_documents
from pixsieve.report.html import write_report
from pixsieve.run.sweep import sweep

SKIP = ("aesthetic", "nsfw", "dedup")


def _cfg(clip_dir: Path, threshold: float) -> CurateConfig:
    return CurateConfig(
        embed=EmbedConfig(model=str(clip_dir), device="cpu", batch_size=4),
        filters=FilterConfig(clip_score_min=threshold),
        run=RunConfig(skip=SKIP),
    )


def _fates(out: Path) -> dict[str, tuple[str, str | None]]:
    rows = ds.dataset(str(out / "manifest")).to_table().to_pylist()
    return {r["key"]: (r["status"], r["reason"]) for r in rows}


@pytest.fixture(scope="module")
def runs(tiny_clip_dir: Path, good_shards: list[Path], tmp_path_factory) -> dict:
    """A score-only run to read the scores, then runs at the 1st and 2nd tercile cut."""
    root = tmp_path_factory.mktemp("caption-runs")
    inputs = [str(p) for p in good_shards]
    probe = curate(inputs, str(root / "probe"), _cfg(tiny_clip_dir, -1.0))
    scores = ds.dataset(str(root / "probe" / "manifest")).to_table(columns=["clip_score"])
    values = np.array([v for v in scores["clip_score"].to_pylist() if v is not None])
    cuts = [round(float(np.quantile(values, q)), 4) for q in (1 / 3, 2 / 3)]
    out = {"probe": probe, "cuts": cuts, "inputs": inputs}
    for cut in cuts:
        curate(inputs, str(root / f"cut-{cut}"), _cfg(tiny_clip_dir, cut))
        out[cut] = root / f"cut-{cut}"
    return out


def test_sweep_counts_what_fresh_runs_keep(runs: dict) -> None:
    low, high = runs["cuts"]
    result = sweep(str(runs[low]), thresholds={"caption": [low, high, "off"]})
    rows = {r["clip_score_min"]: r for r in result.rows}
    for cut in (low, high):
        fresh = _fates(runs[cut])
        assert rows[cut]["kept"] == sum(s == "kept" for s, _ in fresh.values())
        removed = sum(r == "caption_mismatch" for _, r in fresh.values())
        assert rows[cut]["removed_caption_mismatch"] == removed > 0
    assert rows[None]["removed_caption_mismatch"] == 0
    assert rows[low]["current"] and not rows[high]["current"]


def test_cli_sweeps_it_by_name(runs: dict) -> None:
    low, high = runs["cuts"]
    result = CliRunner().invoke(sweep_command, [str(runs[low]), "--threshold", f"caption={high}"])
    assert result.exit_code == 0, result.output
    assert "clip_score_min" in (runs[low] / "sweep.csv").read_text()


def test_refilter_writes_what_a_fresh_run_writes(runs: dict, tmp_path: Path) -> None:
    low, high = runs["cuts"]
    result = refilter(str(runs[low]), str(tmp_path / "re"), thresholds={"caption": high})
    assert _fates(tmp_path / "re") == _fates(runs[high])
    counts = result.record["counters"]["caption"]["counts"]
    fresh = sum(r == "caption_mismatch" for _, r in _fates(runs[high]).values())
    assert counts["dropped_caption_mismatch"] == fresh


def test_report_histogram_and_lowest_pairs(runs: dict) -> None:
    low, _ = runs["cuts"]
    page = Path(write_report(str(runs[low]))).read_text()
    assert "Image–caption CLIP score" in page and f"min {low:.3g} (keep ≥)" in page
    section = page.split('<section id="captions">', 1)[1].split("</section>", 1)[0]
    removed, kept = section.split("Lowest-scoring pairs kept", 1)
    assert "removed as caption_mismatch" in removed
    rows = ds.dataset(str(runs[low] / "manifest")).to_table().to_pylist()
    scored = [r for r in rows if r["clip_score"] is not None]
    lowest_kept = min((r for r in scored if r["status"] == "kept"), key=lambda r: r["clip_score"])
    lowest = min(scored, key=lambda r: r["clip_score"])
    assert f"<b>{lowest['key']}</b>" in removed and f"<b>{lowest_kept['key']}</b>" in kept
    assert f"“{lowest['caption']}”" in removed  # the caption is shown on its card
    shown = [float(s) for s in re.findall(r"caption (-?\d\.\d+)<", removed)]
    assert shown == sorted(shown) and len(shown) >= 1  # lowest first
    assert removed.count("data:image/jpeg;base64,") == removed.count("<figure")  # thumbnails


def test_text_embeddings_export_beside_image_embeddings(runs: dict, tmp_path: Path) -> None:
    low, _ = runs["cuts"]
    docs = to_documents(str(runs[low]), include_embedding=True, include_text_embedding=True)
    cache = ds.dataset(str(runs[low] / "cache" / "samples")).to_table().to_pylist()
    cached = {(r["key"], r["position"]): r for r in cache}
    assert docs.num_rows > 0
    for doc in docs.to_pylist():
        row = cached[(doc["metadata"]["key"], doc["metadata"]["position"])]
        assert doc["embedding"] == row["embedding"]
        assert doc["text_embedding"] == row["text_embedding"]
        assert doc["text"] == row["caption"]
        cosine = float(np.dot(doc["embedding"], doc["text_embedding"]))
        assert cosine == pytest.approx(doc["metadata"]["clip_score"], abs=1e-5)
    result = CliRunner().invoke(
        main,
        ["export-docs", str(runs[low]), "-o", str(tmp_path / "d"), "--include-text-embedding"],
    )
    assert result.exit_code == 0, result.output
