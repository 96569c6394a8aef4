"""Where a run keeps its outputs, caches and completion markers (on any fsspec filesystem).

::

    OUT/shards/part-PPPPP-NNNNN.tar   kept samples, original member bytes
    OUT/shards/part-PPPPP-NNNNN.parquet  metadata of that tar (key, source, scores, ...)
    OUT/manifest/part-PPPPP.parquet   one row per input sample: fate, reason, scores
    OUT/run.json                      effective config, versions, counters, timings, errors
    OUT/cache/hashes/SSSSS.parquet    image content hashes per input shard (scan pass)
    OUT/cache/exact_duplicates.parquet
    OUT/cache/samples/SSSSS.parquet   per input shard: fate so far, scores, embeddings
    OUT/cache/semantic_duplicates.parquet
    OUT/cache/done/PASS/ID.json       completion markers (resume skips what has one)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pixsieve.io.writer import OutputError, output_errors, write_atomic, write_parquet_atomic
from pixsieve.run.lock import OutputLock

__all__ = ["OutputError", "RunLayout", "shard_id"]


def shard_id(index: int) -> str:
    """Stable identifier of the ``index``-th input shard."""
    return f"{index:05d}"


@dataclass
class RunLayout:
    """Paths of one run's output directory and small helpers to read and write them."""

    fs: fsspec.AbstractFileSystem
    root: str
    url: str

    @classmethod
    def open(cls, output: str, storage_options: dict[str, Any] | None = None) -> RunLayout:
        """Open (and create) ``output``; raise :class:`OutputError` if it is not writable."""
        try:
            fs, root = url_to_fs(output, **(storage_options or {}))
            root = root.rstrip("/") or "/"
            fs.makedirs(root, exist_ok=True)
            probe = f"{root}/.pixsieve-write-test"
            with fs.open(probe, "wb") as f:
                f.write(b"ok")
            fs.rm(probe)
        except (OSError, ValueError, ImportError) as e:
            raise OutputError(f"cannot write to output {output!r}: {e}") from e
        return cls(fs=fs, root=root, url=output)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the output's lock (one run at a time) and clear leftover temporary files."""
        lock = OutputLock(self.fs, self.root, self.url)
        lock.acquire()
        try:
            self._drop_temporaries()
            yield
        finally:
            lock.release()

    def _drop_temporaries(self) -> None:
        """Remove ``*.tmp`` files an interrupted run left (readers skip them anyway)."""
        for sub in ("manifest", "shards", "cache"):
            top = self.path(sub)
            if self.fs.exists(top):
                for p in self.fs.find(top):
                    if p.endswith(".tmp"):
                        self.fs.rm(p)

    def path(self, *parts: str) -> str:
        """Join ``parts`` under the output root."""
        return "/".join([self.root.rstrip("/"), *parts])

    def marker(self, pass_name: str, item: str) -> str:
        """Completion marker path of ``item`` in ``pass_name``."""
        return self.path("cache", "done", pass_name, f"{item}.json")

    def read_json(self, path: str) -> dict[str, Any] | None:
        """Read a JSON file, or ``None`` if it does not exist."""
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as f:
            return json.loads(f.read())

    def write_json(self, path: str, data: dict[str, Any]) -> None:
        """Write JSON atomically (hidden temporary file + rename)."""
        with output_errors(path):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        body = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
        write_atomic(self.fs, path, lambda f: f.write(body))

    def write_table(self, path: str, table: pa.Table) -> None:
        """Write a Parquet table atomically."""
        with output_errors(path):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        write_parquet_atomic(self.fs, path, table)

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """Read a Parquet file from the output filesystem."""
        with self.fs.open(path, "rb") as f:
            return pq.read_table(f, columns=columns)
