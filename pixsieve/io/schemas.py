"""The Parquet schemas of everything a run writes, declared once (``docs/output.md``).

Every table is conformed to its schema (:func:`conform`) before it is written, so every file
of one kind has the same columns, in the same order, with the same types, whatever its rows
hold: a column that is all null in one file is still typed (never Arrow's ``null`` type), and
a file that is empty still has every column. Readers can open a whole folder
(``pyarrow.dataset``, pandas, polars, DuckDB, HF ``datasets``) without unifying schemas.

Fixed base columns come first; then the columns a run's stages declare (``Stage.columns``:
each :class:`~pixsieve.stages.ScoreFilter` declares its float32 score column), in stage
order. So a run's schema is fixed by its stages: two runs with the same stages write the same
schema. Vector columns (``list<float32>``, e.g. ``embedding``) live in the sample caches only;
the manifest and the per-tar metadata hold scalar columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import pyarrow as pa

log = logging.getLogger(__name__)

TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "list<float32>": pa.list_(pa.float32()),
    "list<string>": pa.list_(pa.string()),
}
"""The type names a stage may declare in ``columns`` (``{"my_score": "float32"}``)."""

VECTOR = TYPES["list<float32>"]

SAMPLE_ID = pa.field("sample_id", pa.string())
"""``f"{shard_index:05d}:{position}"``: unique in a run, joins every table (:func:`sample_id`)."""

_FATE = [
    SAMPLE_ID,
    pa.field("position", pa.int64()),
    pa.field("key", pa.string()),
]
_SAMPLE = [
    pa.field("members", pa.list_(pa.string())),
    pa.field("status", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("reason_detail", pa.string()),
]
_IMAGE = [
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("format", pa.string()),
    pa.field("warnings", pa.string()),
]
_EXACT = [
    pa.field("duplicate_of", pa.string()),
    pa.field("duplicate_of_source", pa.string()),
    pa.field("duplicate_of_run", pa.string()),  # the earlier output (``curate --against``)
]
SEMANTIC_FIELDS = [
    pa.field("similarity", pa.float32()),
    pa.field("component_id", pa.int64()),
    pa.field("component_size", pa.int64()),
    pa.field("chained", pa.bool_()),
]
EMBEDDING = pa.field("embedding", VECTOR)
"""The image embedding semantic dedup reads (``batch.columns["embedding"]``, null where none)."""
BASE_COLUMNS: frozenset[str] = frozenset(
    f.name for f in [*_FATE, *_SAMPLE, *_IMAGE, *_EXACT, *SEMANTIC_FIELDS, EMBEDDING]
) | {"source", "output_shard"}
"""Column names no stage may declare (the fixed base of the sample tables)."""

HASHES = pa.schema(
    [
        pa.field("shard_index", pa.int64()),
        pa.field("position", pa.int64()),
        SAMPLE_ID,
        pa.field("key", pa.string()),
        pa.field("source", pa.string()),
        pa.field("hash", pa.binary(16)),
    ]
)
"""``cache/hashes/SSSSS.parquet``: one row per hashed image (scan pass)."""

EXACT_DUPLICATES = pa.schema(
    [pa.field("shard_index", pa.int64()), pa.field("position", pa.int64()), *_EXACT]
)
"""``cache/exact_duplicates.parquet``: one row per exact repeat, with its first occurrence."""

INDEX_HASHES = pa.schema(
    [
        SAMPLE_ID,
        pa.field("hash", pa.binary(16)),
        pa.field("key", pa.string()),
        pa.field("source", pa.string()),
    ]
)
"""``index/hashes/hBBBB/pPPPPP.parquet``: kept samples' content hashes (``curate --against``)."""

SEMANTIC_DUPLICATES = pa.schema(
    [
        pa.field("shard_index", pa.int64()),
        pa.field("position", pa.int64()),
        pa.field("removed", pa.bool_()),
        *_EXACT,
        *SEMANTIC_FIELDS,
    ]
)
"""``cache/semantic_duplicates.parquet``: one row per sample in a near-duplicate group."""

EMBEDDING_METADATA = pa.schema(
    [
        SAMPLE_ID,
        pa.field("key", pa.string()),
        pa.field("source", pa.string()),
        pa.field("output_shard", pa.string()),
        pa.field("image_path", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
)
"""``metadata/metadata_N.parquet`` of ``export-embeddings``: the rows of ``img_emb_N.npy``."""


def dedup_duplicates(id_type: pa.DataType) -> pa.Schema:
    """``pixsieve dedup``'s ``duplicates.parquet``: ids keep the input id column's type."""
    return pa.schema(
        [
            pa.field("id", id_type),
            pa.field("duplicate_of", id_type),
            pa.field("similarity", pa.float32()),
            pa.field("component_id", pa.int64()),
            pa.field("component_size", pa.int64()),
            pa.field("chained", pa.bool_()),
            pa.field("reason", pa.string()),  # semantic_duplicate or duplicate_of_earlier
            pa.field("duplicate_of_run", pa.string()),  # the earlier run (dedup --against)
        ]
    )


#: A sample's integer id in the semantic pass and its index: ``shard_index << SAMPLE_ID_SHIFT |
#: position`` (:func:`sample_id` is its string form in the manifest).
SAMPLE_ID_SHIFT: int = 32


def sample_id(shard_index: int, position: int) -> str:
    """A sample's id: its input shard's index in the run and its position in that shard.

    Unreadable stretches (``position = -1`` rows) are numbered ``-1, -2, ...`` per shard.
    """
    return f"{shard_index:05d}:{position}"


def stage_columns(stages: Iterable[object]) -> dict[str, pa.DataType]:
    """The columns ``stages`` declare (``columns`` class attribute), in stage order.

    Raises:
        ValueError: an unknown type name, or a base column name declared by a stage.
    """
    out: dict[str, pa.DataType] = {}
    for stage in stages:
        declared: Mapping[str, str] = getattr(stage, "columns", None) or {}
        for name, kind in declared.items():
            if kind not in TYPES:
                raise ValueError(
                    f"stage {type(stage).__name__} declares column {name!r} of unknown type "
                    f"{kind!r}; types: {', '.join(TYPES)}"
                )
            if name in BASE_COLUMNS:
                raise ValueError(f"stage {type(stage).__name__} declares base column {name!r}")
            out[name] = TYPES[kind]
    return out


def extra_columns(schema: pa.Schema) -> dict[str, pa.DataType]:
    """The stage columns of a sample cache's schema (everything after the base columns)."""
    return {f.name: f.type for f in schema if f.name not in BASE_COLUMNS}


def _scalar(columns: Mapping[str, pa.DataType]) -> list[pa.Field]:
    return [pa.field(n, t) for n, t in columns.items() if t != VECTOR]


def samples_schema(columns: Mapping[str, pa.DataType]) -> pa.Schema:
    """``cache/samples/SSSSS.parquet``: every sample's fate before semantic dedup, its image
    columns, its embedding and every stage column."""
    fields = [*_FATE, *_SAMPLE, *_IMAGE, *_EXACT, EMBEDDING]
    return pa.schema(fields + [pa.field(n, t) for n, t in columns.items()])


def manifest_schema(columns: Mapping[str, pa.DataType]) -> pa.Schema:
    """``manifest/part-PPPPP.parquet``: one row per input sample, its final fate."""
    fields = [*_FATE, pa.field("source", pa.string()), *_SAMPLE]
    fields += [pa.field("output_shard", pa.string()), *_IMAGE, *_EXACT, *SEMANTIC_FIELDS]
    return pa.schema(fields + _scalar(columns))


def metadata_schema(columns: Mapping[str, pa.DataType]) -> pa.Schema:
    """``metadata/NNNNN.parquet``: one row per sample of ``shards/NNNNN.tar``, in tar order."""
    fields = [SAMPLE_ID, pa.field("key", pa.string()), pa.field("source", pa.string())]
    fields += [*_IMAGE, *SEMANTIC_FIELDS]
    return pa.schema(fields + _scalar(columns))


_warned: set[str] = set()


def conform(table: pa.Table, schema: pa.Schema, warn: bool = False) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: reordered, cast, missing ones null.

    A column the schema does not have is dropped; with ``warn`` (the score pass, where stage
    columns are first recorded), one warning per name: a stage that sets a column must
    declare it in ``columns`` for it to be recorded.
    """
    n = table.num_rows
    for name in table.column_names if warn else ():
        if name not in schema.names and name not in _warned:
            _warned.add(name)
            log.warning(
                "column %r is not recorded: declare it in its stage's `columns` "
                "(docs/writing-a-filter.md)",
                name,
            )
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            arrays.append(col if col.type == f.type else col.cast(f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
