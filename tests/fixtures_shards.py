"""Build WebDataset shards from the photos in ``tests/data/photos`` at test time.

Every property a test checks is set here: good samples with JSON and TXT sidecars, and one
shard holding every kind of bad input the reader must survive.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import DATA, PHOTOS
from PIL import Image, ImageOps

__all__ = ["DATA", "PHOTOS"]


def load_photo(name: str) -> Image.Image:
    """Open a fixture photo as RGB."""
    return Image.open(PHOTOS / name).convert("RGB")


def encode(im: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    """Encode a Pillow image to bytes."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write ``members`` (name, bytes) as a tar at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def sample_members(
    key: str, image: bytes, ext: str = "jpg", caption: str | None = None, meta: dict | None = None
) -> list[tuple[str, bytes]]:
    """Members of one WebDataset sample: image, ``.txt`` caption, ``.json`` metadata."""
    out = [(f"{key}.{ext}", image)]
    out.append((f"{key}.txt", (caption or f"a photo {key}").encode()))
    out.append((f"{key}.json", json.dumps(meta or {"key": key, "url": f"http://x/{key}"}).encode()))
    return out


def near_duplicates() -> list[tuple[str, Image.Image]]:
    """One scene (a collage of four photos) and its flip, half-size and rotated variants."""
    scene = Image.new("RGB", (400, 360))
    for i, name in enumerate(("china.jpg", "flower.jpg", "rocket.jpg", "astronaut.png")):
        tile = ImageOps.fit(load_photo(name), (200, 180), Image.BICUBIC)
        scene.paste(tile, ((i % 2) * 200, (i // 2) * 180))
    return [
        ("scene", scene),
        ("scene_hflip", ImageOps.mirror(scene)),
        ("scene_resize", scene.resize((scene.width // 2, scene.height // 2), Image.BICUBIC)),
        ("scene_rotation", scene.rotate(8, resample=Image.BICUBIC, expand=True)),
    ]


def distinct_scenes() -> list[tuple[str, Image.Image]]:
    """One new scene per photo (a central crop with its colours remapped), and a split scene."""
    remaps = [
        lambda im: im.convert("RGB").getchannel(2).convert("RGB"),
        ImageOps.invert,
        lambda im: Image.merge("RGB", im.split()[::-1]),
        lambda im: ImageOps.posterize(im, 2),
        ImageOps.solarize,
        lambda im: ImageOps.colorize(im.convert("L"), "navy", "orange"),
        lambda im: Image.merge("RGB", (im.getchannel(1), im.getchannel(2), im.getchannel(0))),
        ImageOps.equalize,
    ]
    out = []
    for remap, path in zip(remaps, sorted(PHOTOS.iterdir()), strict=True):
        im = load_photo(path.name)
        w, h = im.size
        out.append((f"{path.stem}_scene", remap(im.crop((w // 5, h // 5, w - w // 5, h - h // 5)))))
    split = Image.new("RGB", (400, 300))  # left: hubble deep field, right: retina, upside down
    split.paste(ImageOps.fit(load_photo("hubble_deep_field.jpg"), (200, 300)), (0, 0))
    split.paste(ImageOps.flip(ImageOps.fit(load_photo("retina.jpg"), (200, 300))), (200, 0))
    out.append(("split_scene", split))
    return out


def photo_jpegs() -> list[tuple[str, bytes]]:
    """Every fixture photo (original bytes where JPEG), then generated near-duplicates and scenes.

    21 JPEGs: the 8 photos, a scene with its flip/resize/rotation variants (near-duplicates of
    each other) and 9 distinct scenes made from the photos.
    """
    out = []
    for p in sorted(PHOTOS.iterdir()):
        data = p.read_bytes() if p.suffix == ".jpg" else encode(Image.open(p).convert("RGB"))
        out.append((p.stem, data))
    for name, im in near_duplicates() + distinct_scenes():
        out.append((name, encode(im, quality=90)))
    return out


@pytest.fixture(scope="session")
def good_shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two clean shards of real photos with sidecars (keys ``s0-…`` and ``s1-…``)."""
    root = tmp_path_factory.mktemp("good")
    photos = photo_jpegs()
    shards = []
    for s in range(2):
        members: list[tuple[str, bytes]] = []
        for i, (name, data) in enumerate(photos[s::2]):
            members += sample_members(f"s{s}-{i:03d}", data, caption=f"{name} caption")
        shards.append(make_tar(root / f"shard-{s:03d}.tar", members))
    return shards


def _bad_members() -> list[tuple[str, bytes]]:
    chelsea = load_photo("chelsea.png")
    good = encode(chelsea, quality=90)

    def variant(q: int) -> bytes:  # distinct bytes, so exact dedup leaves them alone
        return encode(chelsea, quality=q)

    big = Image.new("L", (16000, 16000), 128)
    big_jpeg = encode(big, quality=50)
    exif = chelsea.getexif()
    exif[0x0112] = 6
    rotated = encode(chelsea, exif=exif.tobytes())
    members: list[tuple[str, bytes]] = []
    members += sample_members("000-good", good)
    members += sample_members("001-truncated", good[: len(good) // 2])
    members += sample_members("002-random", np.random.default_rng(0).bytes(5000))
    members += sample_members("003-empty", b"")
    members += sample_members("004-png-as-jpg", encode(chelsea, "PNG"))
    members += sample_members("005-cmyk", encode(chelsea.convert("CMYK")))
    members += sample_members("006-gray", encode(chelsea.convert("L")))
    members += sample_members("007-progressive", encode(chelsea, progressive=True))
    members += sample_members("008-exif-rotated", rotated)
    members += sample_members("009-tiny", encode(Image.new("RGB", (1, 1), (255, 0, 0))))
    members += sample_members("010-huge", big_jpeg)
    members += sample_members("011-webp", encode(chelsea, "WEBP"), ext="webp")
    members += sample_members("012-upper", variant(81), ext="JPG")
    members += [("013-badjson.jpg", variant(82)), ("013-badjson.json", b"{not json")]
    members += [("014-noimage.txt", b"caption only"), ("014-noimage.json", b"{}")]
    members += [("015-dupmember.jpg", variant(83)), ("015-dupmember.jpg", variant(83))]
    members += [("../016-escape.jpg", variant(84)), ("../016-escape.txt", b"x")]
    members += [("/abs/017-abs.jpg", variant(85))]
    members += sample_members(
        "018-palette-alpha", encode(chelsea.convert("RGBA"), "PNG"), ext="png"
    )
    members += sample_members("019-good", variant(86))
    return members


@pytest.fixture(scope="session")
def bad_shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shard with every kind of bad input (see ``_bad_members`` for the keys)."""
    return make_tar(tmp_path_factory.mktemp("bad") / "bad.tar", _bad_members())


@pytest.fixture(scope="session")
def truncated_shard(good_shards: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first good shard cut in the middle of a member's data."""
    data = good_shards[0].read_bytes()
    with tarfile.open(good_shards[0]) as tf:
        infos = tf.getmembers()
    cut_member = infos[len(infos) // 2]
    cut = cut_member.offset_data + cut_member.size // 2
    path = tmp_path_factory.mktemp("trunc") / "truncated.tar"
    path.write_bytes(data[:cut])
    return path


@pytest.fixture(scope="session")
def not_a_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file named ``.tar`` that holds JPEG bytes."""
    path = tmp_path_factory.mktemp("nottar") / "fake.tar"
    path.write_bytes((PHOTOS / "china.jpg").read_bytes())
    return path
