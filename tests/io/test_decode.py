"""CPU decoding: formats, modes, EXIF orientation, DCT downscaling and the bomb guard."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fixtures_shards import PHOTOS, encode, load_photo
from PIL import Image, ImageOps

from pixsieve.io.decode import DecodeError, _resize_crop, decode_image, decode_or_error


def reference(im: Image.Image, size: int = 224) -> np.ndarray:
    """Full-resolution decode + exif transpose + the same resize/crop: what draft approximates."""
    im = ImageOps.exif_transpose(im).convert("RGB")
    return np.asarray(_resize_crop(im, size))


@pytest.mark.parametrize("name", sorted(p.name for p in PHOTOS.iterdir()))
def test_real_photos_match_full_decode(name):
    data = (PHOTOS / name).read_bytes()
    out = decode_image(data)
    assert out.pixels.shape == (224, 224, 3) and out.pixels.dtype == np.uint8
    ref = reference(Image.open(PHOTOS / name))
    assert (out.width, out.height) == Image.open(PHOTOS / name).size
    # draft() decodes JPEGs at 1/2..1/8 scale: close to, not equal to, the full decode
    assert np.abs(out.pixels.astype(int) - ref.astype(int)).mean() < 6


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "I;16"])
def test_modes_become_rgb(mode):
    im = load_photo("chelsea.png")
    if mode == "I;16":
        arr = (np.asarray(im.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        im = Image.fromarray(arr)
        assert im.mode.startswith("I")
    else:
        im = im.convert(mode)
    fmt = "JPEG" if mode in ("CMYK", "L") else "PNG"
    out = decode_image(encode(im, fmt))
    assert out.pixels.shape == (224, 224, 3)
    gray = np.asarray(_resize_crop(load_photo("chelsea.png").convert("L").convert("RGB"), 224))
    if mode in ("L", "I;16", "LA"):
        assert np.abs(out.pixels.astype(int) - gray.astype(int)).mean() < 4


def test_alpha_is_composited_on_white():
    im = Image.new("RGBA", (300, 300), (255, 0, 0, 0))
    out = decode_image(encode(im, "PNG"))
    assert (out.pixels == 255).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation):
    im = load_photo("astronaut.png").resize((320, 240))
    exif = im.getexif()
    exif[0x0112] = orientation
    data = encode(im, "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data)
    ref = reference(Image.open(__import__("io").BytesIO(data)))
    assert (out.width, out.height) == ((240, 320) if orientation >= 5 else (320, 240))
    assert np.abs(out.pixels.astype(int) - ref.astype(int)).mean() < 6


def test_failures_have_reasons():
    with pytest.raises(DecodeError, match=r"^empty"):
        decode_image(b"")
    with pytest.raises(DecodeError, match=r"^decode_error"):
        decode_image(b"\xff\xd8\xff" + b"\x00" * 100)
    good = encode(load_photo("chelsea.png"))
    with pytest.raises(DecodeError, match=r"^decode_error"):
        decode_image(good[: len(good) // 2])
    with pytest.raises(DecodeError, match=r"^too_large"):
        decode_image(good, max_pixels=1000)
    big_png = encode(Image.new("L", (2000, 2000)), "PNG")
    with pytest.raises(DecodeError, match=r"^too_large"):
        decode_image(big_png, max_full_decode_pixels=1_000_000)


def test_png_under_jpg_name_and_webp_and_tiny():
    chelsea = load_photo("chelsea.png")
    assert decode_image(encode(chelsea, "PNG")).format == "PNG"
    assert decode_image(encode(chelsea, "WEBP")).format == "WEBP"
    tiny = decode_image(encode(Image.new("RGB", (1, 1), (255, 0, 0))))
    assert (tiny.width, tiny.height) == (1, 1) and tiny.pixels.shape == (224, 224, 3)


_BOMB = """
import resource, sys
sys.path.insert(0, "tests")
from pixsieve.io.decode import decode_image, DecodeError
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    out = decode_image(data, max_pixels=int(sys.argv[2]))
    result = f"{out.width}x{out.height}"
except DecodeError as e:
    result = e.code
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(result, (after - before) // 1024)
"""


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    Image.new("L", (16000, 16000), 100).save(path, "JPEG", quality=30)
    return path


@pytest.mark.parametrize(
    ("max_pixels", "expected"), [(16384**2, "16000x16000"), (10**6, "too_large")]
)
def test_16k_jpeg_never_allocates_full_resolution(huge_jpeg, max_pixels, expected):
    proc = subprocess.run(
        [sys.executable, "-c", _BOMB, str(huge_jpeg), str(max_pixels)],
        capture_output=True,
        text=True,
        check=True,
    )
    result, grew_mb = proc.stdout.split()
    assert result == expected
    # full resolution would be 256 MB (L) or 768 MB (RGB); the 1/8 DCT decode is ~4 MB
    assert int(grew_mb) < 64, proc.stdout


def test_a_scan_bomb_stops_at_its_deadline():
    import time

    from hostile.inputs import scan_bomb

    start = time.monotonic()
    result = decode_or_error(scan_bomb(), decode_timeout=0.3)
    assert result.reason.startswith("decode_timeout")
    assert time.monotonic() - start < 2.0


def test_decoder_memory_is_estimated_per_format_and_mode():
    from hostile.inputs import _jpeg_declaring, _png_header_only

    rgba = decode_or_error(_png_header_only(9000, 9000, 6))  # 81 Mpx: under the pixel limit
    assert rgba.reason.startswith("too_large: 9000x9000 PNG RGBA needs")
    grey = decode_or_error(_png_header_only(9000, 9000, 0), max_decode_bytes=1 << 30)
    assert not grey.reason.startswith("too_large")  # 5 bytes a pixel: fits (then fails: no data)
    progressive = decode_or_error(_jpeg_declaring(16000, 16000, True))
    assert progressive.reason.startswith("too_large") and "needs" in progressive.reason


def test_only_image_formats_are_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert decode_or_error(eps).reason.startswith("decode_error")
