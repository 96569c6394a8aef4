"""Streaming WebDataset tar reader that never extracts to disk and never loses a sample.

Members are grouped into samples by the WebDataset rule: the key is the member path up to the
first ``.`` of its file name, and consecutive members with the same key form one sample. Every
sample comes out, good or bad: structural problems (no image, unsafe member name, duplicate
member, a member over a :class:`~pixsieve.io.limits.ReadLimits` limit, a member cut off by a
truncated tar) are recorded on the sample as ``reason`` and the stream goes on. A key that comes
back after other keys makes every group of it an error (see :attr:`TarShardReader.repeated_keys`).

Shard-level problems are collected in :attr:`TarShardReader.problems` (the first is
:attr:`~TarShardReader.error`); each stretch of the shard that could not be read becomes one
entry of :attr:`~TarShardReader.lost` (one ``position = -1`` manifest row each). A corrupt
header in the middle is skipped up to the next valid header, as GNU tar does, and the samples on
both sides of the gap become errors, since either may have lost a member there. Nothing but an
I/O error of the underlying file (retried by the task policy) escapes the iterator.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec

from pixsieve.io.gzip_stream import GZIP_MAGIC, CorruptStream, GzipStream
from pixsieve.io.limits import ReadLimits
from pixsieve.io.shards import not_a_regular_file
from pixsieve.io.sidecars import sidecar_warning
from pixsieve.io.tar_stream import ResyncTarFile, describe_gap, open_tar

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
    nbytes: int = 0

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


class _Source:
    """The underlying file; remembers its own I/O error so it is told apart from bad data."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.failed: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self.f.read(size)  # type: ignore[no-any-return]
        except OSError as e:
            self.failed = e
            raise


class TarShardReader:
    """Iterate the samples of one tar shard (plain or gzip) at ``url`` (any fsspec URL).

    Args:
        url: the shard.
        storage_options: fsspec options.
        limits: per-sample limits (checked from the headers, before anything is read).
        check_sidecars: parse JSON and text sidecars: a bad one makes its sample an error, or
            a warning with ``limits.keep_invalid_sidecars`` (scan and score check; the export,
            which only copies samples already decided, skips the work).

    After iteration: :attr:`error` (first shard-level problem or ``None``), :attr:`problems`
    (all of them), :attr:`lost` (one reason per unreadable stretch), :attr:`untrusted` (a
    checksum failed: no sample of the shard can be trusted), :attr:`repeated_keys` and
    :attr:`skipped_members` (directory entries passed over).
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        limits: ReadLimits | None = None,
        check_sidecars: bool = True,
    ) -> None:
        self.url = url
        self.storage_options = storage_options or {}
        self.limits = limits or ReadLimits()
        self.check_sidecars = check_sidecars
        self._reset()

    def _reset(self) -> None:
        self.problems: list[str] = []
        self.lost: list[str] = []
        self.untrusted = False
        self.repeated_keys: set[str] = set()
        self.skipped_members = 0
        self._cut: str | None = None
        self._refused_size = False
        self._position = 0
        self._first_seen: dict[str, int] = {}

    @property
    def error(self) -> str | None:
        """The first shard-level problem, or ``None`` when the shard read cleanly."""
        return self.problems[0] if self.problems else None

    def _problem(self, reason: str, lost: bool) -> None:
        self.problems.append(reason)
        if lost:
            self.lost.append(reason)

    def __iter__(self) -> Iterator[RawSample]:
        """Yield every sample; shard-level problems end up in :attr:`problems`.

        I/O errors of the underlying file (a dropped connection) are raised, so the task is
        retried; anything else that goes wrong ends the shard with the samples read so far.
        """
        self._reset()
        refused = not_a_regular_file(self.url, self.storage_options)
        if refused is not None:
            self._problem(refused, lost=True)
            return
        pending: RawSample | None = None
        with fsspec.open(self.url, "rb", **self.storage_options) as raw:
            src = _Source(raw)
            head = raw.read(2)
            raw.seek(0)
            gz = GzipStream(src) if head == GZIP_MAGIC else None
            try:
                for sample in self._samples(gz if gz is not None else src):
                    if pending is not None:
                        yield finish_sample(pending)
                    pending = sample
            except CorruptStream as e:
                self.untrusted = True
                self._problem(f"corrupt_shard: {e}", lost=True)
            except Exception as e:  # bad data must not lose the samples read so far
                if src.failed is not None:
                    raise src.failed from None
                self._problem(f"read_error: {type(e).__name__}: {e}"[:1000], lost=True)
            if gz is not None and gz.truncated and self._cut is None:
                self._cut = "truncated_shard: the gzip stream ends early"
                self._problem(self._cut, lost=True)
            if gz is not None and gz.trailing is not None:
                self._problem(gz.trailing, lost=False)
        if pending is not None:
            if self._cut is not None:
                pending.fail(self._cut)
            yield finish_sample(pending)

    def _samples(self, stream: Any) -> Iterator[RawSample]:
        """Group members into samples; yields each sample when its first member is read."""
        try:
            tf = open_tar(stream, self.limits.max_header_bytes)
        except tarfile.ReadError as e:
            self._problem(f"not_a_tar: ReadError: {e}", lost=True)
            return
        self._position, self._first_seen = 0, {}
        current: RawSample | None = None
        suspect: tuple[str, set[str] | None] | None = None  # (reason, keys; None = any key)
        members = 0
        with tf:
            while True:
                info = self._next(tf)
                members += 1
                tf.members.clear()  # stream mode keeps every TarInfo otherwise
                skipped, names = tf.take_skipped()
                gap, damaged = describe_gap(skipped, at_end=info is None)
                if damaged and self._refused_size:  # the data of a member whose size was bad
                    gap, damaged = None, False
                self._refused_size = False
                if info is None and members == 1 and damaged:  # nothing but invalid blocks
                    self._problem("not_a_tar: no valid tar header found", lost=True)
                    return
                if gap is not None:
                    self._problem(gap, lost=damaged)
                if gap is not None and damaged:
                    lost_keys = list(dict.fromkeys(split_name(n)[0] for n in names))
                    if current is not None and (not lost_keys or current.key in lost_keys):
                        current.fail(gap)
                    for key in lost_keys:  # a member whose header is damaged but names it
                        nxt = split_name(info.name)[0] if info is not None else None
                        if key in (nxt, current.key if current is not None else None):
                            continue
                        current = self._new_sample(key)
                        current.fail(gap)
                        yield current
                    suspect = (gap, set(lost_keys) if lost_keys else None)
                if info is None:
                    self._check_end(tf, skipped)
                    return
                if info.isdir():
                    self.skipped_members += 1
                    continue
                key, _ = split_name(info.name)
                if current is None or key != current.key:
                    current = self._new_sample(key)
                    yield current
                if suspect is not None and (suspect[1] is None or key in suspect[1]):
                    current.fail(suspect[0])  # it may have lost members in the gap
                suspect = None
                self._add_member(tf, info, current)
                if self._cut is not None:
                    return

    def _new_sample(self, key: str) -> RawSample:
        """The next sample; a key met before (not adjacent) makes it a ``duplicate_key``."""
        sample = RawSample(key=key, position=self._position)
        if key in self._first_seen:
            sample.fail(f"duplicate_key: {key} (first at position {self._first_seen[key]})")
            self.repeated_keys.add(key)
        else:
            self._first_seen[key] = self._position
        self._position += 1
        return sample

    def _check_end(self, tf: ResyncTarFile, skipped: list[Any]) -> None:
        """A partial block at the very end: garbage after the archive, or a cut header."""
        if not tf.ended_inside_a_header():
            return
        if any(b.zeros for b in skipped):
            self._problem("trailing_data: a partial block after the end of the archive", False)
        elif self._cut is None:
            self._cut = "truncated_shard: the tar ends inside a header"
            self._problem(self._cut, lost=True)

    def _next(self, tf: ResyncTarFile) -> tarfile.TarInfo | None:
        try:
            return tf.next()
        except (EOFError, tarfile.ReadError) as e:
            if isinstance(e, EOFError) or "unexpected end of data" in str(e):
                self._cut = f"truncated_shard: {type(e).__name__}: {e}"
            else:
                self._cut = f"corrupt_header: {type(e).__name__}: {e}"
            self._problem(self._cut, lost=True)
            return None

    def _refuse(self, info: tarfile.TarInfo, sample: RawSample) -> str | None:
        """Why a member's data must not be read (a limit, a bad size), from its header."""
        lim = self.limits
        if info.size < 0:
            return f"corrupt_header: member {info.name} declares size {info.size}"
        if len(sample.names) >= lim.max_sample_members:
            return f"too_large: more than max_sample_members={lim.max_sample_members} members"
        if sample.nbytes + info.size > lim.max_sample_bytes:
            return (
                f"too_large: {info.name} declares {info.size} bytes, sample over "
                f"max_sample_bytes={lim.max_sample_bytes}"
            )
        is_image = split_name(info.name)[1].lower() in IMAGE_EXTENSIONS
        if not is_image and info.size > lim.max_sidecar_bytes:
            return (
                f"too_large: sidecar {info.name} declares {info.size} bytes "
                f"(max_sidecar_bytes={lim.max_sidecar_bytes})"
            )
        return None

    def _add_member(self, tf: tarfile.TarFile, info: tarfile.TarInfo, sample: RawSample) -> None:
        """Append one member's name and bytes (or ``b""`` when it is refused) to ``sample``."""
        name = info.name
        refused = self._refuse(info, sample) if info.isfile() else None
        if refused is not None and refused.startswith("too_large: more than"):
            sample.fail(refused)  # keep names bounded: further members are not listed
            return
        if name in sample.names:
            sample.fail(f"duplicate_member: {name}")
        if is_unsafe_name(name):
            sample.fail(f"unsafe_name: {name!r}")
        if not info.isfile():
            kind = "symlink" if info.issym() else "hardlink" if info.islnk() else "special"
            sample.fail(f"unsupported_member: {name} ({kind})")
            refused = ""
        elif refused is not None:
            sample.fail(refused)
            if refused.startswith("corrupt_header"):
                self._problem(refused, lost=False)
                self._refused_size = True  # tarfile will skip its data as invalid headers
        data = b""
        if refused is None:
            data = self._read(tf, info)
            sample.nbytes += len(data)
        sample.names.append(name)
        sample.data.append(data)
        if self._cut is not None:
            sample.fail(self._cut)
        elif refused is None and self.check_sidecars:
            warning = sidecar_warning(name, split_name(name)[1].lower(), data)
            if warning is not None and self.limits.keep_invalid_sidecars:
                sample.warnings.append(warning)
            elif warning is not None:
                sample.fail(warning)

    def _read(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
        """A member's bytes; a short read marks the shard as cut here."""
        try:
            fobj = tf.extractfile(info)
            data = fobj.read() if fobj is not None else b""
            if len(data) != info.size:
                raise EOFError(f"member has {len(data)} of {info.size} bytes")
        except (tarfile.ReadError, EOFError) as e:
            self._cut = f"truncated_shard: cut inside {info.name}: {e}"
            self._problem(self._cut, lost=True)
            return b""
        return data


def finish_sample(sample: RawSample) -> RawSample:
    """Apply the sample-level checks that need all members (currently: an image is present)."""
    if sample.reason is None and sample.image_index is None:
        sample.fail("missing_image")
    return sample
