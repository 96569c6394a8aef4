"""``fullfs://``: the local filesystem with a byte quota, to simulate a full disk (ENOSPC).

Writes through files opened for writing count against ``PIXSIEVE_TEST_QUOTA`` bytes (read from
the environment at each write; unset or ``0`` means no limit); past it, ``write`` raises
``OSError(ENOSPC)`` as a full disk does, or the errno named by ``PIXSIEVE_TEST_ERRNO``
(``EACCES``: an output made read-only mid-run; ``EDQUOT``, ``EIO``...).
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

_written = 0
_lock = threading.Lock()


class _QuotaFile(LocalFileOpener):
    def write(self, data: Any) -> int:
        global _written
        quota = int(os.environ.get("PIXSIEVE_TEST_QUOTA") or 0)
        with _lock:
            if quota and _written + len(data) > quota:
                code = getattr(errno, os.environ.get("PIXSIEVE_TEST_ERRNO") or "ENOSPC")
                raise OSError(code, os.strerror(code))
            _written += len(data)
        return super().write(data)


class FullFileSystem(LocalFileSystem):
    """Local files; writes fail with ENOSPC once the quota is used up."""

    protocol = "fullfs"

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        if "w" in mode or "a" in mode:
            if self.auto_mkdir:
                self.makedirs(self._parent(path), exist_ok=True)
            return _QuotaFile(path, mode, fs=self, **kwargs)
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("fullfs", FullFileSystem, clobber=True)
