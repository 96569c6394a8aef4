"""Streaming WebDataset tar reader that never extracts to disk and never loses a sample.

Members are grouped into samples by the WebDataset rule: the key is the member path up to the
first ``.`` of its file name, and consecutive members with the same key form one sample. Every
sample comes out, good or bad: structural problems (no image, unsafe member name, duplicate
member or key, a member cut off by a truncated tar) are recorded on the sample as ``reason`` and
the stream goes on. Problems that end the shard early (not a tar, truncated, corrupt header) are
reported in :attr:`TarShardReader.error`.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec

IMAGE_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "png", "webp"})


@dataclass
class RawSample:
    """One sample as read from the tar: its members in order, with their bytes."""

    key: str
    position: int
    names: list[str] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def image_index(self) -> int | None:
        """Index of the first image member (by extension, any case), or ``None``."""
        return image_index(self.names)

    def fail(self, reason: str) -> None:
        """Record a structural problem; the first one wins."""
        if self.reason is None:
            self.reason = reason


def image_index(names: Iterable[str]) -> int | None:
    """Index of a sample's image member: the first with an image extension (any case)."""
    for i, name in enumerate(names):
        if split_name(name)[1].lower() in IMAGE_EXTENSIONS:
            return i
    return None


def _is_gzip(f: Any) -> bool:
    """Peek at the magic bytes (the file is rewound)."""
    head = f.read(2)
    f.seek(0)
    return head == b"\x1f\x8b"


def split_name(name: str) -> tuple[str, str]:
    """Split a member path into (key, extension) by the WebDataset rule."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{head}/{stem}" if head else stem
    return key, ext if dot else ""


def is_unsafe_name(name: str) -> bool:
    """True for names that could escape an output directory (absolute, ``..``, drive, NUL)."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or "\\" in name:
        return True
    if len(name) > 1 and name[1] == ":":
        return True
    return any(part == ".." for part in name.split("/"))


def _check_sidecar(sample: RawSample, name: str, data: bytes) -> None:
    ext = split_name(name)[1].lower()
    if ext == "json":
        try:
            json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            sample.warnings.append(f"invalid_json: {name}: {e}")
    elif ext in ("txt", "caption"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            sample.warnings.append(f"invalid_utf8: {name}")


class TarShardReader:
    """Iterate the samples of one tar shard (plain or gzip) at ``url`` (any fsspec URL).

    After iteration, :attr:`error` holds a shard-level problem (``None`` when the shard was
    read to its end) and :attr:`skipped_members` counts directory entries that were passed over.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options or {}
        self.error: str | None = None
        self.skipped_members = 0

    def __iter__(self) -> Iterator[RawSample]:
        """Yield every sample; shard-level problems end up in :attr:`error`.

        A tar cut short (``truncated_shard``) keeps the samples before the cut; a gzip stream
        whose checksum fails (``corrupt_shard``) makes every sample of the shard unreliable.
        Other I/O errors (a dropped connection) are raised, so the task is retried.
        """
        self.error = None
        self.skipped_members = 0
        current: RawSample | None = None
        with fsspec.open(self.url, "rb", **self.storage_options) as raw:
            gz = gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(raw) else None
            stream = gz if gz is not None else raw
            try:
                tf = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed below
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
                self.error = f"not_a_tar: {type(e).__name__}: {e}"
                return
            try:
                with tf:
                    for sample in self._samples(tf):
                        if current is not None:
                            yield finish_sample(current)
                        current = sample
                if gz is not None and self.error is None:
                    while gz.read(1 << 20):  # reach the gzip trailer: its CRC is checked there
                        pass
            except (gzip.BadGzipFile, zlib.error) as e:
                self.error = f"corrupt_shard: {type(e).__name__}: {e}"
        if current is not None:
            if self.error is not None and self.error.startswith("truncated"):
                current.fail(self.error)
            yield finish_sample(current)

    def _samples(self, tf: tarfile.TarFile) -> Iterator[RawSample]:
        """Group members into samples; yields each sample when its first member is read."""
        position = 0
        seen_keys: set[str] = set()
        current: RawSample | None = None
        for info in self._members(tf):
            if info.isdir():
                self.skipped_members += 1
                continue
            key, _ = split_name(info.name)
            if current is None or key != current.key:
                current = RawSample(key=key, position=position)
                position += 1
                if key in seen_keys:
                    current.fail(f"duplicate_key: {key}")
                seen_keys.add(key)
                yield current
            self._add_member(tf, info, current)
            if self.error is not None:
                return

    def _members(self, tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        while True:
            try:
                info = tf.next()
            except (tarfile.ReadError, EOFError) as e:
                self.error = f"truncated_shard: {type(e).__name__}: {e}"
                return
            if info is None:
                return
            yield info

    def _add_member(self, tf: tarfile.TarFile, info: tarfile.TarInfo, sample: RawSample) -> None:
        name = info.name
        if name in sample.names:
            sample.fail(f"duplicate_member: {name}")
        sample.names.append(name)
        if is_unsafe_name(name):
            sample.fail(f"unsafe_name: {name!r}")
        if not info.isfile():
            kind = "symlink" if info.issym() else "hardlink" if info.islnk() else "special"
            sample.fail(f"unsupported_member: {name} ({kind})")
            sample.data.append(b"")
            return
        try:
            fobj = tf.extractfile(info)
            data = fobj.read() if fobj is not None else b""
            if len(data) != info.size:
                raise EOFError(f"member {name} has {len(data)} of {info.size} bytes")
        except (tarfile.ReadError, EOFError) as e:
            self.error = f"truncated_shard: cut inside {name}: {e}"
            sample.data.append(b"")
            return
        sample.data.append(data)
        _check_sidecar(sample, name, data)


def finish_sample(sample: RawSample) -> RawSample:
    """Apply the sample-level checks that need all members (currently: an image is present)."""
    if sample.reason is None and sample.image_index is None:
        sample.fail("missing_image")
    return sample
