"""Embedding inputs as a list of Parquet files, read batch by batch with every row checked.

``pixsieve dedup`` takes a Parquet file, a directory (non-Parquet files in it are ignored), a glob
or a list of them. Each file keeps its rows in order; a row's *global index* is its file's
offset (rows of the files before it) plus its position in the file, so any pass can address a
row without holding the others. Every batch is checked the same way wherever it is read
(:func:`check_batch`): nulls, NaN/inf, another dimension are one-line :class:`InputError`\\ s.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pixsieve.errors import InputError


@dataclass(frozen=True)
class Columns:
    """Names of the input columns (``None``: not used)."""

    id: str = "id"
    embedding: str = "embedding"
    score: str | None = None
    width: str | None = None
    height: str | None = None

    def names(self) -> list[str]:
        """The columns to read, id and embedding first, without repeats."""
        wanted = [self.id, self.embedding, self.score, self.width, self.height]
        return [c for c in dict.fromkeys(wanted) if c]


@dataclass(frozen=True)
class Source:
    """One input file: its path, number of rows and global index of its first row."""

    path: str
    rows: int
    offset: int


@dataclass
class Block:
    """One checked batch: ids, raw float32 embeddings and the keep-policy columns."""

    ids: pa.Array
    embeddings: np.ndarray
    aesthetic: np.ndarray | None
    resolution: np.ndarray | None


def parquet_files(inputs: str | Path | Sequence[str | Path]) -> list[str]:
    """Resolve a file, a directory, a glob or a list of them to Parquet files, in order.

    Files in a directory that do not end in ``.parquet`` are ignored (listings, ``_SUCCESS``...).

    Raises:
        InputError: a path that does not exist, or no Parquet file at all.
    """
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*.parquet") if p.is_file())
            if not found:
                raise InputError(f"no Parquet files (*.parquet) under {path}")
            files += found
        elif path.is_file():
            files.append(str(path))
        elif glob.has_magic(str(item)):
            matches = glob.glob(str(item), recursive=True)
            found = sorted(p for p in matches if p.endswith(".parquet"))
            if not found:
                raise InputError(f"no Parquet files match {item}")
            files += found
        else:
            raise InputError(f"no such file or directory: {item}")
    if not files:
        raise InputError("no input files given")
    return list(dict.fromkeys(files))


def _schema(path: str) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path} is not a readable Parquet file ({exc})") from exc


def embedding_dim(schema: pa.Schema, column: str, path: str) -> int:
    """Dimension of a fixed-size list column, or ``-1`` for a variable list (known from data)."""
    kind = schema.field(column).type
    if pa.types.is_fixed_size_list(kind):
        value_type, dim = kind.value_type, kind.list_size
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        value_type, dim = kind.value_type, -1
    else:
        raise InputError(f"column {column!r} must be a list of floats, got {kind} in {path}")
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise InputError(f"column {column!r} must hold numbers, got list of {value_type}")
    return dim


def plan_sources(files: list[str], columns: Columns) -> tuple[list[Source], int]:
    """Check every file's columns and return its row count and offset, plus the dimension.

    Only the footers are read, except for a list column whose length needs a first row.
    """
    sources, offset, dim = [], 0, -1
    for path in files:
        schema = _schema(path)
        missing = [c for c in columns.names() if c not in schema.names]
        if missing:
            raise InputError(
                f"missing column(s) {', '.join(map(repr, missing))} in {path}; "
                f"available: {', '.join(schema.names)}"
            )
        file_dim = embedding_dim(schema, columns.embedding, path)
        rows = pq.ParquetFile(path).metadata.num_rows
        if file_dim < 0 and dim < 0 and rows:
            for batch in pq.ParquetFile(path).iter_batches(1024, columns=[columns.embedding]):
                lengths = pc.list_value_length(batch.column(0)).drop_null()
                if len(lengths):
                    file_dim = int(lengths[0].as_py())
                    break
        if file_dim >= 0 and dim >= 0 and file_dim != dim:
            raise InputError(f"embeddings must all have {dim} dimensions; {path} has {file_dim}")
        dim = file_dim if file_dim >= 0 else dim
        sources.append(Source(path=path, rows=rows, offset=offset))
        offset += rows
    return sources, max(dim, 0)


def _float_column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    col = pc.cast(batch.column(name), pa.float64(), safe=False)
    return col.fill_null(np.nan).to_numpy(zero_copy_only=False)


def check_batch(batch: pa.RecordBatch, columns: Columns, dim: int) -> Block:
    """Check one batch and return it as a :class:`Block`.

    Raises:
        InputError: null embeddings or values, rows of another dimension, NaN/inf.
    """
    bid = batch.column(columns.id)
    col = batch.column(columns.embedding)

    def where(mask: np.ndarray) -> str:
        first = int(np.argmax(mask))
        return f"{int(mask.sum())} row(s), first id {bid[first].as_py()!r}"

    if col.null_count:
        raise InputError(f"null embeddings in {where(col.is_null().to_numpy(False))}")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if (lengths != dim).any():
        bad = lengths != dim
        raise InputError(
            f"embeddings must all have {dim} dimensions; {where(bad)} has "
            f"{int(lengths[np.argmax(bad)])}"
        )
    values = col.flatten()
    if values.null_count:
        raise InputError(f"embedding column {columns.embedding!r} contains null values")
    block = np.asarray(values.to_numpy(zero_copy_only=False)).reshape(batch.num_rows, dim)
    block = block.astype(np.float32, copy=False)
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        raise InputError(f"NaN or inf in embeddings: {where(~finite)}")
    resolution = None
    if columns.width and columns.height:
        resolution = np.stack(
            [_float_column(batch, columns.width), _float_column(batch, columns.height)], axis=1
        )
    return Block(
        ids=bid,
        embeddings=block,
        aesthetic=_float_column(batch, columns.score) if columns.score else None,
        resolution=resolution,
    )


def read_blocks(path: str, columns: Columns, dim: int, batch_rows: int) -> Iterator[Block]:
    """Checked blocks of at most ``batch_rows`` rows of one file, in order."""
    handle = pq.ParquetFile(path)
    for batch in handle.iter_batches(batch_size=max(1, batch_rows), columns=columns.names()):
        yield check_batch(batch, columns, dim)


def read_ids(path: str, column: str) -> pa.Array:
    """The id column of one file."""
    return pq.read_table(path, columns=[column]).column(column).combine_chunks()
