"""Export pass: copy kept samples' original members into new shards; write the manifest.

Nothing is decoded again: each input shard is streamed once more and the members of kept
samples are copied byte for byte. Input shards are grouped into contiguous partitions of
balanced size; each partition writes its own run of full output shards and one manifest file,
so the result does not depend on how many workers ran it. Output shards are numbered over the
whole run (``shards/00000.tar``...): every fate is decided before the export, so
:meth:`ExportWorker.plan` knows how many shards each partition writes and where its numbers
start, whatever the executor and however often the run resumed.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pixsieve.dedup.io import REASON_EARLIER
from pixsieve.io.limits import ReadLimits
from pixsieve.io.schemas import conform, manifest_schema, metadata_schema
from pixsieve.io.shards import ShardRef
from pixsieve.io.tables import full_reasons, set_fates
from pixsieve.io.tar_reader import TarShardReader
from pixsieve.io.writer import ShardWriter, shards_needed
from pixsieve.progress import Progress
from pixsieve.run.layout import RunLayout, part_id
from pixsieve.run.score import shard_error_row

PASS = "export"
SEMANTIC_COLUMNS = ("similarity", "component_id", "component_size", "chained")
_DUPLICATE_OF = ("duplicate_of", "duplicate_of_source", "duplicate_of_run")


class ExportWorker:
    """Write one partition's kept samples and manifest rows.

    ``columns`` are the run's stage columns (:func:`pixsieve.io.schemas.stage_columns`): they
    fix the manifest's and the metadata files' schemas. ``first`` (set by :meth:`plan`) is the
    number of each partition's first output shard.
    """

    def __init__(
        self,
        layout: RunLayout,
        shards: list[ShardRef],
        partitions: list[list[int]],
        samples_per_shard: int,
        storage_options: dict[str, Any],
        semantic: bool,
        limits: ReadLimits | None = None,
        columns: dict[str, pa.DataType] | None = None,
    ) -> None:
        self.layout = layout
        self.limits = limits or ReadLimits()
        self.shards = shards
        self.partitions = partitions
        self.samples_per_shard = samples_per_shard
        self.storage_options = storage_options
        self.semantic = semantic
        self.schema = manifest_schema(columns or {})
        self.metadata_schema = metadata_schema(columns or {})
        self.first: list[int] = [0] * (len(partitions) + 1)
        self._cached_columns = [
            n for n in self.schema.names if n not in ("source", "output_shard", *SEMANTIC_COLUMNS)
        ]
        self._sem: dict[int, pa.Table] = {}
        self._ready = False
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Load the semantic-dedup decisions (once, thread-safe)."""
        with self._lock:
            if self._ready:
                return
            path = self.layout.semantic_duplicates()
            if self.semantic and self.layout.fs.exists(path):
                table = self.layout.read_table(path)
                for i in np.unique(table["shard_index"].to_numpy()):
                    self._sem[int(i)] = table.filter(pc.equal(table["shard_index"], int(i)))
            self._ready = True

    def plan(self) -> int:
        """Number every partition's output shards; return how many the run writes.

        Reads only the keys and fates (the kept samples, in export order) and applies the
        writer's own rule (:func:`~pixsieve.io.writer.shards_needed`); sets :attr:`first`.
        """
        self.setup()
        first = [0]
        for part in self.partitions:
            keys = [k for index in part for k in self._kept_keys(index)]
            first.append(first[-1] + shards_needed(keys, self.samples_per_shard))
        self.first = first
        return first[-1]

    def _kept_keys(self, index: int) -> list[str]:
        """Keys of shard ``index``'s samples the export copies, in tar order."""
        path = self.layout.samples(index)
        if not self.layout.fs.exists(path):
            return []
        table = self.layout.read_table(path, columns=["position", "key", "status"])
        sem = self._sem.get(index)
        gone: set[int] = set()
        if self.semantic and sem is not None:
            gone = {
                int(p)
                for p, r in zip(
                    sem["position"].to_pylist(), sem["removed"].to_pylist(), strict=True
                )
                if r
            }
        return [
            k
            for p, k, s in zip(
                table["position"].to_pylist(),
                table["key"].to_pylist(),
                table["status"].to_pylist(),
                strict=True,
            )
            if s == "kept" and p not in gone
        ]

    def done(self, part: int) -> dict[str, Any] | None:
        """Saved summary when this partition was already exported."""
        return self.layout.read_json(self.layout.marker(PASS, part_id(part)))

    def _decided(self, index: int) -> pa.Table:
        """Shard ``index``'s manifest rows before export: the cached table with ``source`` and
        the semantic decisions, conformed to the manifest schema (embeddings dropped)."""
        path = self.layout.samples(index)
        url = self.shards[index].url
        if not self.layout.fs.exists(path):  # the score pass could not even record the shard
            table = shard_error_row(index, "not scored")
        else:  # the cache's columns the manifest has (not its vectors)
            table = self.layout.read_table(path, columns=self._cached_columns)
        table = table.append_column("source", pa.array([url] * table.num_rows, pa.string()))
        table = conform(table, self.schema)
        sem = self._sem.get(index)
        if not self.semantic or sem is None or not sem.num_rows:
            return table
        status = table["status"].to_pylist()
        reason = full_reasons(table)
        cols = {c: table[c].to_pylist() for c in _DUPLICATE_OF}
        cols.update({c: table[c].to_pylist() for c in SEMANTIC_COLUMNS})
        where = {int(p): j for j, p in enumerate(table["position"].to_pylist())}
        for row in sem.to_pylist():
            j = where[row["position"]]
            for c in SEMANTIC_COLUMNS:
                cols[c][j] = row[c]
            if row["removed"] and status[j] == "kept":
                earlier = row["duplicate_of_run"] is not None  # curate --against
                status[j] = "removed"
                reason[j] = REASON_EARLIER if earlier else "semantic_duplicate"
                for c in _DUPLICATE_OF:
                    cols[c][j] = row[c]
        table = set_fates(table, status, reason)
        for name, values in cols.items():
            arr = pa.array(values, self.schema.field(name).type)
            table = table.set_column(table.column_names.index(name), name, arr)
        return table

    def run(self, part: int, progress: Progress) -> dict[str, Any]:
        """Export one partition; write its shards, metadata, manifest part and marker."""
        self.setup()
        self._clean_stale(part)
        writer = ShardWriter(
            self.layout.fs,
            self.layout.output_tar,
            self.layout.output_metadata,
            self.samples_per_shard,
            schema=self.metadata_schema,
            first=self.first[part],
        )
        manifests: list[pa.Table] = []
        try:
            for index in self.partitions[part]:
                manifests.append(self._export_shard(index, writer, progress))
            written = writer.close()
        except BaseException:
            writer.abort()
            raise
        planned = self.first[part + 1] - self.first[part]
        if len(written) != planned:
            raise RuntimeError(f"wrote {len(written)} output shards, {planned} were planned")
        manifest = pa.concat_tables(manifests or [self.schema.empty_table()])
        self.layout.write_table(self.layout.manifest_part(part), manifest)
        kept = int(pc.sum(pc.equal(manifest["status"], "kept")).as_py() or 0)
        summary = {"samples": manifest.num_rows, "kept": kept, "shards": len(written)}
        self.layout.write_json(self.layout.marker(PASS, part_id(part)), summary)
        return summary

    def _export_shard(self, index: int, writer: ShardWriter, progress: Progress) -> pa.Table:
        table = self._decided(index)
        status = table["status"].to_pylist()
        keys = table["key"].to_pylist()
        where = {int(p): j for j, p in enumerate(table["position"].to_pylist()) if p >= 0}
        output: list[str | None] = [None] * table.num_rows
        metadata = table.select(self.metadata_schema.names).to_pylist()
        expected = sum(1 for s in status if s == "kept")
        copied = 0
        if expected:
            url = self.shards[index].url
            for sample in TarShardReader(url, self.storage_options, self.limits, False):
                j = where.get(sample.position)
                if j is None or keys[j] != sample.key:
                    raise RuntimeError(
                        f"{self.shards[index].url} changed since it was scored "
                        f"(sample {sample.position}: {sample.key!r})"
                    )
                if status[j] == "kept":
                    members = list(zip(sample.names, sample.data, strict=True))
                    number = writer.write(members, metadata[j], key=sample.key)
                    output[j] = self.layout.output_shard(number)
                    copied += 1
                if copied == expected:
                    break
        if copied != expected:
            raise RuntimeError(f"copied {copied} of {expected} kept samples")
        progress(table.num_rows)
        column = table.column_names.index("output_shard")
        return table.set_column(column, "output_shard", pa.array(output, pa.string()))

    def _clean_stale(self, part: int) -> None:
        """Remove what an earlier attempt left of this partition's output shards."""
        self.layout.drop_output_shards(range(self.first[part], self.first[part + 1]))

    def fail(self, part: int, error: str) -> dict[str, Any]:
        """Record a partition that could not be exported: its kept samples become errors.

        Samples already removed or in error keep their reasons. No completion marker is
        written, so the next run of the same command exports the partition again.
        """
        self._clean_stale(part)
        manifests = []
        for index in self.partitions[part]:
            table = self._decided(index)
            old = table["status"].to_pylist()
            status = ["error" if s == "kept" else s for s in old]
            reasons = [
                f"export_error: {error}" if s == "kept" else r
                for s, r in zip(old, full_reasons(table), strict=True)
            ]
            manifests.append(set_fates(table, status, reasons))
        manifest = pa.concat_tables(manifests or [self.schema.empty_table()])
        self.layout.write_table(self.layout.manifest_part(part), manifest)
        return {"samples": manifest.num_rows, "kept": 0, "shards": 0, "error": error}
