"""Build the bundled sample shards in ``sample/`` from the photos in ``tests/data/photos``.

Two WebDataset shards with ``.txt`` captions and ``.json`` metadata: the eight photos, a
collage scene with its flip, half-size and rotated variants (near-duplicates), an exact byte
copy of one photo and one JPEG whose scan is corrupt, so the README's command shows every kind
of fate. Every image is one of the photos or made from them; each sample's JSON names its
source photos and their licences (see ``tests/data/README.md``). Run from the repository root;
the output is byte-for-byte reproducible.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "photos"
OUT = ROOT / "sample"
LICENCES = {
    "astronaut.png": "public domain (NASA)",
    "chelsea.png": "CC0 (Stéfan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "hubble_deep_field.jpg": "public domain (NASA/STScI)",
    "retina.jpg": "CC0 (Mikael Häggström)",
    "rocket.jpg": "public domain (SpaceX)",
    "china.jpg": "CC-BY-2.0 (danielbuechele on Flickr)",
    "flower.jpg": "CC-BY-2.0 (vultilion on Flickr)",
}
COLLAGE = ("china.jpg", "flower.jpg", "rocket.jpg", "astronaut.png")


def jpeg(im: Image.Image) -> bytes:
    """A quality-92 baseline JPEG of ``im``."""
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


def photo_bytes(name: str) -> bytes:
    """The photo's own bytes when it is a JPEG, else a quality-92 JPEG re-encode."""
    path = PHOTOS / name
    return path.read_bytes() if path.suffix == ".jpg" else jpeg(Image.open(path))


def collage() -> Image.Image:
    """Four photos side by side: a scene that none of the photos alone is close to."""
    scene = Image.new("RGB", (400, 360))
    for i, name in enumerate(COLLAGE):
        tile = ImageOps.fit(Image.open(PHOTOS / name).convert("RGB"), (200, 180), Image.BICUBIC)
        scene.paste(tile, ((i % 2) * 200, (i // 2) * 180))
    return scene


def corrupt(data: bytes) -> bytes:
    """``data`` with its scan header naming undefined Huffman tables: the header reads, the
    pixels do not decode."""
    sos = data.find(b"\xff\xda")
    bad = b"\xff\xda\x00\x0c\x03\x01\x77\x02\x77\x03\x77\x00\x3f\x00"
    return data[:sos] + bad + data[sos + len(bad) :]


def samples() -> list[tuple[str, bytes, list[str]]]:
    """(caption, JPEG bytes, source photos) of every sample, in shard order."""
    out = [
        (p.stem.replace("_", " "), photo_bytes(p.name), [p.name]) for p in sorted(PHOTOS.iterdir())
    ]
    scene = collage()
    variants = {
        "collage": scene,
        "collage flipped": ImageOps.mirror(scene),
        "collage half size": scene.resize((200, 180), Image.BICUBIC),
        "collage rotated": scene.rotate(8, resample=Image.BICUBIC, expand=True),
    }
    out += [(caption, jpeg(im), list(COLLAGE)) for caption, im in variants.items()]
    out.append(("chelsea again", photo_bytes("chelsea.png"), ["chelsea.png"]))  # exact copy
    out.append(("coffee, corrupt", corrupt(photo_bytes("coffee.png")), ["coffee.png"]))
    return out


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one member with fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 946684800, 0o644
    tf.addfile(info, io.BytesIO(data))


def main() -> None:
    """Write ``sample/sample-000.tar`` and ``sample/sample-001.tar``."""
    items = samples()
    OUT.mkdir(exist_ok=True)
    half = (len(items) + 1) // 2
    for s, chunk in enumerate((items[:half], items[half:])):
        with tarfile.open(OUT / f"sample-{s:03d}.tar", "w", format=tarfile.PAX_FORMAT) as tf:
            for i, (caption, data, sources) in enumerate(chunk):
                key = f"{s:03d}{i:04d}"
                add(tf, f"{key}.jpg", data)
                add(tf, f"{key}.txt", caption.encode())
                meta = {"caption": caption, "source_files": sources}
                meta["licences"] = [LICENCES[n] for n in sources]
                add(tf, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())


if __name__ == "__main__":
    main()
