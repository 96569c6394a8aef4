"""The JPEG header reader the accelerated decoders route by: same view as Pillow."""

from __future__ import annotations

import io

import pytest
from fixtures_shards import _bad_members, encode, load_photo, photo_jpegs
from PIL import Image

from pixsieve.io.jpeg_header import read_jpeg_header


def pillow_view(data: bytes) -> tuple[int, int, int]:
    im = Image.open(io.BytesIO(data))
    return im.width, im.height, int(im.getexif().get(0x0112, 1) or 1)


def with_exif(orientation: int) -> bytes:
    im = load_photo("chelsea.png")
    exif = im.getexif()
    exif[0x0112] = orientation
    return encode(im, exif=exif.tobytes())


def with_xmp(xmp: bytes, exif_orientation: int | None = None) -> bytes:
    im = load_photo("chelsea.png")
    kw: dict = {"xmp": xmp}
    if exif_orientation is not None:
        exif = im.getexif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif.tobytes()
    return encode(im, **kw)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_header_reads_exif_orientation_like_pillow(orientation):
    data = with_exif(orientation)
    header = read_jpeg_header(data)
    assert header is not None
    assert (header.width, header.height, header.orientation) == pillow_view(data)


def test_header_reads_xmp_orientation_like_pillow():
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    for data in (with_xmp(xmp), with_xmp(xmp, exif_orientation=3)):
        header = read_jpeg_header(data)
        assert header is not None and header.orientation == pillow_view(data)[2]


def test_header_matches_pillow_on_every_fixture_jpeg():
    for name, data in photo_jpegs():
        header = read_jpeg_header(data)
        assert header is not None, name
        assert (header.width, header.height, header.orientation) == pillow_view(data), name


def test_header_refuses_what_the_cpu_decoder_must_judge():
    bad = dict(_bad_members())
    chelsea = load_photo("chelsea.png")
    refused = [
        bad["001-truncated.jpg"],
        bad["002-random.jpg"],
        bad["003-empty.jpg"],
        bad["004-png-as-jpg.jpg"],
        bad["005-cmyk.jpg"],
        bad["011-webp.webp"],
        encode(chelsea, "JPEG", quality=90)[:-2],  # no end-of-image marker
        b"\xff\xd8\xff",
    ]
    for data in refused:
        assert read_jpeg_header(data) is None
    gray = read_jpeg_header(bad["006-gray.jpg"])
    assert gray is not None and gray.components == 1
    assert read_jpeg_header(bad["007-progressive.jpg"]) is not None
    rotated = read_jpeg_header(bad["008-exif-rotated.jpg"])
    assert rotated is not None and rotated.oriented_size == (300, 451)
