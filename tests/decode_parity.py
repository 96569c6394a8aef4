"""Helpers shared by the GPU decode tests: read a shard into one batch, compare two decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures_shards import encode, load_photo, make_tar, photo_jpegs

from pixsieve.batch import KEPT, ImageBatch
from pixsieve.io.limits import ReadLimits
from pixsieve.io.tar_reader import TarShardReader


def read_batch(path: Path) -> ImageBatch:
    """Every sample of a shard as one batch (an invalid sidecar stays a warning: these tests
    compare decoders, so every image reaches them)."""
    limits = ReadLimits(keep_invalid_sidecars=True)
    return ImageBatch.from_samples(list(TarShardReader(str(path), limits=limits)), str(path), 0)


def corrupt_jpeg() -> bytes:
    """A JPEG whose header reads cleanly but whose scan names an undefined Huffman table."""
    good = encode(load_photo("chelsea.png"), quality=90)
    sos = good.find(b"\xff\xda")
    bad_sos = b"\xff\xda\x00\x0c\x03\x01\x77\x02\x77\x03\x77\x00\x3f\x00"
    return good[:sos] + bad_sos + good[sos + len(bad_sos) :]


def corrupt_batch_shard(folder: Path) -> Path:
    """Nine good JPEGs with one header-clean corrupt JPEG (key ``bad``) in the middle."""
    members = [(f"{i:03d}.jpg", d) for i, (_, d) in enumerate(photo_jpegs()[:9])]
    members.insert(4, ("bad.jpg", corrupt_jpeg()))
    return make_tar(folder / "corrupt.tar", members)


def assert_same_fates(a: ImageBatch, b: ImageBatch, mean_tol: float) -> None:
    """Same keys, members, sidecars, statuses, reasons, sizes, formats; close pixels."""
    assert list(a.key) == list(b.key)
    assert a.sidecars == b.sidecars and a.members == b.members
    np.testing.assert_array_equal(a.status, b.status)
    assert a.reason == b.reason
    np.testing.assert_array_equal(a.width, b.width)
    np.testing.assert_array_equal(a.height, b.height)
    assert list(a.columns["format"]) == list(b.columns["format"])
    for i in np.flatnonzero(a.status == KEPT):
        diff = np.abs(a.pixels[i].astype(int) - np.asarray(b.pixels[i], dtype=int)).mean()
        assert diff < mean_tol, (a.key[i], diff)
