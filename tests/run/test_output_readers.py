"""A run's outputs read by the readers people use, pointed at the folders the README names.

``OUT/shards`` (tars only) for WebDataset readers, ``OUT/metadata`` and ``OUT/manifest`` for
Parquet readers; every Parquet folder is one dataset without schema unification, and two runs
with the same stages share their schemas (``docs/output.md``).
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pixsieve import ImageBatch, Pipeline
from pixsieve.stages import DecodeStage, ScoreFilter, keep_below

PARQUET_FOLDERS = ("manifest", "metadata", "cache/samples", "cache/hashes")


class Redness(ScoreFilter):
    """A user score filter: its float32 column is part of the run's schema."""

    name: ClassVar[str] = "redness"
    reason: ClassVar[str] = "too_red"
    column: ClassVar[str] = "red_share"
    threshold_setting: ClassVar[str] = "max_red"
    default_threshold: ClassVar[float] = 0.45
    keep_scores = staticmethod(keep_below)

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        m = batch.pixels.astype(np.float32).mean(axis=(1, 2)) + 1e-3
        return {self.column: m[:, 0] / m.sum(axis=1)}


def curate(inputs: list[Path], out: Path, max_red: float) -> Path:
    stages = [DecodeStage(image_size=32), Redness(max_red)]
    # a tiny partition size: one export partition per input shard, numbered shards across them
    Pipeline(stages, samples_per_shard=4, partition_bytes=1).run([str(p) for p in inputs], str(out))
    return out


@pytest.fixture(scope="module")
def run(good_shards, bad_shard, not_a_tar, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("readers") / "out"
    return curate([*good_shards, bad_shard, not_a_tar], out, 0.45)


@pytest.fixture(scope="module")
def other_run(good_shards, tmp_path_factory) -> Path:
    """Another run with the same stages (other inputs and threshold)."""
    return curate([good_shards[0]], tmp_path_factory.mktemp("readers2") / "out", 0.4)


def kept_rows(run: Path) -> list[dict]:
    table = ds.dataset(str(run / "manifest")).to_table(filter=ds.field("status") == "kept")
    return table.to_pylist()


def tar_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "shards").iterdir())


def test_folders_hold_one_kind_of_file_and_tars_are_numbered_globally(run: Path) -> None:
    names = tar_names(run)
    assert names == [f"{i:05d}.tar" for i in range(len(names))] and len(names) >= 3
    meta = sorted(p.name for p in (run / "metadata").iterdir())
    assert meta == [n.replace(".tar", ".parquet") for n in names]  # same basenames
    parts = len(list((run / "manifest").iterdir()))
    assert parts == 4  # one partition per input: numbering continues across partitions
    rows = kept_rows(run)
    assert {r["output_shard"] for r in rows} == {f"shards/{n}" for n in names}


def test_every_parquet_folder_is_one_dataset_with_one_fixed_schema(run: Path) -> None:
    for folder in PARQUET_FOLDERS:
        files = sorted((run / folder).glob("*.parquet"))
        schemas = {pq.read_schema(p).remove_metadata() for p in files}
        assert len(files) > 1 and len(schemas) == 1, folder
        schema = next(iter(schemas))
        assert not any(pa.types.is_null(f.type) for f in schema), (folder, schema)
        table = ds.dataset(str(run / folder)).to_table()  # no unification asked for
        assert table.num_rows == sum(pq.read_metadata(p).num_rows for p in files)
    manifest = ds.dataset(str(run / "manifest")).schema
    assert manifest.field("red_share").type == pa.float32()
    assert manifest.field("duplicate_of").type == pa.string()  # typed even when all null
    assert manifest.field("similarity").type == pa.float32()  # semantic dedup did not run
    ids = ds.dataset(str(run / "manifest")).to_table(columns=["sample_id"])["sample_id"]
    assert len(set(ids.to_pylist())) == len(ids)


def test_two_runs_with_the_same_stages_share_every_schema(run: Path, other_run: Path) -> None:
    for folder in PARQUET_FOLDERS:
        one, two = ds.dataset(str(run / folder)), ds.dataset(str(other_run / folder))
        assert one.schema.remove_metadata() == two.schema.remove_metadata(), folder
        both = ds.dataset(
            [str(p) for r in (run, other_run) for p in sorted((r / folder).glob("*.parquet"))],
            format="parquet",
        )
        assert both.to_table().num_rows == one.count_rows() + two.count_rows()
        union = ds.dataset([one, two])  # a union dataset refuses differing schemas
        assert union.to_table().num_rows == both.count_rows()
    for name in ("exact_duplicates.parquet",):
        assert pq.read_schema(run / "cache" / name) == pq.read_schema(other_run / "cache" / name)


def test_joins_on_sample_id(run: Path) -> None:
    manifest = ds.dataset(str(run / "manifest")).to_table(columns=["sample_id", "status"])
    meta = ds.dataset(str(run / "metadata")).to_table(columns=["sample_id", "key"])
    cache = ds.dataset(str(run / "cache/samples")).to_table(columns=["sample_id", "key"])
    kept = manifest.filter(ds.field("status") == "kept")
    assert kept.join(meta, "sample_id").num_rows == meta.num_rows == kept.num_rows
    assert manifest.join(cache, "sample_id").num_rows == cache.num_rows


def test_reasons_group_by_code(run: Path) -> None:
    table = ds.dataset(str(run / "manifest")).to_table(columns=["reason", "reason_detail"])
    groups = table.group_by("reason").aggregate([("reason", "count")]).to_pylist()
    codes = {g["reason"] for g in groups if g["reason"] is not None}
    assert {"decode_error", "shard_error", "invalid_json", "unsafe_name"} <= codes
    assert all(":" not in c for c in codes)


def test_pandas_reads_the_folders(run: Path) -> None:
    pd = pytest.importorskip("pandas")
    meta = pd.read_parquet(run / "metadata")
    manifest = pd.read_parquet(run / "manifest")
    assert len(meta) == (manifest["status"] == "kept").sum() > 0
    assert set(meta["sample_id"]) <= set(manifest["sample_id"])


def test_webdataset_reads_the_shards_with_one_brace_range(run: Path) -> None:
    wds = pytest.importorskip("webdataset")
    last = len(tar_names(run)) - 1
    url = f"{run}/shards/{{00000..{last:05d}}}.tar"
    samples = list(wds.WebDataset(url, shardshuffle=False).decode())  # JSON sidecars parse
    kept = kept_rows(run)
    assert Counter(s["__key__"] for s in samples) == Counter(r["key"] for r in kept)
    originals: dict[tuple[str, str], bytes] = {}
    for shard in {r["source"] for r in kept}:
        with tarfile.open(shard.removeprefix("file://")) as tf:
            for m in tf.getmembers():
                originals[(shard, m.name)] = tf.extractfile(m).read()  # type: ignore[union-attr]
    for r in kept:  # byte-identical copies of the original members
        with tarfile.open(run / r["output_shard"]) as tf:
            for name in r["members"]:
                assert tf.extractfile(name).read() == originals[(r["source"], name)]  # type: ignore[union-attr]
    with_json = [s for s in samples if "json" in s]
    assert with_json and all(isinstance(s["json"], dict) for s in with_json)
    json.dumps([s["json"] for s in with_json])


def test_hugging_face_datasets_reads_the_folders(run: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    cache = str(tmp_path / "hf")
    shards = datasets.load_dataset(
        "webdataset", data_dir=str(run / "shards"), split="train", cache_dir=cache
    )
    assert len(shards) == len(kept_rows(run))
    meta = datasets.load_dataset(
        "parquet", data_dir=str(run / "metadata"), split="train", cache_dir=cache
    )
    assert len(meta) == len(shards) and "red_share" in meta.column_names


def test_ray_data_reads_the_folders(run: Path) -> None:
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)
    try:
        n = len(kept_rows(run))
        # decoder=None: bytes as stored; Ray's default PIL decode refuses the bad shard's
        # 16000² image (over PIL's bomb limit, under pixsieve's max_pixels: docs/output.md)
        shards = ray.data.read_webdataset(str(run / "shards"), decoder=None)
        assert shards.count() == n
        assert ray.data.read_parquet(str(run / "metadata")).count() == n
        assert ray.data.read_parquet(str(run / "manifest")).count() > n
    finally:
        if started:
            ray.shutdown()
