"""Hostile shards, built at test time: every one knows the keys it holds and their fates.

Each builder returns a :class:`Shard`: file name, bytes, the keys a reader must report (in
order, with repeats where the input repeats a key) and, for some keys, the reason prefix the
manifest must give. Images are synthetic (numpy noise through Pillow), so nothing is read from
outside the repository.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

MiB = 1 << 20


@dataclass
class Shard:
    """A built input file and what the manifest must say about it."""

    name: str
    data: bytes
    keys: list[str]
    reasons: dict[str, str] = field(default_factory=dict)  # key -> reason prefix
    shard_rows: int = 0  # position = -1 rows expected


def jpeg(seed: int, size: tuple[int, int] = (64, 48), **kw: object) -> bytes:
    """A small, unique JPEG."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=80, **kw)
    return buf.getvalue()


def tar_bytes(members: list[tuple[str, bytes]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """An uncompressed tar of ``members`` (name, bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def samples(prefix: str, n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` samples ``{prefix}{i:03d}`` with a JPEG and a caption each."""
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        key = f"{prefix}{i:03d}"
        out += [(f"{key}.jpg", jpeg(seed * 1000 + i)), (f"{key}.txt", f"caption {key}".encode())]
    return out


def keys_of(members: list[tuple[str, bytes]]) -> list[str]:
    """Keys of consecutive groups, as the WebDataset rule forms them."""
    keys: list[str] = []
    for name, _ in members:
        head, _, base = name.rpartition("/")
        key = (f"{head}/" if head else "") + base.partition(".")[0]
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def _offsets(data: bytes) -> list[int]:
    """Header offsets of the members of a plain (GNU format, no long names) tar."""
    out, pos = [], 0
    while pos + 512 <= len(data) and data[pos : pos + 512].strip(b"\0"):
        out.append(pos)
        size = int(data[pos + 124 : pos + 136].strip(b"\0 ") or b"0", 8)
        pos += 512 + (size + 511) // 512 * 512
    return out


def octal(n: int, width: int) -> bytes:
    """A NUL-terminated octal tar header field."""
    return b"%0*o\0" % (width - 1, n)


def gnu_sparse_member(name: str, realsize: int, stored: bytes) -> bytes:
    """An old-GNU sparse member declaring ``realsize`` bytes with ``stored`` at the end."""
    h = bytearray(512)
    h[0 : len(name)] = name.encode()
    h[100:108], h[108:116], h[116:124] = octal(0o644, 8), octal(0, 8), octal(0, 8)
    h[124:136], h[136:148] = octal(len(stored), 12), octal(0, 12)
    h[156:157] = b"S"
    h[257:265] = b"ustar  \0"
    h[386:398], h[398:410] = octal(realsize - len(stored), 12), octal(len(stored), 12)
    h[483:495] = octal(realsize, 12)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + stored + b"\0" * (-len(stored) % 512)


# --- structural damage -------------------------------------------------------------------


def flipped_checksum() -> Shard:
    """One bit flipped in the 5th member's header checksum (the name is still readable)."""
    members = samples("flip", 6, 1)
    data = bytearray(tar_bytes(members))
    data[_offsets(bytes(data))[4] + 149] ^= 1
    return Shard("flipped.tar", bytes(data), keys_of(members), {"flip002": "corrupt_header"}, 1)


def garbage_inside() -> list[Shard]:
    """Random blocks wedged between two members: skipped up to the next header (GNU tar's
    resynchronisation, block-aligned); a misaligned wedge loses what follows (one shard row)."""
    members = samples("wedge", 6, 2)
    data = tar_bytes(members)
    cut = _offsets(data)[6]
    junk = random.Random(3).randbytes(1536)
    aligned = Shard("wedged.tar", data[:cut] + junk + data[cut:], keys_of(members), {}, 1)
    aligned.reasons = {"wedge002": "corrupt_header", "wedge003": "corrupt_header"}
    lost = Shard("misaligned.tar", data[:cut] + junk[:1500] + data[cut:], keys_of(members)[:3])
    lost.reasons, lost.shard_rows = {"wedge002": "corrupt_header"}, 1
    return [aligned, lost]


def pax_negative_size() -> Shard:
    """A pax header that says ``size=-5`` for one member."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(4):
            info = tarfile.TarInfo(f"pax{i}.jpg")
            data = jpeg(400 + i)
            info.size = len(data)
            if i == 1:
                info.pax_headers = {"size": "-5"}
            tf.addfile(info, io.BytesIO(data))
    keys = [f"pax{i}" for i in range(4)]
    return Shard("pax.tar", buf.getvalue(), keys, {"pax1": "corrupt_header: member pax1.jpg"})


def huge_pax_header() -> Shard:
    """A 20 MB pax header (over max_header_bytes): skipped as corrupt, the member survives."""
    members = samples("hpax", 3, 5)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i, (name, data) in enumerate(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if i == 2:
                info.pax_headers = {"comment": "x" * (20 * MiB)}
            tf.addfile(info, io.BytesIO(data))
    return Shard("hugepax.tar.gz", gzip.compress(buf.getvalue(), 1), keys_of(members), {}, 1)


def truncated_mid_member() -> Shard:
    """A tar cut in the middle of a member's bytes."""
    members = samples("cut", 6, 6)
    data = tar_bytes(members)
    end = _offsets(data)[7] + 700
    return Shard("cut.tar", data[:end], keys_of(members)[:4], {"cut003": "truncated_shard"}, 1)


def _keys_read(data: bytes) -> list[str]:
    """Keys whose header Python's own tarfile reads before a damaged gzip stream stops it."""
    keys: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tf:
            for info in tf:
                keys += [k for k in keys_of([(info.name, b"")]) if not keys or keys[-1] != k]
                tf.extractfile(info).read()
    except (EOFError, tarfile.ReadError, zlib.error, gzip.BadGzipFile):
        pass
    return keys


def truncated_gzip() -> Shard:
    """A .tar.gz whose stream stops early (inside a member's bytes)."""
    members = [(f"gzcut{i:03d}.jpg", jpeg(600 + i, (160, 120))) for i in range(10)]
    data = gzip.compress(tar_bytes(members))
    data = data[: len(data) * 3 // 4]
    keys = _keys_read(data)
    return Shard("gzcut.tar.gz", data, keys, {keys[-1]: "truncated_shard"}, 1)


def corrupt_deflate() -> Shard:
    """A .tar.gz with zeroed deflate data in the middle: no sample of it can be trusted."""
    members = [(f"defl{i:03d}.jpg", jpeg(700 + i, (160, 120))) for i in range(12)]
    data = bytearray(gzip.compress(tar_bytes(members)))
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    keys = _keys_read(bytes(data))
    return Shard(
        "deflate.tar.gz", bytes(data), keys, {k: "shard_error: corrupt_shard" for k in keys}, 1
    )


def gzip_trailing_garbage() -> Shard:
    """A valid .tar.gz followed by garbage bytes: the samples are intact."""
    members = samples("trail", 4, 9)
    data = gzip.compress(tar_bytes(members)) + b"this is not gzip" * 50
    return Shard("trailing.tar.gz", data, keys_of(members))


def gzip_members() -> Shard:
    """A .tar.gz made of two concatenated gzip members."""
    members = samples("gzm", 6, 10)
    data = tar_bytes(members)
    return Shard(
        "twomembers.tar.gz",
        gzip.compress(data[:4096]) + gzip.compress(data[4096:]),
        keys_of(members),
    )


def concatenated_tars() -> Shard:
    """Two tars one after the other (``cat a.tar b.tar``)."""
    a, b = samples("cata", 3, 11), samples("catb", 3, 12)
    return Shard("cat.tar", tar_bytes(a) + tar_bytes(b), keys_of(a) + keys_of(b))


def no_end_marker_and_garbage_after() -> list[Shard]:
    """A tar without its closing zero blocks; one with random bytes after them."""
    a, b = samples("noend", 3, 13), samples("after", 3, 14)
    plain = tar_bytes(a)
    no_end = plain[: _offsets(plain)[-1] + 1024]
    after = tar_bytes(b) + random.Random(15).randbytes(3000)
    return [Shard("noend.tar", no_end, keys_of(a)), Shard("after.tar", after, keys_of(b))]


def scattered_key() -> Shard:
    """The same key at two non-adjacent places: both groups are errors (documented rule)."""
    members = [
        ("sc1.jpg", jpeg(1600)),
        ("sc2.jpg", jpeg(1601)),
        ("sc1.json", b"{}"),
        ("sc3.jpg", jpeg(1602)),
    ]
    return Shard(
        "scattered.tar", tar_bytes(members), ["sc1", "sc2", "sc1", "sc3"], {"sc1": "duplicate_key"}
    )


def not_tars() -> list[Shard]:
    """A zero-byte file and a JPEG named .tar."""
    return [
        Shard("empty.tar", b"", [], {}, 1),
        Shard("photo.tar", jpeg(1700, (300, 200)), [], {}, 1),
    ]


# --- sizes: every one refused from its header -------------------------------------------


def sparse_3gb() -> Shard:
    """A 10 KB tar whose GNU sparse member declares 3 GB."""
    data = (
        tar_bytes([("sp0.jpg", jpeg(1800))])[:-1024]
        + gnu_sparse_member("sp1.jpg", 3 << 30, b"x" * 512)
        + tar_bytes([("sp2.jpg", jpeg(1801))])
    )
    return Shard("sparse.tar", data, ["sp0", "sp1", "sp2"], {"sp1": "too_large"})


def big_sidecar_and_many_members() -> Shard:
    """A 20 MB caption (over max_sidecar_bytes) and a sample of 1,000 members."""
    members = [("bs0.jpg", jpeg(1900)), ("bs0.txt", b"a" * (20 * MiB)), ("bs1.jpg", jpeg(1901))]
    members += [(f"bs1.{i}.cls", b"1") for i in range(1000)]
    members += [("bs2.jpg", jpeg(1902))]
    data = gzip.compress(tar_bytes(members), 1)
    return Shard(
        "sizes.tar.gz", data, ["bs0", "bs1", "bs2"], {"bs0": "too_large", "bs1": "too_large"}
    )


def deep_json_and_bad_sidecars() -> Shard:
    """A 100,000-level nested JSON sidecar, invalid JSON, invalid UTF-8: errors with their own
    reasons (standard loaders would raise on them), never a crash."""
    members = [
        ("dj0.jpg", jpeg(52000)),
        ("dj0.json", b"[" * 100_000 + b"]" * 100_000),
        ("dj1.jpg", jpeg(52001)),
        ("dj1.json", b'{"a": '),
        ("dj2.jpg", jpeg(52002)),
        ("dj2.txt", b"\xff\xfe\xfa"),
    ]
    reasons = {"dj0": "invalid_json", "dj1": "invalid_json", "dj2": "invalid_utf8"}
    return Shard("sidecars.tar", tar_bytes(members), ["dj0", "dj1", "dj2"], reasons)


def _png_header_only(w: int, h: int, color_type: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, color_type, 0, 0, 0])
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_declaring(w: int, h: int, progressive: bool) -> bytes:
    data = bytearray(jpeg(2100, (32, 32), progressive=progressive))
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5 : sof + 7] = h.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = w.to_bytes(2, "big")
    return bytes(data)


def declared_giants() -> Shard:
    """Images whose headers declare sizes over the pixel and decode-memory limits."""
    members = [
        ("gi0.png", _png_header_only(30000, 30000, 2)),  # over max_pixels
        ("gi1.png", _png_header_only(9000, 9000, 6)),  # RGBA: over max_decode_bytes
        ("gi2.jpg", _jpeg_declaring(60000, 60000, False)),  # over max_pixels
        ("gi3.jpg", _jpeg_declaring(16000, 16000, True)),  # progressive: coefficient memory
        ("gi4.jpg", b""),
        ("gi5.jpg", os.urandom(5000)),
        ("gi6.jpg", jpeg(2101)),
    ]
    reasons = {f"gi{i}": "too_large" for i in range(4)}
    reasons.update({"gi4": "empty", "gi5": "decode_error"})
    return Shard("giants.tar", tar_bytes(members), [f"gi{i}" for i in range(7)], reasons)


def odd_names() -> Shard:
    """Long (GNU long name), unicode and nested names."""
    long_key = "d/" + "x" * 300
    members = [
        (f"{long_key}.jpg", jpeg(2200)),
        ("ünï/çødé.jpg", jpeg(2201)),
        ("a/b/c/d.jpg", jpeg(2202)),
    ]
    return Shard("names.tar", tar_bytes(members), [long_key, "ünï/çødé", "a/b/c/d"])


def many_tiny_samples(n: int = 5000) -> Shard:
    """``n`` one-member samples (images of 3 bytes) in a .tar.gz."""
    members = [(f"t{i:06d}.jpg", b"abc") for i in range(n)]
    keys = [f"t{i:06d}" for i in range(n)]
    return Shard("tiny.tar.gz", gzip.compress(tar_bytes(members), 1), keys)


def zoo() -> list[Shard]:
    """Every hostile shard that shares one run (default settings)."""
    return [
        flipped_checksum(),
        *garbage_inside(),
        pax_negative_size(),
        huge_pax_header(),
        truncated_mid_member(),
        truncated_gzip(),
        corrupt_deflate(),
        gzip_trailing_garbage(),
        gzip_members(),
        concatenated_tars(),
        *no_end_marker_and_garbage_after(),
        scattered_key(),
        *not_tars(),
        sparse_3gb(),
        big_sidecar_and_many_members(),
        deep_json_and_bad_sidecars(),
        declared_giants(),
        odd_names(),
        many_tiny_samples(),
        Shard("good.tar", tar_bytes(samples("good", 5, 99)), [f"good{i:03d}" for i in range(5)]),
    ]


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read in chunks (so big members never sit in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def big_members(path: str, count: int = 3, size: int = 120 * MiB) -> Shard:
    """Write a .tar.gz of ``count`` samples of ``size`` zero bytes (under max_sample_bytes)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        for i in range(count):
            info = tarfile.TarInfo(f"{os.path.basename(path)[:2]}{i}.jpg")
            info.size = size
            tf.addfile(info, io.BufferedReader(_Zeros(size)))
    keys = [f"{os.path.basename(path)[:2]}{i}" for i in range(count)]
    return Shard(os.path.basename(path), b"", keys, {k: "exact_duplicate" for k in keys[1:]})


def scan_bomb(side: int = 2048, repeats: int = 20000) -> bytes:
    """A progressive JPEG that repeats one small scan ``repeats`` times (slow to decode)."""
    im = Image.new("RGB", (side, side), (120, 130, 140))
    buf = io.BytesIO()
    im.save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    scans, pos = [], 2
    while data[pos + 1] != 0xD9:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] != 0xDA:
            pos += 2 + length
            continue
        end = pos + 2 + length
        while not (data[end] == 0xFF and data[end + 1] not in (0, *range(0xD0, 0xD8))):
            end += 1
        scans.append((pos, end))
        pos = end
    start, stop = min(scans[1:], key=lambda s: s[1] - s[0])
    return data[: scans[-1][1]] + data[start:stop] * repeats + b"\xff\xd9"


def write(shards: list[Shard], directory: str) -> None:
    """Write every shard into ``directory``."""
    os.makedirs(directory, exist_ok=True)
    for s in shards:
        with open(os.path.join(directory, s.name), "wb") as f:
            f.write(s.data)


def manifest_json(path: str) -> list[dict[str, object]]:
    """Read a run's manifest rows (without pandas) as dicts."""
    import pyarrow.dataset as ds

    return ds.dataset(os.path.join(path, "manifest"), format="parquet").to_table().to_pylist()


__all__ = ["Shard", "json"]
