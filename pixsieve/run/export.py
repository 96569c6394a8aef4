"""Export pass: copy kept samples' original members into new shards; write the manifest.

Nothing is decoded again: each input shard is streamed once more and the members of kept
samples are copied byte for byte. Input shards are grouped into contiguous partitions of
balanced size; each partition writes its own run of full output shards and one manifest file,
so the result does not depend on how many workers ran it.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pixsieve.io.limits import ReadLimits
from pixsieve.io.shards import ShardRef
from pixsieve.io.tables import conform
from pixsieve.io.tar_reader import TarShardReader
from pixsieve.io.writer import ShardWriter
from pixsieve.progress import Progress
from pixsieve.run.layout import RunLayout, part_id
from pixsieve.run.score import shard_error_row

PASS = "export"
SEMANTIC_COLUMNS = ("similarity", "component_id", "component_size", "chained")
CACHE_ONLY = ("embedding", "text_embedding")  # vectors stay in cache/, never in the manifest
_NOT_METADATA = {"members", "status", "reason", "output_shard", "position", *CACHE_ONLY}


class ExportWorker:
    """Write one partition's kept samples and manifest rows."""

    def __init__(
        self,
        layout: RunLayout,
        shards: list[ShardRef],
        partitions: list[list[int]],
        samples_per_shard: int,
        storage_options: dict[str, Any],
        semantic: bool,
        limits: ReadLimits | None = None,
    ) -> None:
        self.layout = layout
        self.limits = limits or ReadLimits()
        self.shards = shards
        self.partitions = partitions
        self.samples_per_shard = samples_per_shard
        self.storage_options = storage_options
        self.semantic = semantic
        self._sem: dict[int, pa.Table] = {}
        self._schema = pa.schema([])
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
        """Load the semantic-dedup decisions and fix one manifest schema (once, thread-safe)."""
        with self._lock:
            if self._ready:
                return
            self._schema = self._manifest_schema()
            path = self.layout.semantic_duplicates()
            if self.semantic and self.layout.fs.exists(path):
                table = self.layout.read_table(path)
                for i in np.unique(table["shard_index"].to_numpy()):
                    self._sem[int(i)] = table.filter(pc.equal(table["shard_index"], int(i)))
            self._ready = True

    def _manifest_schema(self) -> pa.Schema:
        """The union of every cached shard's columns (footers only) plus the export columns."""
        schemas = [
            pa.schema(
                [
                    ("position", pa.int64()),
                    ("key", pa.string()),
                    ("source", pa.string()),
                    ("members", pa.list_(pa.string())),
                    ("status", pa.string()),
                    ("reason", pa.string()),
                    ("output_shard", pa.string()),
                ]
            )
        ]
        for index in range(len(self.shards)):
            path = self.layout.samples(index)
            if self.layout.fs.exists(path):
                with self.layout.fs.open(path, "rb") as f:
                    schemas.append(pq.read_schema(f))
        if self.semantic:
            schemas.append(
                pa.schema(
                    [
                        ("duplicate_of", pa.string()),
                        ("duplicate_of_source", pa.string()),
                        ("similarity", pa.float32()),
                        ("component_id", pa.int64()),
                        ("component_size", pa.int64()),
                        ("chained", pa.bool_()),
                    ]
                )
            )
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        return pa.schema([f for f in schema if f.name not in CACHE_ONLY])

    def done(self, part: int) -> dict[str, Any] | None:
        """Saved summary when this partition was already exported."""
        return self.layout.read_json(self.layout.marker(PASS, part_id(part)))

    def _decided(self, index: int) -> pa.Table:
        """The shard's cached table with semantic decisions applied (embeddings dropped)."""
        path = self.layout.samples(index)
        if not self.layout.fs.exists(path):  # the score pass could not even record the shard
            return shard_error_row(self.shards[index].url, "not scored").add_column(
                2, "source", pa.array([self.shards[index].url], pa.string())
            )
        table = self.layout.read_table(path)
        table = table.drop_columns([c for c in CACHE_ONLY if c in table.column_names])
        n = table.num_rows
        source = pa.array([self.shards[index].url] * n, pa.string())
        table = table.add_column(2, "source", source)
        sem = self._sem.get(index)
        if not self.semantic:
            return table
        pos = table["position"].to_numpy()
        status = np.array(table["status"].to_pylist(), dtype=object)
        reason = np.array(table["reason"].to_pylist(), dtype=object)
        dup_of = np.array(
            table["duplicate_of"].to_pylist()
            if "duplicate_of" in table.column_names
            else [None] * n,
            dtype=object,
        )
        dup_src = np.array(
            table["duplicate_of_source"].to_pylist()
            if "duplicate_of_source" in table.column_names
            else [None] * n,
            dtype=object,
        )
        extra = {c: np.full(n, None, dtype=object) for c in SEMANTIC_COLUMNS}
        if sem is not None and sem.num_rows:
            where = {int(p): j for j, p in enumerate(pos)}
            for row in sem.to_pylist():
                j = where[row["position"]]
                for c in SEMANTIC_COLUMNS:
                    extra[c][j] = row[c]
                if row["removed"] and status[j] == "kept":
                    status[j], reason[j] = "removed", "semantic_duplicate"
                    dup_of[j], dup_src[j] = row["duplicate_of"], row["duplicate_of_source"]
        for name, values, typ in (
            ("status", status, pa.string()),
            ("reason", reason, pa.string()),
            ("duplicate_of", dup_of, pa.string()),
            ("duplicate_of_source", dup_src, pa.string()),
            ("similarity", extra["similarity"], pa.float32()),
            ("component_id", extra["component_id"], pa.int64()),
            ("component_size", extra["component_size"], pa.int64()),
            ("chained", extra["chained"], pa.bool_()),
        ):
            arr = pa.array(values.tolist(), typ)
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, arr)
            else:
                table = table.append_column(name, arr)
        return table

    def run(self, part: int, progress: Progress) -> dict[str, Any]:
        """Export one partition; write its shards, manifest part and marker."""
        self._clean_stale(part)
        meta_schema = pa.schema([f for f in self._schema if f.name not in _NOT_METADATA])
        writer = ShardWriter(
            self.layout.fs,
            self.layout.shards_dir(),
            self.layout.shard_prefix(part),
            self.samples_per_shard,
            schema=meta_schema,
        )
        manifests: list[pa.Table] = []
        try:
            for index in self.partitions[part]:
                manifests.append(self._export_shard(index, writer, progress))
            written = writer.close()
        except BaseException:
            writer.abort()
            raise
        manifest = pa.concat_tables([conform(m, self._schema) for m in manifests])
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
        output = [None] * table.num_rows
        metadata = conform(table, self._schema).select(writer.schema.names).to_pylist()
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
                    name = writer.write(members, metadata[j], key=sample.key)
                    output[j] = self.layout.output_shard(name)
                    copied += 1
                if copied == expected:
                    break
        if copied != expected:
            raise RuntimeError(f"copied {copied} of {expected} kept samples")
        progress(table.num_rows)
        return table.append_column("output_shard", pa.array(output, pa.string()))

    def _clean_stale(self, part: int) -> None:
        fs = self.layout.fs
        for prefix in (self.layout.shard_prefix(part), f".{self.layout.shard_prefix(part)}"):
            for path in fs.glob(f"{self.layout.shards_dir()}/{prefix}-*"):  # and temporary files
                fs.rm(path)

    def fail(self, part: int, error: str) -> dict[str, Any]:
        """Record a partition that could not be exported: its kept samples become errors.

        Samples already removed or in error keep their reasons. No completion marker is
        written, so the next run of the same command exports the partition again.
        """
        self._clean_stale(part)
        manifests = []
        for index in self.partitions[part]:
            table = self._decided(index)
            kept = [s == "kept" for s in table["status"].to_pylist()]
            status = [
                "error" if k else s for k, s in zip(kept, table["status"].to_pylist(), strict=True)
            ]
            reasons = [
                f"export_error: {error}" if k else r
                for k, r in zip(kept, table["reason"].to_pylist(), strict=True)
            ]
            table = table.set_column(table.column_names.index("status"), "status", pa.array(status))
            table = table.set_column(
                table.column_names.index("reason"), "reason", pa.array(reasons, pa.string())
            )
            manifests.append(table.append_column("output_shard", pa.nulls(len(kept), pa.string())))
        manifest = pa.concat_tables([conform(m, self._schema) for m in manifests])
        self.layout.write_table(self.layout.manifest_part(part), manifest)
        return {"samples": manifest.num_rows, "kept": 0, "shards": 0, "error": error}
