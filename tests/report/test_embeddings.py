"""export-embeddings: clip-retrieval's index layout, rows in the order of their metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pixsieve.cli.report import export_embeddings as export_command
from pixsieve.io.tables import embeddings_from_arrow
from pixsieve.report.embeddings import export_embeddings
from pixsieve.run.finished import RunError


def cached_embeddings(run: Path) -> dict[str, np.ndarray]:
    """Every cached embedding of ``run`` by sample_id."""
    table = ds.dataset(str(run / "cache" / "samples")).to_table(columns=["sample_id", "embedding"])
    table = table.filter(ds.field("embedding").is_valid())
    vectors = embeddings_from_arrow(table["embedding"])
    return dict(zip(table["sample_id"].to_pylist(), vectors, strict=True))


def test_embeddings_in_clip_retrieval_layout(scored_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    paths = export_embeddings(str(scored_run), str(out), rows_per_file=5)
    manifest = ds.dataset(str(scored_run / "manifest")).to_table()
    kept = manifest.filter(ds.field("status") == "kept")
    n = kept.num_rows
    assert len(paths) == -(-n // 5) > 1
    names = [f"img_emb_{i}.npy" for i in range(len(paths))]
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == sorted(names)
    assert sorted(p.name for p in (out / "metadata").iterdir()) == sorted(
        f"metadata_{i}.parquet" for i in range(len(paths))
    )
    cache = cached_embeddings(scored_run)
    ids: list[str] = []
    for i in range(len(paths)):
        emb = np.load(out / "img_emb" / f"img_emb_{i}.npy")
        meta = pq.read_table(out / "metadata" / f"metadata_{i}.parquet")
        assert emb.dtype == np.float32 and emb.shape == (meta.num_rows, 8)  # FakeEmbed: 8-d
        for row, vector in zip(meta.to_pylist(), emb, strict=True):
            np.testing.assert_array_equal(vector, cache[row["sample_id"]])  # same order
            assert row["output_shard"].startswith("shards/") and row["key"]
        ids += meta["sample_id"].to_pylist()
    # output order: the order of shards/00000.tar, 00001.tar, ... and within each tar
    order = [
        sid
        for path in sorted((scored_run / "metadata").glob("*.parquet"))
        for sid in pq.read_table(path, columns=["sample_id"])["sample_id"].to_pylist()
    ]
    assert ids == order and len(ids) == n
    schemas = {pq.read_schema(p) for p in (out / "metadata").iterdir()}
    assert len(schemas) == 1 and "aesthetic_score" in next(iter(schemas)).names


def test_a_run_without_embeddings_says_so(plain_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no cached embeddings"):
        export_embeddings(str(plain_run), str(tmp_path / "emb"))
    result = CliRunner().invoke(export_command, [str(plain_run), "-o", str(tmp_path / "e")])
    assert result.exit_code == 1 and "no cached embeddings" in result.output
    assert "Traceback" not in result.output


def test_cli_writes_the_files(scored_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(export_command, [str(scored_run), "-o", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    emb = np.load(tmp_path / "e" / "img_emb" / "img_emb_0.npy")
    meta = pq.read_table(tmp_path / "e" / "metadata" / "metadata_0.parquet")
    assert emb.shape[0] == meta.num_rows > 0
