"""``pixsieve curate`` exit codes, totals that match the manifest, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from pixsieve.cli import main
from pixsieve.cli.exits import BAD_ARGUMENTS, COMPLETED, INTERRUPTED, NOTHING_READ, SHARD_ERRORS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample"


def curate(*args: str) -> object:
    return CliRunner().invoke(main, ["curate", *args, "--skip", "embed", "--no-progress"])


def test_completed_run_exits_zero(tmp_path):
    result = curate(str(SAMPLE), "-o", str(tmp_path / "out"))
    assert result.exit_code == COMPLETED, result.output


def test_nothing_readable_exits_4(tmp_path, not_a_tar):
    out = tmp_path / "out"
    result = curate(str(not_a_tar), "-o", str(out))
    assert result.exit_code == NOTHING_READ, result.output
    assert "nothing could be read" in result.output
    record = json.loads((out / "run.json").read_text())
    assert record["totals"]["input"] == record["totals"]["error"] == 1  # the file's own row
    assert record["inputs"]["unreadable"] == 1


def test_shard_errors_exit_3_and_totals_match_the_manifest(tmp_path, good_shards, not_a_tar):
    out = tmp_path / "out"
    result = curate(*map(str, [*good_shards, not_a_tar]), "-o", str(out))
    assert result.exit_code == SHARD_ERRORS, result.output
    manifest = ds.dataset(str(out / "manifest")).to_table(columns=["status"])
    statuses = manifest["status"].to_pylist()
    record = json.loads((out / "run.json").read_text())
    totals = record["totals"]
    assert totals["input"] == len(statuses)
    assert {k: totals[k] for k in ("kept", "removed", "error")} == {
        k: statuses.count(k) for k in ("kept", "removed", "error")
    }
    samples = len(statuses) - 1
    first_line = result.output.splitlines()[0]
    assert first_line.startswith(f"{len(statuses)} rows ({samples} samples, 1 unreadable part)")
    assert f"{totals['error']} errors" in first_line
    assert "completed with shard errors" in result.output


def test_bad_arguments_exit_2(tmp_path):
    result = curate(str(SAMPLE), "-o", str(tmp_path / "o"), "--dedup-threshold", "0")
    assert result.exit_code == BAD_ARGUMENTS
    assert "cosine similarity in (0, 1]" in result.output


def test_ray_executor_without_ray_is_one_line(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    out = tmp_path / "out"
    result = curate(str(SAMPLE), "-o", str(out), "--executor", "ray")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: the Ray executor needs Ray: pip install -e '.[ray]' in the pixsieve checkout "
        "(or pip install 'ray>=2.30')"
    ]
    assert not out.exists()


def test_paths_are_checked_before_torch_is_imported(tmp_path):
    code = (
        "import sys\nfrom pixsieve.cli import main\n"
        "try:\n    main(['curate', sys.argv[1], '-o', sys.argv[2]])\n"
        "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for inputs, output in (
        (str(tmp_path / "missing"), str(tmp_path / "out")),
        (str(SAMPLE), str(SAMPLE / "sample-000.tar" / "out")),
    ):
        proc = subprocess.run(
            [sys.executable, "-c", code, inputs, output],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.stdout.strip() in ("exit 1 False", "exit 2 False"), proc.stdout + proc.stderr


@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_same_command_resumes(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(80):  # enough shards that the run is still going when it is interrupted
        (inputs / f"s{i:03d}.tar").write_bytes((SAMPLE / "sample-001.tar").read_bytes())
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "pixsieve", "curate", str(inputs), "-o", str(out),
        "--skip", "embed", "--no-progress", "--workers", "1",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    done = out / "cache" / "done" / "scan"
    deadline = time.monotonic() + 120
    while not (done.exists() and any(done.iterdir())) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == INTERRUPTED, output
    assert "re-running the same command resumes" in output
    assert "Traceback" not in output
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == COMPLETED, again.stdout + again.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["tasks"]["scan"]["resumed"] > 0
    assert record["totals"]["input"] == 80 * 7


def test_a_resumed_run_keeps_pipeline_order(tmp_path):
    out = tmp_path / "out"
    args = [str(SAMPLE), "-o", str(out), "--min-side", "300"]
    first = curate(*args)
    assert first.exit_code == COMPLETED, first.output
    order = ["read", "exact_dedup", "decode", "size"]
    assert list(json.loads((out / "run.json").read_text())["counters"]) == order
    again = curate(*args)  # every task resumed: counters come back from the markers
    assert again.exit_code == COMPLETED, again.output
    record = json.loads((out / "run.json").read_text())
    assert record["tasks"]["score"]["resumed"] == record["tasks"]["score"]["total"]
    assert list(record["counters"]) == order
    table = [line.split("│")[1].strip() for line in again.output.splitlines() if "│" in line]
    assert table == order  # the stage table's rows (its header uses another border)
