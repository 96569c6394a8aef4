"""Render the report in headless Chromium: charts and thumbnails must actually show.

Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``, installed by
``.ci/run``); without it these tests are skipped. The browser runs with networking features
off, and the page must not request any resource.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixsieve.report import write_report
from pixsieve.report.svg import KEPT_SCORES, REMAINING, REMOVED, THRESHOLD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const out = {
    images: imgs.length,
    decoded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
    visible: imgs.filter(shown).length,
    charts: [...document.querySelectorAll("svg.chart")].filter(shown).length,
    bars: document.querySelectorAll("svg.chart rect").length,
    thresholds: document.querySelectorAll("svg line.threshold").length,
    resources: performance.getEntriesByType("resource").map((e) => e.name),
  };
  const pre = document.createElement("pre");
  pre.id = "check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(scored_run: Path) -> Path:
    return Path(write_report(str(scored_run)))


def test_dom_after_layout_shows_every_image_and_chart(report: Path, tmp_path: Path) -> None:
    page = tmp_path / "checked.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"))
    done = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    m = re.search(r'<pre id="check">(.*?)</pre>', done.stdout, re.S)
    assert m, done.stdout[-2000:]
    check = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check["images"] > 10
    assert check["decoded"] == check["images"]  # every thumbnail decodes
    assert check["visible"] == check["images"]  # and has a size on the page
    assert check["charts"] == 3  # funnel + two histograms
    assert check["bars"] > 20 and check["thresholds"] == 2
    assert check["resources"] == []  # nothing fetched: the page is self-contained


def _near(pixels: np.ndarray, hex_colour: str, tol: int = 12) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - rgb).max(axis=-1) <= tol).sum())


def test_screenshot_shows_plots_and_thumbnails(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 20  # not a blank page
    assert _near(pixels, REMAINING) > 5000  # funnel bars
    assert _near(pixels, REMOVED) > 500  # removed segments
    assert _near(pixels, KEPT_SCORES) > 200  # kept bars of the histograms
    assert _near(pixels, THRESHOLD) > 50  # threshold lines
    # thumbnails: many distinct colours that the page's flat palette does not have
    colours = np.unique(pixels.reshape(-1, 3) // 8, axis=0)
    assert len(colours) > 2000
