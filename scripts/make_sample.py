"""Build the bundled sample shards in ``sample/`` from ``../shared/fixtures/images``.

Two WebDataset shards of real photos with ``.txt`` captions and ``.json`` metadata, including
an exact duplicate, near-duplicate variants (flip, resize, rotation) and one corrupt JPEG, so
the README's command shows every kind of fate. Run from the repository root.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "fixtures" / "images"
OUT = ROOT / "sample"


def jpeg(path: Path) -> bytes:
    """The file's bytes when it is a JPEG, else a quality-92 JPEG re-encode."""
    if path.suffix == ".jpg":
        return path.read_bytes()
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one member with fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 946684800, 0o644
    tf.addfile(info, io.BytesIO(data))


def main() -> None:
    """Write ``sample/sample-000.tar`` and ``sample/sample-001.tar``."""
    files = sorted((IMAGES / "photos").iterdir()) + sorted((IMAGES / "ukbench").glob("*.jpg"))
    files.append(IMAGES / "photos" / "chelsea.png")  # an exact duplicate of an earlier sample
    OUT.mkdir(exist_ok=True)
    half = (len(files) + 1) // 2
    for s, chunk in enumerate((files[:half], files[half:])):
        with tarfile.open(OUT / f"sample-{s:03d}.tar", "w", format=tarfile.PAX_FORMAT) as tf:
            for i, path in enumerate(chunk):
                key = f"{s:03d}{i:04d}"
                add(tf, f"{key}.jpg", jpeg(path))
                add(tf, f"{key}.txt", f"{path.stem.replace('_', ' ')}".encode())
                meta = {"source_file": path.name, "collection": path.parent.name}
                add(tf, f"{key}.json", json.dumps(meta).encode())


if __name__ == "__main__":
    main()
