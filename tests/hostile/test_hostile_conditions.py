"""Hostile conditions: a second run on the same output, a killed run's lock, inputs rewritten
in place, a full disk, leftover temporary files, absurd arguments.

Every run is a forked ``pixsieve curate --skip embed`` (see ``conftest.py``); a refusal must be
one line and a non-zero exit, never a traceback, and a re-run must give what a clean run gives.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from hostile import inputs
from hostile.harness import MEMORY_TARGET, CurateServer, Result
from hostile.inputs import Shard

from pixsieve.run.lock import LOCK_NAME, _start_time


def argv(inp: Path | str, out: Path | str, *extra: str) -> list[str]:
    """``curate INPUT -o OUT --skip embed --no-progress`` plus ``extra``."""
    return ["curate", str(inp), "-o", str(out), "--skip", "embed", "--no-progress", *extra]


def refused(result: Result, words: str) -> None:
    """A clean refusal: non-zero exit, ``words`` in the message, no traceback."""
    assert result.rc != 0 and not result.timed_out, result.output
    assert words in result.output, result.output
    assert "Traceback" not in result.output, result.output
    assert result.max_rss < MEMORY_TARGET


def ok(result: Result) -> None:
    """A finished run: exit 0, no traceback, within the memory target."""
    assert result.rc == 0 and not result.timed_out, result.output[-3000:]
    assert "Traceback" not in result.output, result.output
    assert result.max_rss < MEMORY_TARGET


def outputs(out: Path) -> tuple[list[dict], dict[str, bytes]]:
    """The manifest rows (sorted) and every output shard's bytes of a run."""
    rows = sorted(inputs.manifest_json(str(out)), key=lambda r: (r["source"], r["position"]))
    tars = {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}
    return rows, tars


def two_shards(root: Path, prefix: str = "a") -> list[Shard]:
    """Two small clean shards in ``root/in``."""
    shards = [
        Shard(f"{p}.tar", inputs.tar_bytes(inputs.samples(p, 4, 40 + i)), [])
        for i, p in enumerate((f"{prefix}1", f"{prefix}2"))
    ]
    inputs.write(shards, str(root / "in"))
    return shards


@pytest.fixture
def small(tmp_path: Path) -> Path:
    two_shards(tmp_path)
    return tmp_path


def test_two_runs_on_one_output_one_is_refused(curate: CurateServer, small: Path):
    results = curate.run_many(
        [argv(small / "in", small / "out")] * 2, timeout=120, name="two runs at once"
    )
    # Overlapping runs: one is refused. A run that only starts once the other has finished
    # resumes the finished run instead (both exit 0). Either way nothing is corrupted; the
    # refusal itself is checked deterministically by the live-lock test below.
    codes = sorted(r.rc for r in results)
    assert codes in ([0, 1], [0, 0]), [r.output for r in results]
    for r in results:
        refused(r, "is in use by another pixsieve run") if r.rc else ok(r)
    assert not (small / "out" / LOCK_NAME).exists()
    reference = curate.run(argv(small / "in", small / "ref"), name="reference run")
    ok(reference)
    assert outputs(small / "out")[1] == outputs(small / "ref")[1]


def test_a_live_lock_refuses_and_a_dead_one_is_broken(curate: CurateServer, small: Path):
    out = small / "out"
    out.mkdir()
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _start_time(os.getpid())}
    (out / LOCK_NAME).write_text(json.dumps({**me, "started": "now", "token": "x"}))
    refused(curate.run(argv(small / "in", out), name="live lock"), str(os.getpid()))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "then", "token": "y"}
    (out / LOCK_NAME).write_text(json.dumps(stale))
    result = curate.run(argv(small / "in", out), name="stale lock")
    ok(result)
    assert "stale lock" in result.stderr
    assert not (out / LOCK_NAME).exists()


def test_a_shard_rewritten_in_place_is_redone(curate: CurateServer, tmp_path: Path):
    two_shards(tmp_path)
    out = tmp_path / "out"
    ok(curate.run(argv(tmp_path / "in", out), name="before the rewrite"))
    target = tmp_path / "in" / "a2.tar"
    old = target.stat()
    new = inputs.tar_bytes(inputs.samples("b2", 4, 77))  # other keys and bytes
    new = new + bytes(old.st_size - len(new)) if len(new) < old.st_size else new
    assert len(new) == old.st_size  # same size: (url, size) alone cannot tell
    target.write_bytes(new)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))  # even the mtime is put back
    result = curate.run(argv(tmp_path / "in", out), name="after the rewrite (resume)")
    ok(result)
    assert "changed since the last run" in result.stderr
    keys = {r["key"] for r in inputs.manifest_json(str(out)) if r["source"].endswith("a2.tar")}
    assert keys == {f"b2{i:03d}" for i in range(4)}
    ok(curate.run(argv(tmp_path / "in", tmp_path / "fresh"), name="fresh run on new inputs"))
    assert outputs(out) == outputs(tmp_path / "fresh")


def test_settings_that_differ_are_named(curate: CurateServer, small: Path):
    ok(curate.run(argv(small / "in", small / "out"), name="settings: first run"))
    result = curate.run(argv(small / "in", small / "out", "--min-side", "10"), name="settings")
    refused(result, "--overwrite")
    assert "stage size added" in result.output and "overwrite=True" not in result.output


def test_a_full_disk_ends_the_run_and_a_rerun_completes_identically(
    curate: CurateServer, small: Path
):
    out = small / "out"
    full = curate.run(
        argv(small / "in", f"fullfs://{out}"),
        env={"PIXSIEVE_TEST_QUOTA": str(60_000)},
        name="disk full (ENOSPC)",
    )
    refused(full, "No space left on device")
    assert len([line for line in full.stderr.splitlines() if "Error" in line]) == 1
    (out / "manifest").mkdir(exist_ok=True)
    (out / "manifest" / "part-00000.parquet.tmp").write_bytes(b"")  # an older run's leftover
    (out / "manifest" / ".part-00001.parquet.tmp").write_bytes(b"")
    ok(curate.run(argv(small / "in", out), name="re-run after freeing space"))
    ok(curate.run(argv(small / "in", small / "ref"), name="reference run"))
    assert outputs(out) == outputs(small / "ref")
    assert not [p for p in out.rglob("*.tmp")]


@pytest.mark.parametrize("code", ["EACCES", "EIO", "EDQUOT"])
def test_other_write_errors_mid_run_are_one_line(curate: CurateServer, small: Path, code: str):
    out = small / "out"
    env = {"PIXSIEVE_TEST_QUOTA": "40000", "PIXSIEVE_TEST_ERRNO": code}
    result = curate.run(argv(small / "in", f"fullfs://{out}"), env=env, name=f"write error {code}")
    refused(result, os.strerror(getattr(errno, code)))
    ok(curate.run(argv(small / "in", out), name=f"re-run after {code}"))
    assert not [p for p in out.rglob("*.tmp")]


def test_absurd_arguments_are_clear_errors(curate: CurateServer, small: Path):
    brace = curate.run(
        argv(small / "in" / "x-{00000000..99999999}.tar", small / "o1"), name="huge brace range"
    )
    refused(brace, "expands to 100,000,000 names")
    assert brace.seconds < 30
    inside = small / "o2" / "stuff"
    inside.mkdir(parents=True)
    (inside / "x.tar").write_bytes((small / "in" / "a1.tar").read_bytes())
    named = curate.run(argv(inside / "x.tar", small / "o2"), name="input inside OUT")
    refused(named, "lies inside the output directory")
    os.mkfifo(small / "fifo.tar")
    fifo = curate.run(argv(small / "fifo.tar", small / "o3"), timeout=30, name="a FIFO named")
    refused(fifo, "no input shards")
