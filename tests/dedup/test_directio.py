"""Work files read and written past the page cache (``O_DIRECT``), and the plain reads and
writes used where a file system has none: the same bytes either way, at any offset and length."""

from __future__ import annotations

import errno
import fcntl
import itertools
import os

import numpy as np
import pytest

from pixsieve.dedup import directio
from pixsieve.dedup.directio import DIRECT_ALIGN, DIRECT_CHUNK, AlignedBuffer


@pytest.fixture(params=["direct", "plain"])
def mode(request, monkeypatch):
    """Both paths: ``O_DIRECT`` where tmp_path's file system has it, and the fallback."""
    if request.param == "plain":
        monkeypatch.setattr(directio, "open_direct", lambda path, flags=os.O_RDONLY: None)
    return request.param


def _bytes(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, np.uint8)


def test_direct_reads_return_the_bytes_asked_for_at_any_offset(tmp_path):
    data = _bytes(3 * DIRECT_ALIGN + 123)
    path = tmp_path / "blob"
    path.write_bytes(data.tobytes())
    direct = directio.open_direct(path)
    if direct is None:  # this file system has no O_DIRECT: the fallback is tested below
        return
    buffer = AlignedBuffer()
    try:
        for at, n in [(0, 1), (5, 4096), (4095, 2), (4096, 8192), (100, len(data) - 100)]:
            got = directio.read_direct(direct, at, n, buffer, str(path))
            assert got.ctypes.data - buffer.get(1).ctypes.data == at % DIRECT_ALIGN
            np.testing.assert_array_equal(got, data[at : at + n])
        assert buffer.get(1).ctypes.data % DIRECT_ALIGN == 0
        with pytest.raises(OSError, match=f"{path.name}: ends before"):
            directio.read_direct(direct, len(data) - 10, 20, buffer, str(path))
    finally:
        os.close(direct)


def test_writer_and_reader_round_trip_any_sizes(tmp_path, mode):
    data = _bytes(2 * DIRECT_CHUNK + 5 * DIRECT_ALIGN + 77, seed=2)
    path = tmp_path / "rows.f32"
    writer = directio.DirectWriter(path)
    if mode == "plain":
        assert writer.direct is None and writer.stage is None
    cuts = [0, 1, 4096, 4097, DIRECT_CHUNK + 3, 2 * DIRECT_CHUNK + 1, len(data)]
    for lo, hi in itertools.pairwise(cuts):
        writer.write(data[lo:hi])
    writer.write(b"")
    writer.close()
    writer.close()  # idempotent
    assert path.read_bytes() == data.tobytes()
    with directio.DirectReader(path) as reader:
        for at, n in [(0, len(data)), (3, 10), (DIRECT_CHUNK - 1, DIRECT_CHUNK + 2)]:
            out = np.empty(n + 1, np.uint8)[1:]  # not aligned
            reader.read(out, at)
            np.testing.assert_array_equal(out, data[at : at + n])
        with pytest.raises(OSError, match=f"{path.name}: ends before"):
            reader.read(np.empty(10, np.uint8), len(data) - 5)


def test_a_rewritten_file_is_truncated_first(tmp_path, mode):
    path = tmp_path / "rows.f32"
    path.write_bytes(b"x" * 3 * DIRECT_ALIGN)
    w = directio.DirectWriter(path)
    w.write(b"abc")
    w.close()
    assert path.read_bytes() == b"abc"


def test_a_file_system_refusing_direct_io_after_open_is_read_and_written_plainly(
    tmp_path, monkeypatch
):
    data = _bytes(DIRECT_CHUNK + 3 * DIRECT_ALIGN + 5, seed=3)
    path = tmp_path / "rows.f32"
    calls = {"pwritev": os.pwritev, "preadv": os.preadv}

    def refusing(name):
        def call(fd, buffers, at):  # EINVAL on any descriptor opened with O_DIRECT
            if fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return calls[name](fd, buffers, at)

        return call

    monkeypatch.setattr(os, "pwritev", refusing("pwritev"))
    monkeypatch.setattr(os, "preadv", refusing("preadv"))
    writer = directio.DirectWriter(path)
    writer.write(data[:100])
    writer.write(data[100:])  # fills a chunk: the direct write is refused, then plain writes
    writer.close()
    assert writer.direct is None
    assert path.read_bytes() == data.tobytes()
    with directio.DirectReader(path) as reader:
        out = np.empty(len(data) - 7, np.uint8)
        reader.read(out, 7)
        np.testing.assert_array_equal(out, data[7:])
        assert reader.direct is None
        np.testing.assert_array_equal(reader.read_view(3, 10, AlignedBuffer()), data[3:13])
    with directio.DirectReader(path) as reader:  # a first read through read_view
        np.testing.assert_array_equal(reader.read_view(3, 10, AlignedBuffer()), data[3:13])
        assert reader.direct is None
