"""Where a run keeps its outputs, caches and completion markers (on any fsspec filesystem).

::

    OUT/shards/NNNNN.tar              kept samples, original member bytes (numbered globally)
    OUT/metadata/NNNNN.parquet        metadata of shards/NNNNN.tar, one row per sample, in order
    OUT/manifest/part-PPPPP.parquet   one row per input sample: fate, reason, scores
    OUT/run.json                      effective config, versions, counters, timings, errors
    OUT/cache/hashes/SSSSS.parquet    image content hashes per input shard (scan pass)
    OUT/cache/exact_duplicates.parquet
    OUT/cache/samples/SSSSS.parquet   per input shard: fate so far, scores, embeddings
    OUT/cache/exact/                  partitioned exact dedup: hash buckets, per-bucket answers
    OUT/cache/exact_earlier/          --against: new hashes by the earlier runs' hash buckets
    OUT/cache/semantic_duplicates.parquet
    OUT/cache/semantic/inputs/SSSSS.parquet  per shard: id, embedding, keep-policy columns
    OUT/cache/semantic/work/          partitioned semantic dedup: centroids, partitions, edges
    OUT/cache/semantic/out/           its duplicates.parquet and dedup.json
    OUT/index/                        what a later ``curate --against OUT`` reads: curate.json,
                                      hashes/hBBBB/pPPPPP.parquet (kept samples' content
                                      hashes) and the semantic dedup index (index.json, ...)
    OUT/cache/fingerprint.json        inputs and settings (guards resuming another run)
    OUT/cache/done/PASS/ID.json       completion markers (resume skips what has one)
    OUT/report.html                   the run's report

:class:`RunLayout` is the one place these paths are spelled: every pass, the report and
``refilter`` ask it by name (``layout.samples(i)``, ``layout.manifest_part(p)``, ...).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pixsieve.io.writer import OutputError, output_errors, write_atomic, write_parquet_atomic
from pixsieve.run.lock import OutputLock

__all__ = ["OutputError", "RunLayout", "shard_id"]


def shard_id(index: int) -> str:
    """Stable identifier of the ``index``-th input shard."""
    return f"{index:05d}"


def part_id(part: int) -> str:
    """Stable identifier of the ``part``-th export partition."""
    return f"{part:05d}"


def output_shard_id(number: int) -> str:
    """Name stem of the ``number``-th output shard (global over the run: ``00000``...)."""
    return f"{number:05d}"


_SHARDS = "shards"
_METADATA = "metadata"

#: Top-level entries that make a directory "hold a run" (and that ``--overwrite`` clears).
RUN_ENTRIES = ("manifest", _SHARDS, _METADATA, "run.json", "cache", "report.html", "index")


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
        for sub in ("manifest", _SHARDS, _METADATA, "cache", "index"):
            top = self.path(sub)
            if self.fs.exists(top):
                for p in self.fs.find(top):
                    if p.endswith(".tmp"):
                        self.fs.rm(p)

    def path(self, *parts: str) -> str:
        """Join ``parts`` under the output root."""
        return "/".join([self.root.rstrip("/"), *parts])

    # -- artefacts, by name ---------------------------------------------------------------

    def samples_dir(self) -> str:
        """``cache/samples``: the per-shard sample caches."""
        return self.path("cache", "samples")

    def samples(self, index: int) -> str:
        """``cache/samples/SSSSS.parquet``: fate so far, scores, embeddings of shard ``index``."""
        return self.path("cache", "samples", f"{shard_id(index)}.parquet")

    def hashes(self, index: int) -> str:
        """``cache/hashes/SSSSS.parquet``: image content hashes of shard ``index``."""
        return self.path("cache", "hashes", f"{shard_id(index)}.parquet")

    def exact_duplicates(self) -> str:
        """``cache/exact_duplicates.parquet``: the global exact-duplicate decision."""
        return self.path("cache", "exact_duplicates.parquet")

    def semantic_duplicates(self) -> str:
        """``cache/semantic_duplicates.parquet``: the semantic dedup decision."""
        return self.path("cache", "semantic_duplicates.parquet")

    def exact_work(self) -> str:
        """``cache/exact``: partitions and per-bucket answers of the exact-duplicate step."""
        return self.path("cache", "exact")

    def semantic_dir(self) -> str:
        """``cache/semantic``: everything the semantic pass writes besides its decision."""
        return self.path("cache", "semantic")

    def semantic_inputs(self) -> str:
        """``cache/semantic/inputs``: the per-shard dedup candidates."""
        return self.path("cache", "semantic", "inputs")

    def semantic_input(self, index: int) -> str:
        """``cache/semantic/inputs/SSSSS.parquet``: shard ``index``'s dedup candidates."""
        return f"{self.semantic_inputs()}/{shard_id(index)}.parquet"

    def semantic_work(self) -> str:
        """``cache/semantic/work``: the partition files of semantic dedup (its resume state)."""
        return self.path("cache", "semantic", "work")

    def semantic_out(self) -> str:
        """``cache/semantic/out``: semantic dedup's ``duplicates.parquet`` and ``dedup.json``."""
        return self.path("cache", "semantic", "out")

    def index_dir(self) -> str:
        """``index``: what a later run ``--against`` this one reads (never changed by it)."""
        return self.path("index")

    def index_meta(self) -> str:
        """``index/curate.json``: run id, settings, hash buckets, parents; written last."""
        return self.path("index", "curate.json")

    def index_hashes(self) -> str:
        """``index/hashes``: the content hashes of the kept samples, bucketed by hash."""
        return self.path("index", "hashes")

    def index_hash_bucket(self, bucket: int) -> str:
        """``index/hashes/hBBBB``: the kept samples whose hash falls in ``bucket``."""
        return self.path("index", "hashes", f"h{bucket:04d}")

    def index_hash_part(self, bucket: int, part: int) -> str:
        """``index/hashes/hBBBB/pPPPPP.parquet``: export partition ``part``'s share of it."""
        return f"{self.index_hash_bucket(bucket)}/p{part_id(part)}.parquet"

    def earlier_exact(self) -> str:
        """``cache/exact_earlier``: new hashes partitioned by the earlier runs' buckets."""
        return self.path("cache", "exact_earlier")

    @property
    def is_local(self) -> bool:
        """Whether the output is on local (or mounted shared) disk."""
        return isinstance(self.fs, LocalFileSystem)

    @contextmanager
    def workspace(self, path: str) -> Iterator[str]:
        """A local directory standing for ``path`` (a directory of this run) for partition files.

        On local disk it is ``path`` itself, kept so an interrupted step resumes from it; on
        object storage it is a temporary local directory, removed afterwards (the step then
        starts afresh on a rerun).
        """
        if self.is_local:
            os.makedirs(path, exist_ok=True)
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="pixsieve-") as tmp:
            yield tmp

    def fingerprint(self) -> str:
        """``cache/fingerprint.json``: inputs and settings of the run in this directory."""
        return self.path("cache", "fingerprint.json")

    def done_dir(self, pass_name: str) -> str:
        """``cache/done/PASS``: the completion markers of one pass."""
        return self.path("cache", "done", pass_name)

    def marker(self, pass_name: str, item: str) -> str:
        """Completion marker path of ``item`` in ``pass_name``."""
        return self.path("cache", "done", pass_name, f"{item}.json")

    def run_json(self) -> str:
        """``run.json``: the record of the finished run."""
        return self.path("run.json")

    def manifest_dir(self) -> str:
        """``manifest``: one part per export partition."""
        return self.path("manifest")

    def manifest_part(self, part: int) -> str:
        """``manifest/part-PPPPP.parquet``: one row per input sample of partition ``part``."""
        return self.path("manifest", f"part-{part_id(part)}.parquet")

    def shards_dir(self) -> str:
        """``shards``: the output tars only (what WebDataset readers are pointed at)."""
        return self.path(_SHARDS)

    def metadata_dir(self) -> str:
        """``metadata``: one Parquet file per output tar (what Parquet readers are pointed at)."""
        return self.path(_METADATA)

    def output_tar(self, number: int) -> str:
        """``shards/NNNNN.tar``: the ``number``-th output shard."""
        return self.path(_SHARDS, f"{output_shard_id(number)}.tar")

    def output_metadata(self, number: int) -> str:
        """``metadata/NNNNN.parquet``: the rows of ``shards/NNNNN.tar``, in tar order."""
        return self.path(_METADATA, f"{output_shard_id(number)}.parquet")

    @staticmethod
    def output_shard(number: int) -> str:
        """An output shard's path relative to the run (the manifest's ``output_shard``)."""
        return f"{_SHARDS}/{output_shard_id(number)}.tar"

    def output_numbers(self) -> list[int]:
        """Numbers of the output shards present (tars or metadata files, temporaries too)."""
        found: set[int] = set()
        for top in (self.shards_dir(), self.metadata_dir()):
            if self.fs.exists(top):
                for p in self.fs.ls(top, detail=False):
                    stem = p.rsplit("/", 1)[-1].lstrip(".").split(".", 1)[0]
                    if stem.isdigit():
                        found.add(int(stem))
        return sorted(found)

    def drop_output_shards(self, numbers: Iterable[int]) -> None:
        """Remove output shards ``numbers``: tars, metadata and their temporary files."""
        for n in numbers:
            stem = output_shard_id(n)
            for top, ext in ((_SHARDS, "tar"), (_METADATA, "parquet")):
                for name in (f"{stem}.{ext}", f".{stem}.{ext}.tmp"):
                    path = self.path(top, name)
                    if self.fs.exists(path):
                        self.fs.rm(path)

    def report(self) -> str:
        """``report.html``."""
        return self.path("report.html")

    def present(self) -> list[str]:
        """The entries of :data:`RUN_ENTRIES` that exist (a non-empty list: a run is here)."""
        return [p for p in RUN_ENTRIES if self.fs.exists(self.path(p))]

    def clear(self) -> None:
        """Remove every entry of :data:`RUN_ENTRIES` (``--overwrite``)."""
        for p in self.present():
            self.fs.rm(self.path(p), recursive=True)

    # -- reading and writing ---------------------------------------------------------------

    def read_json(self, path: str) -> dict[str, Any] | None:
        """Read a JSON file, or ``None`` if it does not exist."""
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as f:
            return json.loads(f.read())

    def write_json(self, path: str, data: dict[str, Any]) -> None:
        """Write JSON atomically (hidden temporary file + rename), keys in their given order.

        Insertion order is kept (not sorted) so counters read back on a resume stay in
        pipeline order.
        """
        with output_errors(path):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        body = json.dumps(data, indent=2, default=str).encode()
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
