"""Kept samples' embeddings in the layout clip-retrieval's ``index`` step reads.

::

    DIR/img_emb/img_emb_0.npy          float32 (rows, dim): the cached CLIP image embeddings
    DIR/metadata/metadata_0.parquet    one row per embedding, same order: sample_id, key, ...
    DIR/img_emb/img_emb_1.npy ...      (a new pair every ``rows_per_file`` rows)

``clip-retrieval index --embeddings_folder DIR --index_folder INDEX`` (autofaiss) builds a kNN
index from it; row ``i`` of ``img_emb_N.npy`` is row ``i`` of ``metadata_N.parquet``, whose
``sample_id`` joins the manifest and ``metadata/`` of the run. Rows come in output order (the
order of ``shards/00000.tar``, ``00001.tar``...). Reads the manifest and the sample caches only.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pixsieve.io.schemas import BASE_COLUMNS, EMBEDDING_METADATA, conform
from pixsieve.io.tables import embeddings_from_arrow
from pixsieve.report.documents import CachedEmbeddings
from pixsieve.run.finished import FinishedRun

EMBEDDINGS_DIR = "img_emb"
METADATA_DIR = "metadata"


def embedding_metadata_schema(manifest: pa.Schema) -> pa.Schema:
    """:data:`~pixsieve.io.schemas.EMBEDDING_METADATA` plus the run's score columns."""
    extra = [f for f in manifest if f.name not in BASE_COLUMNS]
    return pa.schema([*EMBEDDING_METADATA, *extra])


def _kept(run: FinishedRun, schema: pa.Schema) -> Iterator[pa.Table]:
    """The kept rows of the manifest, part by part, in output order."""
    dataset = run.manifest()
    columns = [c for c in schema.names if c in dataset.schema.names] + ["position"]
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        yield fragment.to_table(
            schema=dataset.schema, columns=columns, filter=pc.field("status") == "kept"
        )


def _with_embeddings(run: FinishedRun, schema: pa.Schema) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(metadata rows, their embeddings) per run of rows from one input shard."""
    cache = CachedEmbeddings(run)
    for table in _kept(run, schema):
        shard = [int(s.split(":", 1)[0]) for s in table["sample_id"].to_pylist()]
        positions = table["position"].to_pylist()
        start = 0
        while start < len(shard):
            end = start
            while end < len(shard) and shard[end] == shard[start]:
                end += 1
            vectors = embeddings_from_arrow(cache.take(shard[start], positions[start:end]))
            yield conform(table.slice(start, end - start), schema), vectors
            start = end


def export_embeddings(
    output: str,
    directory: str,
    rows_per_file: int = 100_000,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Write the kept samples' embeddings of the run at ``output`` under ``directory``.

    Returns the paths of the ``.npy`` files. Raises :class:`~pixsieve.run.finished.RunError`
    when the run has no cached embeddings (``--skip embed``) or its caches were deleted.
    """
    if rows_per_file < 1:
        raise ValueError("rows_per_file must be at least 1")
    run = FinishedRun.open(output, storage_options)
    run.require_cache()
    schema = embedding_metadata_schema(run.manifest().schema)
    fs, root = url_to_fs(directory, **(storage_options or {}))
    root = root.rstrip("/") or "/"
    for sub in (EMBEDDINGS_DIR, METADATA_DIR):
        fs.makedirs(f"{root}/{sub}", exist_ok=True)
    written: list[str] = []
    rows: list[pa.Table] = []
    vectors: list[np.ndarray] = []
    held = 0

    def flush() -> None:
        n = len(written)
        emb = np.concatenate(vectors).astype(np.float32, copy=False)
        buf = io.BytesIO()
        np.save(buf, emb)
        path = f"{root}/{EMBEDDINGS_DIR}/img_emb_{n}.npy"
        with fs.open(path, "wb") as f:
            f.write(buf.getvalue())
        with fs.open(f"{root}/{METADATA_DIR}/metadata_{n}.parquet", "wb") as f:
            pq.write_table(pa.concat_tables(rows), f, compression="zstd")
        written.append(path)
        rows.clear()
        vectors.clear()

    for table, emb in _with_embeddings(run, schema):
        offset = 0
        while offset < table.num_rows:
            take = min(rows_per_file - held, table.num_rows - offset)
            rows.append(table.slice(offset, take))
            vectors.append(emb[offset : offset + take])
            held += take
            offset += take
            if held == rows_per_file:
                flush()
                held = 0
    if held:
        flush()
    return written
