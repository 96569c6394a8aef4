"""One run per output: a lock file ``OUT/.pixsieve.lock`` naming its holder.

On a local disk the lock is created with ``O_CREAT | O_EXCL`` (atomic) and holds the pid,
host, process start time and start date of its run. A lock whose process is gone (a killed
run) on this host is stale: it is broken and the new run goes on, with a warning. A live
holder, or one on another host (whose process cannot be checked), makes the second run stop
with a message that names it. On object storage, which has no exclusive create, the lock is
best effort: written, then read back to see that no other run wrote it in between.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pixsieve.io.writer import OutputError

LOCK_NAME = ".pixsieve.lock"
log = logging.getLogger(__name__)


class OutputLocked(OutputError):
    """Another run holds the output."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a reused pid from its holder."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _alive(info: dict[str, Any]) -> bool:
    """Whether the process that wrote lock ``info`` still runs (on this host)."""
    pid = int(info.get("pid") or 0)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    started = info.get("start_time")
    return started is None or _start_time(pid) in (None, started)


class OutputLock:
    """The lock of one output directory; :meth:`acquire` it, then :meth:`release` it."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
        self.fs = fs
        self.path = f"{root.rstrip('/')}/{LOCK_NAME}"
        self.url = url
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_time": _start_time(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "token": uuid.uuid4().hex,
        }
        self.local = isinstance(fs, LocalFileSystem)

    def _read(self, path: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(path, "rb") as f:
                data = json.loads(f.read() or b"{}")
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half written: a holder we cannot judge

    def _refuse(self, held: dict[str, Any]) -> OutputLocked:
        who = f"pid {held.get('pid', '?')} on {held.get('host', '?')}"
        return OutputLocked(
            f"{self.url} is in use by another pixsieve run ({who}, since "
            f"{held.get('started', '?')}); wait for it to finish, or if that run is dead, "
            f"delete {self.path}"
        )

    def _stale(self, held: dict[str, Any]) -> bool:
        return bool(held) and held.get("host") == self.info["host"] and not _alive(held)

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputLocked`; a stale lock is broken first."""
        body = json.dumps(self.info).encode()
        for _ in range(3):
            if self.local:
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    pass
                else:
                    with os.fdopen(fd, "wb") as f:
                        f.write(body)
                    return
            elif not self.fs.exists(self.path):
                self.fs.pipe(self.path, body)
                if (self._read(self.path) or {}).get("token") == self.info["token"]:
                    return
            held = self._read(self.path)
            if held is None:
                continue  # released meanwhile: try again
            if not self._stale(held):
                raise self._refuse(held)
            self._break(held)
        raise self._refuse(self._read(self.path) or {})

    def _break(self, held: dict[str, Any]) -> None:
        """Remove a stale lock, unless another run replaced it since it was read."""
        log.warning(
            "%s: removing the stale lock of pid %s (started %s), which no longer runs",
            self.url,
            held.get("pid"),
            held.get("started"),
        )
        if not self.local:
            self.fs.rm(self.path)
            return
        aside = f"{self.path}.stale-{self.info['token']}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if self._read(aside) != held:  # a fresh lock was taken meanwhile: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        os.unlink(aside)

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        try:
            if (self._read(self.path) or {}).get("token") == self.info["token"]:
                self.fs.rm(self.path)
        except OSError as e:  # never mask how the run ended
            log.warning("could not remove the lock %s: %s", self.path, e)
