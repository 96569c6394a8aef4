"""End to end through the public API: every sample accounted for, bytes preserved, resume."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pixsieve import ImageBatch, Pipeline
from pixsieve.run.layout import OutputError
from pixsieve.stages import DecodeStage, Filter, ImageSizeFilter


def manifest(out: Path) -> list[dict]:
    rows = ds.dataset(str(out / "manifest")).to_table().to_pylist()
    return sorted(rows, key=lambda r: (r["source"], r["position"]))


def output_members(out: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                assert m.name not in found
                found[m.name] = tf.extractfile(m).read()
    return found


def sample_keys(path: Path) -> list[str]:
    """Sample keys in tar order (consecutive members with the same key form one sample)."""
    keys: list[str] = []
    with tarfile.open(path, "r|") as tf:
        try:
            for m in tf:
                key = m.name.rsplit("/", 1)
                key = (key[0] + "/" if len(key) == 2 else "") + key[-1].split(".", 1)[0]
                if not keys or keys[-1] != key:
                    keys.append(key)
        except tarfile.ReadError:  # a truncated tar: the cut sample still counts
            pass
    return keys


def input_members(*paths: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for path in paths:
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                found[m.name] = tf.extractfile(m).read()
    return found


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, good_shards, bad_shard, truncated_shard, not_a_tar):
    inputs = tmp_path_factory.mktemp("in")
    for p in [*good_shards, bad_shard, not_a_tar, truncated_shard]:
        (inputs / p.name).write_bytes(p.read_bytes())
    out = tmp_path_factory.mktemp("run") / "out"
    pipe = Pipeline([ImageSizeFilter(min_side=8)], samples_per_shard=7)
    result = pipe.run([str(inputs)], str(out))
    return inputs, out, result


def test_one_manifest_row_per_input_sample(mixed_run):
    inputs, out, result = mixed_run
    rows = manifest(out)
    samples = [(r["source"].rsplit("/", 1)[1], r["key"]) for r in rows if r["position"] >= 0]
    expected = [
        (name, key)
        for name in ("bad.tar", "shard-000.tar", "shard-001.tar", "truncated.tar")
        for key in sample_keys(inputs / name)
    ]
    assert sorted(samples) == sorted(expected)  # every sample once: none lost, none twice
    assert len(rows) == result.counts["input"]  # totals are the manifest's, row for row
    assert len(rows) - len(samples) == result.record["inputs"]["unreadable"] == 2  # fake + rest
    assert {r["status"] for r in rows} <= {"kept", "removed", "error"}
    assert all((r["reason"] is None) == (r["status"] == "kept") for r in rows)
    shard_rows = {r["source"].rsplit("/", 1)[1]: r for r in rows if r["position"] < 0}
    assert sorted(shard_rows) == ["fake.tar", "truncated.tar"]  # one row per unreadable rest
    assert shard_rows["fake.tar"]["reason"] == "shard_error"  # a code: GROUP BY reason groups
    assert shard_rows["fake.tar"]["reason_detail"].startswith("not_a_tar")
    assert shard_rows["truncated.tar"]["reason"] == "shard_error"
    assert shard_rows["truncated.tar"]["reason_detail"].startswith("truncated_shard")
    assert len({r["sample_id"] for r in rows}) == len(rows)  # a unique id on every row
    assert any(e["task"].endswith("fake.tar") for e in result.shard_errors)
    truncated = [r for r in rows if r["source"].endswith("truncated.tar") and r["position"] >= 0]
    assert truncated[-1]["reason"] == "truncated_shard"
    assert all(r["reason"] in (None, "exact_duplicate") for r in truncated[:-1])


def test_bad_inputs_become_reasons(mixed_run):
    _, out, _ = mixed_run
    by_key = {r["key"]: r for r in manifest(out) if r["source"].endswith("bad.tar")}
    expect = {
        "000-good": (None, "kept"),
        "001-truncated": ("decode_error", "error"),
        "002-random": ("decode_error", "error"),
        "003-empty": ("empty", "error"),
        "004-png-as-jpg": (None, "kept"),
        "005-cmyk": (None, "kept"),
        "006-gray": (None, "kept"),
        "007-progressive": (None, "kept"),
        "008-exif-rotated": (None, "kept"),
        "009-tiny": ("too_small", "removed"),
        "010-huge": (None, "kept"),
        "011-webp": (None, "kept"),
        "012-upper": (None, "kept"),
        "013-badjson": ("invalid_json", "error"),  # loaders would raise on it
        "014-noimage": ("missing_image", "error"),
        "015-dupmember": ("duplicate_member", "error"),
        "../016-escape": ("unsafe_name", "error"),
        "/abs/017-abs": ("unsafe_name", "error"),
        "018-palette-alpha": (None, "kept"),
        "019-good": (None, "kept"),
    }
    for key, (reason, status) in expect.items():
        row = by_key[key]
        assert row["status"] == status, (key, row)
        assert row["reason"] == reason, (key, row["reason"])
    assert by_key["013-badjson"]["reason_detail"].startswith("013-badjson.json")
    assert by_key["015-dupmember"]["reason_detail"]  # the free text has its own column
    assert (by_key["008-exif-rotated"]["width"], by_key["008-exif-rotated"]["height"]) == (300, 451)
    assert by_key["010-huge"]["width"] == 16000


def test_kept_samples_keep_every_original_member_byte_for_byte(mixed_run):
    inputs, out, _ = mixed_run
    originals = input_members(
        *sorted(p for p in inputs.glob("*.tar") if p.name not in ("fake.tar", "truncated.tar"))
    )
    written = output_members(out)
    kept = [r for r in manifest(out) if r["status"] == "kept"]
    assert sum(len(r["members"]) for r in kept) == len(written)
    for r in kept:
        for name in r["members"]:
            assert written[name] == originals[name]
    sizes = [pq.read_metadata(p).num_rows for p in sorted((out / "metadata").glob("*.parquet"))]
    assert sizes[:-1] == [7] * (len(sizes) - 1) and 0 < sizes[-1] <= 7  # full shards
    assert sum(sizes) == len(kept)
    for row in kept:
        assert (out / row["output_shard"]).exists()
    assert not list(out.rglob("*.tmp"))


def test_nothing_written_outside_output(mixed_run, tmp_path_factory):
    _, out, _ = mixed_run
    assert not (out.parent / "016-escape.jpg").exists()
    assert all(".." not in n for n in output_members(out))


def test_run_json_records_config_counts_and_errors(mixed_run):
    _, out, result = mixed_run
    rec = json.loads((out / "run.json").read_text())
    assert rec["totals"] == result.counts
    assert rec["counters"]["size"]["counts"]["dropped_too_small"] == 1
    assert rec["counters"]["decode"]["counts"]["errors_decode_error"] == 2
    assert rec["counters"]["read"]["counts"]["errors_unsafe_name"] == 2
    assert {s["name"] for s in rec["stages"]} == {"decode", "size"}
    assert rec["versions"]["pixsieve"] and rec["timings"]["export"] >= 0
    assert any("not_a_tar" in e["error"] for e in rec["shard_errors"])


def test_exact_duplicates_across_shards(tmp_path, good_shards):
    (tmp_path / "in").mkdir()
    for i in range(2):
        (tmp_path / "in" / f"copy-{i}.tar").write_bytes(good_shards[0].read_bytes())
    result = Pipeline([]).run([str(tmp_path / "in")], str(tmp_path / "out"))
    rows = manifest(tmp_path / "out")
    dups = [r for r in rows if r["reason"] == "exact_duplicate"]
    assert len(dups) == result.counts["input"] // 2 == result.counts["removed"]
    assert all(
        r["source"].endswith("copy-1.tar") and r["duplicate_of_source"].endswith("copy-0.tar")
        for r in dups
    )
    assert all(r["duplicate_of"] == r["key"] for r in dups)


class MeanBrightness(Filter):
    """A user-defined filter written as in docs/writing-a-filter.md."""

    name: ClassVar[str] = "brightness"
    reason: ClassVar[str] = "too_dark"
    columns: ClassVar[dict[str, str]] = {"brightness": "float32"}  # recorded in the manifest

    def __init__(self, min_mean: float) -> None:
        super().__init__()
        self.min_mean = min_mean

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        return {"brightness": batch.pixels.reshape(len(batch), -1).mean(axis=1).astype(np.float32)}

    def keep(self, batch: ImageBatch) -> np.ndarray:
        return batch.columns["brightness"] >= self.min_mean


class Tagger:
    """Not a subclass of anything: duck-typed stages work too."""

    columns: ClassVar[dict[str, str]] = {"tag": "string"}

    def setup(self) -> None:
        self.ready = True

    def process(self, batch: ImageBatch) -> ImageBatch:
        batch.set_column("tag", np.array([f"t-{k}" for k in batch.key], dtype=object))
        return batch


def test_user_defined_stages(tmp_path, good_shards):
    result = Pipeline([DecodeStage(), MeanBrightness(110.0), Tagger()]).run(
        [str(p) for p in good_shards], str(tmp_path / "out")
    )
    rows = manifest(tmp_path / "out")
    dark = [r for r in rows if r["reason"] == "too_dark"]
    assert dark and all(r["brightness"] < 110 for r in dark)
    assert all(r["brightness"] >= 110 for r in rows if r["status"] == "kept")
    assert all(r["tag"] == f"t-{r['key']}" for r in rows)
    assert result.record["counters"]["brightness"]["counts"]["dropped_too_dark"] == len(dark)


def test_not_a_stage_is_rejected():
    with pytest.raises(TypeError, match="not a stage"):
        Pipeline([object()])


def test_memory_filesystem_output(good_shards):
    out = "memory://pixsieve-test/out"
    result = Pipeline([]).run([str(good_shards[0])], out)
    import fsspec

    fs = fsspec.filesystem("memory")
    assert fs.exists("/pixsieve-test/out/run.json")
    assert result.counts["kept"] == result.counts["input"] > 0
    assert fs.glob("/pixsieve-test/out/shards/*.tar")


def test_refuses_to_mix_runs(tmp_path, good_shards):
    Pipeline([]).run([str(good_shards[0])], str(tmp_path / "out"))
    with pytest.raises(OutputError, match=r"stage size added.*overwrite=True") as e:
        Pipeline([ImageSizeFilter(min_side=5000)]).run([str(good_shards[0])], str(tmp_path / "out"))
    assert "--overwrite" not in str(e.value)  # the Python API names its own argument
    result = Pipeline([ImageSizeFilter(min_side=5000)]).run(
        [str(good_shards[0])], str(tmp_path / "out"), overwrite=True
    )
    assert result.counts["kept"] == 0


class Interrupt(DecodeStage):
    """Decode, but stop the whole run (like Ctrl-C) on the second shard while a flag file exists."""

    def __init__(self, flag: str) -> None:
        super().__init__()
        self.flag = flag

    def process(self, batch: ImageBatch) -> ImageBatch:
        if batch.shard_index == 1 and Path(self.flag).exists():
            Path(self.flag).unlink()
            raise KeyboardInterrupt
        return super().process(batch)


def test_resume_after_interruption_gives_the_same_outputs(tmp_path, good_shards, bad_shard):
    inputs = [str(p) for p in [*good_shards, bad_shard]]
    flag = tmp_path / "flag"
    reference = tmp_path / "ref"
    Pipeline([Interrupt(str(flag))], samples_per_shard=5).run(inputs, str(reference))
    flag.touch()
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        Pipeline([Interrupt(str(flag))], samples_per_shard=5).run(inputs, str(out))
    assert (out / "cache/done/score/00000.json").exists()
    assert not (out / "cache/done/score/00001.json").exists()
    result = Pipeline([Interrupt(str(flag))], samples_per_shard=5).run(inputs, str(out))
    assert 1 <= result.record["tasks"]["score"]["resumed"] < 3  # shard 1 ran again
    assert manifest(out) == manifest(reference)
    assert output_members(out) == output_members(reference)
    ref_tars = sorted(p.name for p in (reference / "shards").glob("*.tar"))
    assert sorted(p.name for p in (out / "shards").glob("*.tar")) == ref_tars
    for name in ref_tars:
        assert (out / "shards" / name).read_bytes() == (reference / "shards" / name).read_bytes()


def test_partitions_share_one_schema(tmp_path, good_shards, bad_shard, not_a_tar):
    inputs = [str(p) for p in [*good_shards, bad_shard, not_a_tar]]
    out = tmp_path / "out"
    result = Pipeline([MeanBrightness(0.0)], partition_bytes=1).run(inputs, str(out))
    parts = sorted((out / "manifest").glob("*.parquet"))
    assert len(parts) == 4
    schemas = {pq.read_schema(p) for p in parts}
    assert len(schemas) == 1
    table = ds.dataset(str(out / "manifest")).to_table()
    assert table.num_rows == result.counts["input"]  # the not-a-tar file's own row included
    assert table.filter(ds.field("position") < 0).num_rows == 1
    assert result.record["inputs"]["unreadable"] == 1
    errors = table.filter(ds.field("status") == "error").num_rows
    assert result.counts["error"] == errors
    meta = {pq.read_schema(p) for p in (out / "metadata").glob("*.parquet")}
    assert len(meta) == 1 and "brightness" in next(iter(meta)).names
    assert ds.dataset(str(out / "metadata")).to_table().num_rows == result.counts["kept"]


def test_an_output_inside_the_input_directory_is_not_read_back(tmp_path, good_shards):
    (tmp_path / "a.tar").write_bytes(good_shards[0].read_bytes())
    first = Pipeline([]).run([str(tmp_path)], str(tmp_path / "out"))
    again = Pipeline([]).run([str(tmp_path)], str(tmp_path / "out"))  # resumes, same inputs
    assert again.counts == first.counts
    assert again.record["tasks"]["score"]["resumed"] == 1
