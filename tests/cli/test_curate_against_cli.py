"""``pixsieve curate --against OUT`` from the command line: flags, the config key, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
from click.testing import CliRunner

from pixsieve.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample"


def curate(*args: str) -> object:
    return CliRunner().invoke(main, ["curate", *args, "--no-progress"])


def test_a_second_run_against_the_first_removes_every_copy(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert curate(str(SAMPLE), "-o", str(first), "--skip", "embed").exit_code == 0
    result = curate(str(SAMPLE), "-o", str(second), "--skip", "embed", "--against", str(first))
    assert result.exit_code == 0, result.output
    rows = ds.dataset(str(second / "manifest")).to_table().to_pylist()
    assert len(rows) == 14  # one row per input sample
    reasons = {r["reason"].split(":")[0] for r in rows if r["reason"]}
    assert reasons == {"duplicate_of_earlier", "decode_error"}
    record = json.loads((second / "run.json").read_text())
    assert record["totals"]["kept"] == 0
    assert record["config"]["dedup"]["against"] == [str(first)]
    # the same through the config file: [dedup] against
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nskip = ["embed"]\n[dedup]\nagainst = ["{first}"]\n')
    third = tmp_path / "third"
    assert curate(str(SAMPLE), "-o", str(third), "--config", str(cfg)).exit_code == 0
    assert json.loads((third / "run.json").read_text())["totals"]["kept"] == 0


def test_unusable_earlier_outputs_are_one_line_errors(tmp_path: Path, tiny_clip_dir: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    first = tmp_path / "first"
    assert curate(str(SAMPLE), "-o", str(first), "--skip", "embed").exit_code == 0
    cases = [
        (["--skip", "embed", "--against", str(tmp_path / "nowhere")], "no such directory"),
        (["--skip", "embed", "--against", str(plain)], "not a finished curate output"),
        (
            ["--clip-model", str(tiny_clip_dir), "--skip", "aesthetic", "--skip", "nsfw",
             "--against", str(first)],
            "semantic dedup was off in that run",
        ),
    ]  # fmt: skip
    for extra, message in cases:
        out = tmp_path / "out"
        result = curate(str(SAMPLE), "-o", str(out), *extra)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not out.exists()
