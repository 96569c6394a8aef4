"""Failures inside a run: nothing hangs, nothing is lost, and a re-run retries what failed."""

from __future__ import annotations

import gzip
import io
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.dataset as ds
import pytest
from fixtures_shards import make_tar

from pixsieve import ImageBatch, Pipeline
from pixsieve.io import tar_reader
from pixsieve.stages import Stage


def manifest(out: Path) -> list[dict]:
    return ds.dataset(str(out / "manifest")).to_table().to_pylist()


def full(row: dict) -> str:
    """A row's reason code and its detail as one string."""
    detail = row["reason_detail"]
    return f"{row['reason']}: {detail}" if detail else row["reason"] or ""


class ExplodingModel(Stage):
    """A 'model' stage that raises on the last batch of one shard while a flag file exists."""

    name: ClassVar[str] = "model"
    is_model: ClassVar[bool] = True

    def __init__(self, flag: str, shard: str) -> None:
        self.flag = flag
        self.shard = shard

    def process(self, batch: ImageBatch) -> ImageBatch:
        if batch.source.endswith(self.shard) and Path(self.flag).exists():
            time.sleep(0.2)  # let the reader finish and fill the queue
            raise RuntimeError("CUDA out of memory (simulated)")
        return batch


def test_a_failing_model_stage_neither_hangs_nor_loses_samples(tmp_path, good_shards):
    flag = tmp_path / "flag"
    flag.touch()
    inputs = [str(p) for p in good_shards]
    out = tmp_path / "out"
    pipe = Pipeline([ExplodingModel(str(flag), "shard-001.tar")], batch_size=2, retries=1)
    done = threading.Event()
    result: dict = {}

    def go() -> None:
        result["run"] = pipe.run(inputs, str(out))
        done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(60), "the run hung"
    first = result["run"]
    rows = manifest(out)
    failed = [r for r in rows if r["source"].endswith("shard-001.tar")]
    assert failed and all(full(r).startswith("shard_error: RuntimeError") for r in failed)
    assert any(e["task"].endswith("shard-001.tar") for e in first.shard_errors)
    # the failed shard has no completion marker: the same command retries it
    flag.unlink()
    again = pipe.run(inputs, str(out))
    assert again.counts == {
        "input": first.counts["input"],
        "kept": first.counts["input"],
        "removed": 0,
        "error": 0,
    }
    assert again.record["tasks"]["score"] == {"total": 2, "resumed": 1}


def test_empty_and_directory_only_tars(tmp_path, good_shards):
    import tarfile

    d = tmp_path / "in"
    d.mkdir()
    make_tar(d / "a-empty.tar", [])
    with tarfile.open(d / "b-dirs.tar", "w") as tf:
        info = tarfile.TarInfo("just/a/dir")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
    (d / "c.tar").write_bytes(good_shards[0].read_bytes())
    result = Pipeline([]).run([str(d)], str(tmp_path / "out"))
    assert result.counts["input"] == result.counts["kept"] > 0
    assert not result.shard_errors


def test_corrupt_gzip_makes_every_sample_of_the_shard_an_error(tmp_path, good_shards):
    data = bytearray(gzip.compress(good_shards[0].read_bytes()))
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(200)  # the CRC at the end no longer matches
    (tmp_path / "bad.tar.gz").write_bytes(bytes(data))
    result = Pipeline([]).run([str(tmp_path / "bad.tar.gz")], str(tmp_path / "out"))
    rows = manifest(tmp_path / "out")
    assert rows and all(r["status"] == "error" for r in rows)
    # the sample cut by the corruption may have lost its image member before the error
    expected = ("shard_error: corrupt_shard", "decode_error", "missing_image")
    assert all(full(r).startswith(expected) for r in rows)
    assert any(full(r).startswith("shard_error: corrupt_shard") for r in rows)
    assert result.counts["kept"] == 0 and result.shard_errors


def test_an_io_error_mid_shard_is_retried_then_recorded(tmp_path, good_shards, monkeypatch):
    real_open = tar_reader.fsspec.open
    calls = {"n": 0}

    class Flaky(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return True

        def seek(self, pos: int, whence: int = 0) -> int:
            self.pos = pos
            return pos

        def readinto(self, b) -> int:
            if self.pos > len(self.data) // 2:
                raise ConnectionResetError("connection reset by peer")
            chunk = self.data[self.pos : self.pos + len(b)]
            b[: len(chunk)] = chunk
            self.pos += len(chunk)
            return len(chunk)

    def flaky_open(url, mode="rb", **kw):
        if url.endswith("shard-001.tar"):
            calls["n"] += 1
            return io.BufferedReader(Flaky(Path(url.removeprefix("file://")).read_bytes()))
        return real_open(url, mode, **kw)

    monkeypatch.setattr(tar_reader.fsspec, "open", flaky_open)
    out = tmp_path / "out"
    result = Pipeline([], retries=2).run([str(p) for p in good_shards], str(out), report=False)
    rows = [r for r in manifest(out) if r["source"].endswith("shard-001.tar")]
    assert rows and all(full(r).startswith("shard_error: ConnectionResetError") for r in rows)
    assert calls["n"] >= 1 + 3  # scan + 3 score attempts (+ listing for the record)
    assert any("ConnectionResetError" in e["error"] for e in result.shard_errors)


class Scratch(Stage):
    """Keeps per-batch scratch state on self: safe only with one instance per thread."""

    name: ClassVar[str] = "scratch"
    columns: ClassVar[dict[str, str]] = {"seen": "string"}

    def process(self, batch: ImageBatch) -> ImageBatch:
        self.current = batch.source
        time.sleep(0.01)
        batch.set_column("seen", np.array([self.current] * len(batch), dtype=object))
        return batch


def test_stateful_stages_are_not_shared_between_threads(tmp_path, good_shards, bad_shard):
    inputs = [str(p) for p in [*good_shards, bad_shard]]
    Pipeline([Scratch()], batch_size=2).run(inputs, str(tmp_path / "out"), workers=3)
    rows = manifest(tmp_path / "out")
    assert all(r["seen"] == r["source"] for r in rows if r["seen"] is not None)


class SometimesLabelled(Stage):
    """An int column that is all-None in some batches."""

    name: ClassVar[str] = "label"
    columns: ClassVar[dict[str, str]] = {"label": "int64"}

    def process(self, batch: ImageBatch) -> ImageBatch:
        labels = [int(p) if p % 4 == 0 else None for p in batch.position]
        batch.set_column("label", np.array(labels, dtype=object))
        return batch


def test_a_column_that_is_empty_in_some_batches(tmp_path, good_shards):
    result = Pipeline([SometimesLabelled()], batch_size=2).run(
        [str(good_shards[0])], str(tmp_path / "out")
    )
    assert result.counts["error"] == 0
    labels = {r["position"]: r["label"] for r in manifest(tmp_path / "out")}
    assert all(v == (p if p % 4 == 0 else None) for p, v in labels.items())


@pytest.mark.parametrize("setup_raises", [True])
def test_resume_of_a_finished_model_pass_loads_no_model(tmp_path, good_shards, setup_raises):
    class Model(Stage):
        name: ClassVar[str] = "model"
        is_model: ClassVar[bool] = True

        def __init__(self, flag: str) -> None:
            self.flag = flag

        def setup(self) -> None:
            if Path(self.flag).exists():
                raise RuntimeError("model unavailable")

        def process(self, batch: ImageBatch) -> ImageBatch:
            return batch

    flag = tmp_path / "no-model"
    pipe = Pipeline([Model(str(flag))])
    first = pipe.run([str(good_shards[0])], str(tmp_path / "out"))
    flag.touch()  # the model can no longer be loaded ...
    again = pipe.run([str(good_shards[0])], str(tmp_path / "out"))  # ... and is not needed
    assert again.counts == first.counts and not again.shard_errors


def test_a_setup_failure_ends_the_run_instead_of_failing_every_shard(tmp_path, good_shards):
    class NoModel(Stage):
        name: ClassVar[str] = "model"
        is_model: ClassVar[bool] = True

        def setup(self) -> None:
            raise FileNotFoundError("model weights not found")

        def process(self, batch: ImageBatch) -> ImageBatch:
            return batch

    with pytest.raises(FileNotFoundError, match="model weights"):
        Pipeline([NoModel()]).run([str(p) for p in good_shards], str(tmp_path / "out"))
    assert not (tmp_path / "out" / "manifest").exists()


def test_a_full_disk_ends_the_run_instead_of_blaming_samples(tmp_path, good_shards, monkeypatch):
    import hostile.fullfs

    from pixsieve.io.writer import OutputWriteError

    monkeypatch.setattr(hostile.fullfs, "_written", 0)
    monkeypatch.setenv("PIXSIEVE_TEST_QUOTA", "50000")
    with pytest.raises(OutputWriteError, match="No space left on device"):
        Pipeline([]).run([str(good_shards[0])], f"fullfs://{tmp_path / 'out'}", report=False)
    monkeypatch.delenv("PIXSIEVE_TEST_QUOTA")
    result = Pipeline([]).run([str(good_shards[0])], str(tmp_path / "out"), report=False)
    assert result.counts["kept"] == result.counts["input"] > 0
    assert not list((tmp_path / "out").rglob("*.tmp"))
