"""Declared Parquet schemas: stage columns, conform, ids, reason codes."""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
import pytest

from pixsieve.batch import reason_code, split_reason
from pixsieve.io.schemas import (
    conform,
    manifest_schema,
    metadata_schema,
    sample_id,
    samples_schema,
    stage_columns,
)
from pixsieve.stages import ScoreFilter
from pixsieve.stages.scoring import AestheticFilter, NSFWFilter


class Sharpness(ScoreFilter):
    name: ClassVar[str] = "sharpness"
    reason: ClassVar[str] = "blurry"
    column: ClassVar[str] = "sharpness_score"
    default_threshold: ClassVar[float] = 1.0


class Labels:
    columns: ClassVar[dict[str, str]] = {"label": "int64", "vec": "list<float32>"}


def test_score_filters_declare_their_column_and_stages_fix_the_schema() -> None:
    cols = stage_columns([AestheticFilter(), NSFWFilter(), Sharpness(), Labels()])
    assert list(cols) == ["aesthetic_score", "nsfw_prob", "sharpness_score", "label", "vec"]
    assert cols["sharpness_score"] == pa.float32() and cols["vec"] == pa.list_(pa.float32())
    manifest = manifest_schema(cols)
    assert manifest.names[:3] == ["sample_id", "position", "key"]
    assert "vec" not in manifest.names and "vec" in samples_schema(cols).names  # cache only
    assert "label" in metadata_schema(cols).names and "status" not in metadata_schema(cols).names
    assert manifest_schema(stage_columns([Sharpness()])) == manifest_schema(
        stage_columns([Sharpness(2.0)])
    )  # thresholds do not change a schema


def test_bad_declarations_are_refused() -> None:
    class Odd:
        columns: ClassVar[dict[str, str]] = {"x": "decimal"}

    class Clash:
        columns: ClassVar[dict[str, str]] = {"reason": "string"}

    with pytest.raises(ValueError, match="unknown type 'decimal'"):
        stage_columns([Odd()])
    with pytest.raises(ValueError, match="base column 'reason'"):
        stage_columns([Clash()])


def test_conform_types_all_null_columns_fills_missing_and_drops_undeclared() -> None:
    schema = manifest_schema({"score": pa.float32()})
    table = pa.table({"key": ["a"], "duplicate_of": pa.nulls(1), "extra": [1], "width": [3]})
    out = conform(table, schema)
    assert out.schema == schema
    assert out["duplicate_of"].type == pa.string() and out["width"].type == pa.int32()
    assert out["score"].null_count == 1 and "extra" not in out.column_names
    assert conform(schema.empty_table(), schema).schema == schema


def test_sample_ids_and_reason_codes() -> None:
    assert sample_id(3, 12) == "00003:12" and sample_id(0, -2) == "00000:-2"
    assert split_reason("decode_error: cannot identify: x") == (
        "decode_error",
        "cannot identify: x",
    )
    assert split_reason("too_dark") == ("too_dark", None) and split_reason(None) == (None, None)
    assert reason_code("shard_error: not_a_tar: x") == "shard_error"
