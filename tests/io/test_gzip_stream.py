"""The gzip reader tells truncation, trailing garbage and corruption apart."""

from __future__ import annotations

import gzip
import io
import os

import pytest

from pixsieve.io.gzip_stream import CorruptStream, GzipStream

DATA = os.urandom(300_000) + bytes(300_000)


def read_all(raw: bytes, size: int = 65536) -> tuple[bytes, GzipStream]:
    stream = GzipStream(io.BytesIO(raw))
    out = bytearray()
    while chunk := stream.read(size):
        assert len(chunk) <= size  # never inflates more than asked for
        out += chunk
    return bytes(out), stream


def test_plain_and_concatenated_members():
    assert read_all(gzip.compress(DATA))[0] == DATA
    two = gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])
    out, stream = read_all(two)
    assert out == DATA and stream.trailing is None and not stream.truncated


def test_trailing_garbage_keeps_the_data_and_is_noted():
    out, stream = read_all(gzip.compress(DATA) + b"not gzip at all")
    assert out == DATA and stream.trailing.startswith("trailing_data")
    out, stream = read_all(gzip.compress(DATA) + bytes(700))  # zero padding is harmless
    assert out == DATA and stream.trailing is None


def test_a_stream_cut_short_ends_early():
    raw = gzip.compress(DATA)
    out, stream = read_all(raw[: len(raw) // 2])
    assert stream.truncated and DATA.startswith(out) and out


def test_corruption_raises():
    raw = bytearray(gzip.compress(DATA))
    raw[-8] ^= 0xFF  # the CRC
    with pytest.raises(CorruptStream, match="incorrect data check"):
        read_all(bytes(raw))


def test_a_bomb_is_never_inflated_at_once():
    stream = GzipStream(io.BytesIO(gzip.compress(bytes(200 << 20))))
    assert len(stream.read(4096)) == 4096
