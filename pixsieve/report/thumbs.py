"""Small inline thumbnails of sampled samples, read from the input shards by member name.

Each input shard that holds a sampled image is opened once, with random access: tar headers
are read and data is skipped until every wanted member is found, so a thumbnail costs a few
header reads, not a pass over the shard. Images become small JPEG ``data:`` URIs; NSFW ones are
blurred. Anything unreadable becomes ``None`` (the report shows a placeholder).
"""

from __future__ import annotations

import base64
import contextlib
import io
import tarfile
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
from PIL import ImageFilter, ImageOps

from pixsieve.io.decode import opened, to_rgb
from pixsieve.io.tar_reader import image_index

THUMB_SIZE = 160
MAX_MEMBER_BYTES = 16 << 20  # bigger images get a placeholder: 8 shards read at once


def image_member(members: Iterable[str] | None) -> str | None:
    """Name of a sample's image member (the reader's rule), or ``None``."""
    names = list(members or ())
    i = image_index(names)
    return None if i is None else names[i]


def read_members(
    source: str, names: set[str], storage_options: dict[str, Any] | None = None
) -> dict[str, bytes]:
    """Bytes of the members called ``names`` in the tar at ``source`` (first occurrence each).

    Stops as soon as all are found; a shard that cannot be read yields what was found so far.
    """
    found: dict[str, bytes] = {}
    try:
        with (
            fsspec.open(source, "rb", **(storage_options or {})) as f,
            tarfile.open(fileobj=f, mode="r:*") as tf,
        ):
            while len(found) < len(names):
                info = tf.next()
                if info is None:
                    break
                if info.name in names and info.name not in found and info.isfile():
                    if info.size > MAX_MEMBER_BYTES:
                        continue
                    member = tf.extractfile(info)
                    if member is not None:
                        found[info.name] = member.read()
    except (OSError, EOFError, tarfile.TarError, ValueError):
        pass
    return found


def thumbnail(data: bytes, size: int = THUMB_SIZE, blur: bool = False) -> str | None:
    """A ``data:image/jpeg`` URI of ``data`` scaled to fit ``size`` (``None`` if unreadable)."""
    if not data:
        return None
    try:
        with warnings.catch_warnings(), opened(data, size) as im:  # the decoder's limits
            warnings.simplefilter("ignore")
            if im.format == "JPEG":
                im.draft("RGB", (size, size))
            im.load()
            with contextlib.suppress(Exception):  # a broken EXIF block does not spoil pixels
                im = ImageOps.exif_transpose(im)
            im = to_rgb(im)
            im.thumbnail((size, size))
            if blur:
                im = im.filter(ImageFilter.GaussianBlur(radius=max(8, size // 10)))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=70)
    except Exception:  # Pillow raises many types for bad data; a thumbnail is optional
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def fetch_thumbnails(
    rows: list[dict[str, Any]],
    should_blur: Callable[[dict[str, Any]], bool],
    storage_options: dict[str, Any] | None = None,
    size: int = THUMB_SIZE,
    threads: int = 8,
) -> None:
    """Set ``row["thumb"]`` (a data URI or ``None``) on every row, one read per input shard."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        name = image_member(row.get("members"))
        row["image_member"] = name
        if name is not None and row.get("source"):
            wanted[row["source"]].add(name)

    def load(source: str) -> tuple[str, dict[str, bytes]]:
        return source, read_members(source, wanted[source], storage_options)

    data: dict[str, dict[str, bytes]] = {}
    with ThreadPoolExecutor(max(1, min(threads, len(wanted)))) as pool:
        for source, found in pool.map(load, sorted(wanted)):
            data[source] = found
    for row in rows:
        raw = data.get(row.get("source") or "", {}).get(row["image_member"] or "")
        row["thumb"] = thumbnail(raw, size, should_blur(row)) if raw is not None else None
