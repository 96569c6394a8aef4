"""Image → document conversion: the text stage, to_documents and the Parquet/JSONL writers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pixsieve.io.tables import embeddings_from_arrow
from pixsieve.pipeline import Pipeline
from pixsieve.report import RunError
from pixsieve.report.documents import iter_documents, to_documents, write_documents
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.documents import TextSource, TextStage


def test_text_sources() -> None:
    members = {
        "k.jpg": b"\xff\xd8",
        "k.txt": "une légende".encode(),
        "k.json": json.dumps({"caption": "from json", "meta": {"n": 3, "x": None}}).encode(),
    }
    assert TextSource.parse("txt").extract(members) == "une légende"
    assert TextSource.parse("json:caption").extract(members) == "from json"
    assert TextSource.parse("json:meta.n").extract(members) == "3"
    assert TextSource.parse("json:meta.x").extract(members) is None
    assert TextSource.parse("json:missing").extract(members) is None
    assert TextSource.parse("caption").extract(members) is None
    assert TextSource.parse("json:caption").extract({"k.json": b"{bad"}) is None
    assert str(TextSource.parse(" JSON:a.b ")) == "json:a.b"
    for bad in ("", "json", "json:", "xml:a", "json:a..b", "t x"):
        with pytest.raises(ValueError, match="text source"):
            TextSource.parse(bad)


def test_text_stage_attaches_text(good_shards: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    stages = [DecodeStage(image_size=32), TextStage("json:url")]
    Pipeline(stages).run([str(p) for p in good_shards], str(out), workers=2)
    table = ds.dataset(str(out / "manifest")).to_table(columns=["key", "text"])
    assert table.num_rows == 21
    assert all(t == f"http://x/{k}" for k, t in zip(*table.to_pydict().values(), strict=True))


@pytest.fixture(scope="module")
def docs(scored_run: Path) -> pa.Table:
    return to_documents(str(scored_run), include_embedding=True)


def test_documents_of_a_run(scored_run: Path, docs: pa.Table) -> None:
    kept = ds.dataset(str(scored_run / "manifest")).to_table(
        columns=["key", "status"], filter=ds.field("status") == "kept"
    )
    assert docs.num_rows == kept.num_rows > 0
    assert docs.column_names == ["id", "text", "metadata", "embedding"]
    ids = docs["id"].to_pylist()
    assert len(set(ids)) == len(ids)
    for row in docs.to_pylist():
        meta = row["metadata"]
        assert row["id"] == meta["sample_id"]  # joins the manifest and metadata/
        assert row["text"] and (
            "caption" in row["text"] or row["text"].startswith(("a photo", "copy"))
        )
        assert meta["source"].endswith(".tar") and meta["width"] > 0 and meta["height"] > 0
        assert meta["output_shard"].startswith("shards/")
        assert math.isfinite(meta["aesthetic_score"]) and math.isfinite(meta["nsfw_prob"])
    emb = embeddings_from_arrow(docs["embedding"])
    assert emb.shape == (docs.num_rows, 8) and np.isfinite(emb).all()
    urls = to_documents(str(scored_run), text_from="json:url")["text"].to_pylist()
    assert urls == [f"http://x/{m['key']}" for m in docs["metadata"].to_pylist()]


def test_parquet_round_trip(docs: pa.Table, tmp_path: Path) -> None:
    paths = write_documents(docs, str(tmp_path / "pq"), "parquet", rows_per_file=5)
    assert len(paths) == math.ceil(docs.num_rows / 5)
    back = pa.concat_tables([pq.read_table(p) for p in paths])
    assert back.equals(docs)


def test_jsonl_round_trip(scored_run: Path, docs: pa.Table, tmp_path: Path) -> None:
    paths = write_documents(
        iter_documents(str(scored_run), include_embedding=True), str(tmp_path / "jl"), "jsonl"
    )
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()]
    assert rows == docs.to_pylist()


def test_documents_errors(plain_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a finished"):
        iter_documents(str(tmp_path))
    with pytest.raises(ValueError, match="text source"):
        iter_documents(str(plain_run), text_from="xml:a")
    with pytest.raises(RunError, match="no cached embeddings"):
        to_documents(str(plain_run), include_embedding=True)
    docs = to_documents(str(plain_run))
    assert docs.num_rows == 21 and "aesthetic_score" not in docs.schema.field("metadata").type.names
