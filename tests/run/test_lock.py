"""One run per output: the lock file, its refusal, stale locks, object storage."""

from __future__ import annotations

import json
import socket
import subprocess

import fsspec
import pytest

from pixsieve.run.layout import RunLayout
from pixsieve.run.lock import LOCK_NAME, OutputLocked


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path):
    layout = RunLayout.open(str(tmp_path / "out"))
    with layout.locked():
        held = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert held["host"] == socket.gethostname() and held["pid"] > 0
        with pytest.raises(OutputLocked, match=f"pid {held['pid']}"), layout.locked():
            pass
    assert not (tmp_path / "out" / LOCK_NAME).exists()
    with layout.locked():
        pass


def test_the_lock_of_a_dead_process_is_broken(tmp_path, caplog):
    layout = RunLayout.open(str(tmp_path / "out"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = {"pid": dead.pid, "host": socket.gethostname(), "started": "x", "token": "t"}
    (tmp_path / "out" / LOCK_NAME).write_text(json.dumps(lock))
    with layout.locked():
        assert json.loads((tmp_path / "out" / LOCK_NAME).read_text())["token"] != "t"
    assert "stale lock" in caplog.text


def test_a_lock_from_another_host_is_respected(tmp_path):
    layout = RunLayout.open(str(tmp_path / "out"))
    lock = {"pid": 1, "host": "elsewhere", "started": "x", "token": "t"}
    (tmp_path / "out" / LOCK_NAME).write_text(json.dumps(lock))
    with pytest.raises(OutputLocked, match=r"elsewhere.*delete"), layout.locked():
        pass


def test_object_storage_best_effort():
    layout = RunLayout.open("memory://locktest/out")
    fs = fsspec.filesystem("memory")
    with layout.locked():
        assert fs.exists("/locktest/out/" + LOCK_NAME)
        with pytest.raises(OutputLocked), layout.locked():
            pass
    assert not fs.exists("/locktest/out/" + LOCK_NAME)


def test_leftover_temporary_files_are_cleared(tmp_path):
    layout = RunLayout.open(str(tmp_path / "out"))
    (tmp_path / "out" / "manifest").mkdir()
    (tmp_path / "out" / "manifest" / "part-00000.parquet.tmp").write_bytes(b"")
    (tmp_path / "out" / "manifest" / ".part-00001.parquet.tmp").write_bytes(b"")
    with layout.locked():
        assert not list((tmp_path / "out").rglob("*.tmp"))
