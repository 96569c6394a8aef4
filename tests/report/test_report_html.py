"""The HTML report: counts equal the manifest's, every section present, nothing external."""

from __future__ import annotations

import json
import re
from collections import Counter
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from pixsieve.report import RunError, write_report
from pixsieve.report.collect import ManifestStats, collect
from pixsieve.report.html import SECTIONS, _groups_section, funnel_steps
from pixsieve.report.svg import bin_scores, histogram_svg, label_width
from pixsieve.report.thumbs import read_members, thumbnail
from pixsieve.run.finished import FinishedRun
from pixsieve.stages.base import reason_code


class Page(HTMLParser):
    """Collect ids, tags, img sources, links and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tags: Counter[str] = Counter()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        if "href" in a:
            self.hrefs.append(a["href"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def manifest_rows(out: Path) -> list[dict]:
    table = ds.dataset(str(out / "manifest")).to_table(columns=["position", "status", "reason"])
    return [r for r in table.to_pylist() if r["position"] >= 0]


@pytest.fixture(scope="module")
def report(scored_run: Path) -> Path:
    return Path(write_report(str(scored_run)))


def test_funnel_counts_equal_the_manifest(scored_run: Path) -> None:
    rows = manifest_rows(scored_run)
    removed = Counter(reason_code(r["reason"]) for r in rows if r["status"] == "removed")
    run = FinishedRun.open(str(scored_run))
    stats = collect(run.manifest())
    steps = {label: (n, left) for label, n, left in funnel_steps(stats, run)}
    unreadable = run.record["inputs"]["unreadable"]  # run.json totals count every manifest row
    assert steps["input"][1] == len(rows) == run.totals()["input"] - unreadable
    assert steps["errors"][0] == sum(r["status"] == "error" for r in rows)
    assert steps["exact duplicates"][0] == removed["exact_duplicate"] > 0
    assert steps["too small"][0] == removed["too_small"] > 0
    assert steps["aesthetic"][0] == removed["aesthetic"] > 0
    assert steps["NSFW"][0] == removed["nsfw"] > 0
    assert steps["semantic duplicates"][0] == removed["semantic_duplicate"] > 0
    kept = sum(r["status"] == "kept" for r in rows)
    assert steps["kept"][1] == kept == run.totals()["kept"]
    assert list(steps.values())[-2][1] == kept  # the funnel adds up
    assert len(stats.shard_rows) == unreadable == 1  # the file that is not a tar


def test_report_parses_and_has_every_section(report: Path, scored_run: Path) -> None:
    page = parse(report)
    assert set(SECTIONS) <= page.ids
    assert page.tags["svg"] >= 3  # funnel + two histograms
    assert page.tags["img"] > 10
    assert all(s.startswith("data:image/jpeg;base64,") for s in page.srcs)
    assert all(h.startswith("#") for h in page.hrefs)
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    text = " ".join(page.text)
    # the chelsea re-encodes (013-badjson, one of them, is an invalid_json error)
    assert "group 0 · 10 members (showing 8)" in text
    assert "similarity 0.99" in text
    assert "min 3 (keep ≥)" in text and "max 0.5 (remove ≥)" in text
    assert report.stat().st_size < 2_000_000


def test_report_samples_every_reason(scored_run: Path) -> None:
    run = FinishedRun.open(str(scored_run))
    stats = collect(run.manifest(), per_group=3)
    rows = manifest_rows(scored_run)
    groups = {
        "kept" if r["status"] == "kept" else f"{r['status']}:{reason_code(r['reason'])}"
        for r in rows
    }
    assert set(stats.picks) == groups
    for group, picked in stats.picks.items():
        assert 1 <= len(picked) <= 3
        for row in picked:
            code = (
                "kept"
                if row["status"] == "kept"
                else f"{row['status']}:{reason_code(row['reason'])}"
            )
            assert code == group
    assert stats.groups, "the fixture plants near-duplicates"
    for group in stats.groups:
        assert group[0]["status"] == "kept"
        assert len({r["component_id"] for r in group}) == 1


def test_nsfw_thumbnails_blurred_unless_asked(scored_run: Path, tmp_path: Path) -> None:
    html = Path(write_report(str(scored_run))).read_text(encoding="utf-8")
    assert "blurred" in html and "NSFW thumbnails are blurred" in html
    html = Path(write_report(str(scored_run), blur_nsfw=False)).read_text(encoding="utf-8")
    assert 'class="badge warn">blurred' not in html
    write_report(str(scored_run))  # leave the default report for the other tests


def test_histograms_binned_with_thresholds() -> None:
    values = np.array([1.0, 2.0, np.nan, 3.0, 9.0], dtype=np.float32)
    kept = np.array([False, True, False, True, True])
    edges, all_counts, kept_counts = bin_scores(values, kept, threshold=10.0, bins=9)
    assert edges[0] == 1.0 and edges[-1] == 10.0  # the threshold is inside the range
    assert all_counts.sum() == 4 and kept_counts.sum() == 3


def test_threshold_labels_stay_inside_the_chart() -> None:
    import xml.etree.ElementTree as ET

    values = np.array([0.001, 0.01, 0.2, 0.3], dtype=np.float32)
    kept = np.ones(4, dtype=bool)
    for threshold in (0.001, 0.2, 0.5):  # 0.5: no score above it, the line is at the right edge
        edges, all_counts, kept_counts = bin_scores(values, kept, threshold)
        label = f"max {threshold:.3g} (remove ≥)"
        svg = ET.fromstring(histogram_svg("NSFW", edges, all_counts, kept_counts, threshold, label))
        width = float(svg.get("width"))
        (text,) = [t for t in svg.iter("text") if t.text == label]
        x = float(text.get("x"))
        if text.get("text-anchor") == "end":
            assert x - label_width(label) >= 0, threshold
        else:
            assert x + label_width(label) <= width, threshold
    assert label_width("max 0.5 (remove ≥)") > 100  # the estimate is not trivially small


def test_settings_show_semantic_dedup_as_json(report: Path, run_settings: dict) -> None:
    html = report.read_text(encoding="utf-8")
    row = re.search(r"<td>semantic dedup</td><td><code>(.*?)</code>", html)
    assert row is not None
    settings = json.loads(unescape(row.group(1)))
    assert settings["threshold"] == run_settings["dedup_threshold"]
    assert settings["keep"] == "aesthetic"
    assert "SemanticDedupConfig(" not in html


def test_thumbnails_and_member_reads(good_shards: list[Path]) -> None:
    found = read_members(str(good_shards[0]), {"s0-001.jpg", "s0-000.txt", "absent.jpg"})
    assert set(found) == {"s0-001.jpg", "s0-000.txt"}
    uri = thumbnail(found["s0-001.jpg"])
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    assert thumbnail(b"not an image") is None and thumbnail(b"") is None
    assert read_members(str(good_shards[0]) + ".missing", {"x.jpg"}) == {}


def test_report_without_scores_or_dedup(plain_run: Path) -> None:
    page = parse(Path(write_report(str(plain_run))))
    text = " ".join(page.text)
    assert set(SECTIONS) <= page.ids
    assert "Aesthetic score: not computed in this run." in text
    assert "Semantic dedup did not run." in text
    assert "aesthetic (not run)" in text


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a finished pixsieve run"):
        write_report(str(tmp_path))
    with pytest.raises(RunError, match="not a directory"):
        write_report(str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()


def test_chained_groups_are_flagged() -> None:
    def row(key: str, status: str, sim: float | None, chained: bool) -> dict:
        return {"key": key, "status": status, "similarity": sim, "component_id": 7,
                "component_size": 3, "chained": chained, "thumb": None}  # fmt: skip

    stats = ManifestStats(columns={"component_id"})
    stats.groups = [[row("a", "kept", None, True), row("b", "removed", 0.97, True)]]
    html = _groups_section(stats, True)
    assert "group 7 · 3 members (showing 2)" in html and 'class="badge warn">chained' in html
    assert "similarity 0.9700" in html and html.count("no preview") == 2
    stats.groups[0] = [{**r, "chained": False} for r in stats.groups[0]]
    assert "chained" not in _groups_section(stats, True)
