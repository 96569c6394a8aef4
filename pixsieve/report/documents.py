"""Kept samples as text documents: ``id``, ``text``, ``metadata`` (and optionally ``embedding``).

These are the fields of datatrove's ``Document`` and NeMo Curator's document tables, so a
curated image set can feed a text pipeline (caption dedup, language or quality filters). Text is
read from the output shards' sidecars (see :class:`pixsieve.stages.documents.TextSource`),
metadata from the manifest, embeddings from the run's cache. ``id`` is the manifest's
``sample_id`` (``<input shard index>:<position>``): unique within the run and stable across
re-runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pixsieve.io.tar_reader import TarShardReader
from pixsieve.run.finished import FinishedRun, RunError
from pixsieve.stages.captions import ImageTextFilter
from pixsieve.stages.documents import TextSource
from pixsieve.stages.scoring import BUILTIN_SCORE_FILTERS

METADATA_COLUMNS = (
    "sample_id", "key", "source", "position", "output_shard", "width", "height", "format",
    *(kind.column for kind in BUILTIN_SCORE_FILTERS),
    ImageTextFilter.column, "caption_truncated",
)  # fmt: skip
Format = Literal["parquet", "jsonl"]


class CachedEmbeddings:
    """One cached vector column (``embedding``, ``text_embedding``) of one input shard at a
    time, looked up by position."""

    def __init__(self, run: FinishedRun, name: str = "embedding") -> None:
        self.run = run
        self.name = name
        self.index = -1
        self.rows: dict[int, int] = {}
        self.column: pa.Array | None = None

    def take(self, index: int, positions: list[int]) -> pa.Array:
        """The embeddings of input shard ``index`` at ``positions`` (``RunError``: none)."""
        if index != self.index:
            path = self.run.layout.samples(index)
            with self.run.layout.fs.open(path, "rb") as f:
                present = self.name in pq.ParquetFile(f).schema_arrow.names
            column = None
            if present:
                table = self.run.layout.read_table(path, columns=["position", self.name])
                column = table[self.name].combine_chunks()
            if column is None or column.null_count == len(column):  # none, or never filled
                what = {"text_embedding": "caption"}.get(self.name, "embed")
                raise RunError(f"{self.run.url} has no cached {self.name}s (was {what} skipped?)")
            self.column = column
            self.rows = {int(p): i for i, p in enumerate(table["position"].to_pylist())}
            self.index = index
        assert self.column is not None
        return self.column.take(pa.array([self.rows[p] for p in positions], pa.int64()))


def iter_documents(
    output: str,
    text_from: str = "txt",
    include_embedding: bool = False,
    storage_options: dict[str, Any] | None = None,
    include_text_embedding: bool = False,
) -> Iterator[pa.Table]:
    """Yield the kept samples' documents, one table per output shard, in output order.

    The run and ``text_from`` are checked before this returns (errors are not deferred to the
    first iteration).
    """
    source = TextSource.parse(text_from)
    run = FinishedRun.open(output, storage_options)
    vectors = _vector_columns(include_embedding, include_text_embedding)
    if vectors:
        run.require_cache()
    return _generate(run, source, vectors)


def _vector_columns(include_embedding: bool, include_text_embedding: bool) -> tuple[str, ...]:
    """The cached vector columns asked for, in output order."""
    wanted = {"embedding": include_embedding, "text_embedding": include_text_embedding}
    return tuple(name for name, on in wanted.items() if on)


def _generate(run: FinishedRun, source: TextSource, vectors: tuple[str, ...]) -> Iterator[pa.Table]:
    index_of = {s.url: i for i, s in enumerate(run.shards)}
    embeddings = {name: CachedEmbeddings(run, name) for name in vectors}
    dataset = run.manifest()
    meta = [c for c in METADATA_COLUMNS if c in dataset.schema.names]
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        kept = fragment.to_table(
            schema=dataset.schema, columns=meta, filter=pc.field("status") == "kept"
        )
        shards = kept["output_shard"].to_pylist()
        start = 0
        while start < len(shards):
            end = start
            while end < len(shards) and shards[end] == shards[start]:
                end += 1
            rows = kept.slice(start, end - start)
            yield _shard_documents(run, rows, source, index_of, embeddings)
            start = end


def _shard_documents(
    run: FinishedRun,
    rows: pa.Table,
    source: TextSource,
    index_of: dict[str, int],
    embeddings: dict[str, CachedEmbeddings],
) -> pa.Table:
    url = run.url_of(rows["output_shard"][0].as_py())
    keys = rows["key"].to_pylist()
    texts: list[str | None] = []
    for j, sample in enumerate(TarShardReader(url, run.storage_options)):
        if j >= len(keys) or sample.key != keys[j]:
            raise RunError(f"{url} does not match the manifest (sample {j}: {sample.key!r})")
        texts.append(source.extract(dict(zip(sample.names, sample.data, strict=True))))
    if len(texts) != len(keys):
        raise RunError(f"{url} holds {len(texts)} samples, the manifest lists {len(keys)}")
    indices = [index_of.get(s, -1) for s in rows["source"].to_pylist()]
    data: dict[str, pa.Array] = {
        "id": rows["sample_id"].combine_chunks(),
        "text": pa.array(texts, pa.string()),
        "metadata": pa.StructArray.from_arrays(
            [rows[c].combine_chunks() for c in rows.column_names], names=rows.column_names
        ),
    }
    positions = rows["position"].to_pylist()
    for name, vectors in embeddings.items():
        parts, start = [], 0
        while start < len(indices):  # one lookup per run of rows from the same input shard
            end = start
            while end < len(indices) and indices[end] == indices[start]:
                end += 1
            parts.append(vectors.take(indices[start], positions[start:end]))
            start = end
        data[name] = pa.concat_arrays(parts)
    return pa.table(data)


def to_documents(
    output: str,
    text_from: str = "txt",
    include_embedding: bool = False,
    storage_options: dict[str, Any] | None = None,
    include_text_embedding: bool = False,
) -> pa.Table:
    """All kept samples of the run at ``output`` as one documents table.

    Columns: ``id`` (the ``sample_id``), ``text`` (from ``text_from``: ``"txt"``,
    another sidecar extension, or ``"json:<field>"``; null when absent), ``metadata`` (struct:
    key, source, position, output shard, width, height, format and the scores) and, with
    ``include_embedding``, ``embedding`` (fixed-size float32 list, the CLIP image embedding)
    and, with ``include_text_embedding``, ``text_embedding`` (the caption's CLIP text embedding
    in the same space; null where the sample had no usable caption).
    """
    tables = list(
        iter_documents(
            output, text_from, include_embedding, storage_options, include_text_embedding
        )
    )
    if not tables:
        vectors = _vector_columns(include_embedding, include_text_embedding)
        return _empty(output, vectors, storage_options)
    return pa.concat_tables(tables)


def _empty(
    output: str, vectors: tuple[str, ...], storage_options: dict[str, Any] | None
) -> pa.Table:
    run = FinishedRun.open(output, storage_options)
    schema = run.manifest().schema
    fields = [schema.field(c) for c in METADATA_COLUMNS if c in schema.names]
    cols = {
        "id": pa.array([], pa.string()),
        "text": pa.array([], pa.string()),
        "metadata": pa.array([], pa.struct(fields)),
    }
    for name in vectors:
        cols[name] = pa.array([], pa.list_(pa.float32()))
    return pa.table(cols)


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_documents(
    documents: pa.Table | Iterator[pa.Table],
    directory: str,
    fmt: Format = "parquet",
    rows_per_file: int = 100_000,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Write documents as ``documents-NNNNN.parquet`` or ``.jsonl`` files; return their paths.

    ``documents`` is a table or an iterator of tables (e.g. :func:`iter_documents`), written as
    it streams. JSONL rows are ``{"id", "text", "metadata": {...}, "embedding"?}``.
    """
    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"unknown format {fmt!r}: choose parquet or jsonl")
    fs, root = url_to_fs(directory, **(storage_options or {}))
    root = root.rstrip("/") or "/"
    fs.makedirs(root, exist_ok=True)
    tables = [documents] if isinstance(documents, pa.Table) else documents
    written: list[str] = []
    state: dict[str, Any] = {"file": None, "writer": None, "rows": 0}

    def close() -> None:
        if state["writer"] is not None:
            state["writer"].close()
        if state["file"] is not None:
            state["file"].close()
        state.update(file=None, writer=None, rows=0)

    def open_next(schema: pa.Schema) -> None:
        close()
        path = f"{root}/documents-{len(written):05d}.{fmt}"
        state["file"] = fs.open(path, "wb")
        if fmt == "parquet":
            state["writer"] = pq.ParquetWriter(state["file"], schema, compression="zstd")
        written.append(path)

    try:
        for table in tables:
            offset = 0
            while offset < table.num_rows:
                if state["file"] is None or state["rows"] >= rows_per_file:
                    open_next(table.schema)
                chunk = table.slice(offset, rows_per_file - state["rows"])
                if fmt == "parquet":
                    state["writer"].write_table(chunk)
                else:
                    lines = (json.dumps(_clean(r), ensure_ascii=False) for r in chunk.to_pylist())
                    state["file"].write(("\n".join(lines) + "\n").encode("utf-8"))
                state["rows"] += chunk.num_rows
                offset += chunk.num_rows
    finally:
        close()
    return [fs.unstrip_protocol(p) if "://" in directory else p for p in written]
