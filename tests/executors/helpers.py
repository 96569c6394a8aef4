"""Test stages, toy task workers and output readers shared by the executor tests.

Everything here must be picklable: Ray ships it to worker processes (the Ray fixture registers
this module to be pickled by value, so workers need not find it on their path).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pixsieve.batch import ImageBatch
from pixsieve.stages.base import Filter, Stage
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.filters import ImageSizeFilter

# -- stages -----------------------------------------------------------------------------------


class BrightnessFilter(Filter):
    """Score mean pixel brightness (0-255); remove images darker than ``min_brightness``."""

    name: ClassVar[str] = "brightness"
    reason: ClassVar[str] = "too_dark"
    columns: ClassVar[dict[str, str]] = {"brightness": "float32"}

    def __init__(self, min_brightness: float = 100.0) -> None:
        super().__init__()
        self.min_brightness = min_brightness

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        return {"brightness": batch.pixels.reshape(len(batch), -1).mean(axis=1).astype(np.float32)}

    def keep(self, batch: ImageBatch) -> np.ndarray:
        return batch.columns["brightness"] >= self.min_brightness


def _count(counter: str, line: str) -> None:
    with open(counter, "a") as f:
        f.write(line + "\n")


def attempts(counter: str | Path) -> list[str]:
    """Lines written by :func:`_count` (one per attempt), in any process."""
    p = Path(counter)
    return p.read_text().splitlines() if p.exists() else []


class FailingStage(Stage):
    """Raise for every batch of shards whose URL contains ``match``; count each raise."""

    name: ClassVar[str] = "failing"

    def __init__(self, match: str, counter: str) -> None:
        self.match = match
        self.counter = counter

    def process(self, batch: ImageBatch) -> ImageBatch:
        if self.match in batch.source:
            _count(self.counter, batch.source)
            raise RuntimeError(f"boom in {batch.source.rsplit('/', 1)[-1]}")
        return batch


EXIT_AT_SHARD = "PIXSIEVE_TEST_EXIT_AT_SHARD"
"""Environment variable: :class:`SlowStage` kills its process on reaching this shard index."""

EXIT_CODE = 77


class SlowStage(Stage):
    """Sleep ``seconds`` per batch; die like a killed process at shard ``$EXIT_AT_SHARD``.

    The exit is read from the environment, not from the constructor, so the stage (and the
    run's fingerprint) is the same in the run that dies and in the one that resumes it.
    """

    name: ClassVar[str] = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def process(self, batch: ImageBatch) -> ImageBatch:
        exit_at = os.environ.get(EXIT_AT_SHARD)
        if exit_at and batch.shard_index >= int(exit_at):
            os._exit(EXIT_CODE)  # no clean-up, no flushing: as abrupt as SIGKILL
        time.sleep(self.seconds)
        return batch


class ThumbnailEmbedder(Stage):
    """Planted embeddings (zero-mean 16x16 grey thumbnails) and a width-based aesthetic score:
    re-encodes and resizes of a photo stay within ~0.99 cosine, other photos do not."""

    name: ClassVar[str] = "embed"

    def process(self, batch: ImageBatch) -> ImageBatch:
        emb = np.full((len(batch), 256), np.nan, dtype=np.float32)
        for i in np.flatnonzero(batch.decoded):
            im = Image.fromarray(batch.pixels[i]).convert("L").resize((16, 16), Image.BILINEAR)
            v = np.asarray(im, dtype=np.float32).ravel()
            v -= v.mean()
            emb[i] = v / (np.linalg.norm(v) + 1e-6)
        batch.set_column("embedding", emb)
        batch.set_column("aesthetic_score", np.where(batch.decoded, batch.width / 1000, np.nan))
        return batch


def conformance_stages() -> list[Any]:
    """Decode + two filters that remove some samples and record scores."""
    return [DecodeStage(threads=2), ImageSizeFilter(min_side=300), BrightnessFilter(110.0)]


# -- toy task workers (the TaskWorker protocol without a pipeline) ----------------------------


class ToyWorker:
    """Task ``i`` sleeps a little (later tasks finish first) and reports ``i`` samples.

    ``raise_on`` tasks raise on every attempt, ``crash_on`` tasks kill their process on every
    attempt (and in ``fail()`` too with ``crash_in_fail``), ``crash_once`` tasks kill it on the
    first attempt only. ``done_tasks`` are finished already (resume): ``done()`` returns
    ``{"samples": task, "saved": True}`` for them. Set-ups, runs and fails go to ``counter``.
    ``setup()`` is idempotent, as the protocol asks (the flag is enough: Ray actors run one
    task at a time).
    """

    def __init__(
        self,
        counter: str,
        raise_on: tuple[int, ...] = (),
        crash_on: tuple[int, ...] = (),
        crash_once: tuple[int, ...] = (),
        sleep: float = 0.05,
        *,
        crash_in_fail: bool = False,
        done_tasks: tuple[int, ...] = (),
    ) -> None:
        self.counter = counter
        self.raise_on, self.crash_on, self.crash_once = raise_on, crash_on, crash_once
        self.crash_in_fail = crash_in_fail
        self.done_tasks = done_tasks
        self.sleep = sleep
        self.setups = 0

    def setup(self) -> None:
        if self.setups:
            return
        self.setups += 1
        _count(self.counter, f"setup {os.getpid()}")

    def done(self, task: int) -> dict[str, Any] | None:
        return {"samples": task, "saved": True} if task in self.done_tasks else None

    def run(self, task: int, progress: Any) -> dict[str, Any]:
        tries = sum(1 for line in attempts(self.counter) if line == f"run {task}")
        _count(self.counter, f"run {task}")
        if task in self.crash_on or (task in self.crash_once and tries == 0):
            os._exit(3)
        if task in self.raise_on:
            raise ValueError(f"task {task} is bad")
        time.sleep(self.sleep * (5 - task % 5))
        return {"samples": task, "setups": self.setups, "pid": os.getpid()}

    def fail(self, task: int, error: str) -> dict[str, Any]:
        _count(self.counter, f"fail {task}")
        if self.crash_in_fail and task in self.crash_on:
            os._exit(3)
        return {"samples": 0, "error": error, "failed": True}


class EnvWorker(ToyWorker):
    """Reports the value of the environment variable ``name`` where the task runs."""

    def __init__(self, counter: str, name: str) -> None:
        super().__init__(counter)
        self.name = name

    def run(self, task: int, progress: Any) -> dict[str, Any]:
        return {"samples": 1, "value": os.environ.get(self.name)}


class Unpicklable(ToyWorker):
    """A worker holding a lock: cannot travel to Ray."""

    def __init__(self, counter: str) -> None:
        import threading

        super().__init__(counter)
        self.lock = threading.Lock()


# -- inputs and outputs -----------------------------------------------------------------------


def synthetic_shards(root: Path, shards: int, per_shard: int, size: int = 96) -> list[Path]:
    """Write ``shards`` tars of ``per_shard`` random-gradient JPEGs (with ``.txt``)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for s in range(shards):
        path = root / f"syn-{s:03d}.tar"
        with tarfile.open(path, "w") as tf:
            for i in range(per_shard):
                base = rng.integers(0, 256, 3)
                ramp = np.linspace(0, 120, size)[:, None, None]
                px = np.clip(base + ramp + rng.normal(0, 20, (size, size, 3)), 0, 255)
                buf = io.BytesIO()
                Image.fromarray(px.astype(np.uint8)).save(buf, "JPEG", quality=85)
                for name, data in (
                    (f"{s:03d}-{i:04d}.jpg", buf.getvalue()),
                    (f"{s:03d}-{i:04d}.txt", f"image {i}".encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        out.append(path)
    return out


def read_manifest(output: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """Every manifest part, concatenated and sorted by (source, position)."""
    fs, root = fsspec.core.url_to_fs(output, **(storage_options or {}))
    fs.invalidate_cache()
    parts = sorted(fs.glob(f"{root.rstrip('/')}/manifest/*.parquet"))
    tables = []
    for p in parts:
        with fs.open(p, "rb") as f:
            tables.append(pq.read_table(f))
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.sort_by([("source", "ascending"), ("position", "ascending")])


def read_output_shards(
    output: str, storage_options: dict[str, Any] | None = None
) -> dict[str, bytes]:
    """``{shard file name: tar bytes}`` of every output shard."""
    fs, root = fsspec.core.url_to_fs(output, **(storage_options or {}))
    fs.invalidate_cache()
    out = {}
    for p in sorted(fs.glob(f"{root.rstrip('/')}/shards/*.tar")):
        with fs.open(p, "rb") as f:
            out[p.rsplit("/", 1)[-1]] = f.read()
    return out


def tar_members(data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member of a tar given as bytes."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]


def assert_same_manifest(a: pa.Table, b: pa.Table, *, same_sources: bool = True) -> None:
    """Same keys, statuses, reasons and output shards; float columns within tolerance."""
    assert a.num_rows == b.num_rows
    assert sorted(a.column_names) == sorted(b.column_names)
    skip = set() if same_sources else {"source", "duplicate_of_source"}
    for name in a.column_names:
        if name in skip:
            continue
        x, y = a[name], b[name]
        if pa.types.is_floating(x.type):
            xs = x.to_numpy(zero_copy_only=False).astype(np.float64)
            ys = y.to_numpy(zero_copy_only=False).astype(np.float64)
            np.testing.assert_allclose(xs, ys, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
        else:
            assert x.to_pylist() == y.to_pylist(), name


def assert_same_outputs(
    a: str,
    b: str,
    storage_a: dict[str, Any] | None = None,
    storage_b: dict[str, Any] | None = None,
    same_sources: bool = True,
) -> None:
    """Two runs wrote the same manifest and the same samples with identical member bytes."""
    assert_same_manifest(
        read_manifest(a, storage_a), read_manifest(b, storage_b), same_sources=same_sources
    )
    sa, sb = read_output_shards(a, storage_a), read_output_shards(b, storage_b)
    assert sorted(sa) == sorted(sb)
    for name in sa:
        assert tar_members(sa[name]) == tar_members(sb[name]), name


# -- a curate run in another process (for the interrupted-run test) ---------------------------


def curate_main() -> None:
    """``python -c 'from executors.helpers import curate_main; curate_main()' IN OUT SECONDS``.

    With ``$PIXSIEVE_TEST_EXIT_AT_SHARD`` set, the process dies in the score pass on that shard.
    """
    inputs, output, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    result = slow_pipeline(seconds).run([inputs], output, "local", workers=1)
    print(json.dumps(result.counts))


def slow_pipeline(seconds: float) -> Any:
    """The pipeline used by the interrupted-run test (slow score pass)."""
    from pixsieve.pipeline import Pipeline

    return Pipeline(
        [DecodeStage(threads=1), SlowStage(seconds), BrightnessFilter(110.0)],
        batch_size=8,
        samples_per_shard=10,
        partition_bytes=40_000,
    )
