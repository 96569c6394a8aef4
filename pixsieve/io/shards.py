"""Find input shards (files, directories, globs, brace patterns, fsspec URLs) and partition them.

``data/shard-{000..099}.tar`` expands like WebDataset's brace notation (zero padding kept),
``{a,b}`` lists expand too (at most :data:`MAX_BRACE_NAMES` names), globs are matched through
fsspec, and a directory contributes every ``.tar``/``.tar.gz``/``.tgz`` below it. Only regular
files are shards: a FIFO, socket or device is reported (logged) and skipped, never opened. The
result is sorted and de-duplicated, so the same arguments always give the same shard list,
whatever the order they were typed in. Each shard carries a ``version`` (mtime and inode
change time locally, ETag or checksum on object storage) so a resumed run notices a shard
rewritten in place.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pixsieve.errors import InputError

SHARD_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz")
MAX_BRACE_NAMES: int = 1_000_000
# what object stores and filesystems say changes when a file's bytes change, best first
_VERSION_KEYS: tuple[str, ...] = (
    "ETag",
    "etag",
    "md5Hash",
    "crc32c",
    "generation",
    "content_md5",
    "LastModified",
    "last_modified",
    "mtime",
    "created",
)
log = logging.getLogger(__name__)
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


@dataclass(frozen=True)
class ShardRef:
    """One input shard: its URL (with protocol), size in bytes and version.

    ``version`` is what the filesystem says changes with the bytes ('' when it says nothing);
    ``explicit`` is true when the user named this file itself (not through a directory, glob
    or brace pattern).
    """

    url: str
    size: int
    version: str = ""
    explicit: bool = field(default=False, compare=False)


def file_version(info: dict[str, Any]) -> str:
    """A string that changes when the file described by fsspec ``info`` is rewritten."""
    if "ino" in info and "mtime" in info:  # local: ctime cannot be set back by the writer
        return f"mtime={info['mtime']!r} ctime={info.get('created')!r} ino={info['ino']}"
    for key in _VERSION_KEYS:
        if info.get(key) not in (None, ""):
            return f"{key}={info[key]}"
    return ""


def _brace_count(pattern: str) -> int:
    """How many names ``pattern`` expands to (without expanding it)."""
    m = _BRACE.search(pattern)
    if m is None:
        return 1
    rng = _RANGE.match(m.group(1))
    n = abs(int(rng.group(2)) - int(rng.group(1))) + 1 if rng else m.group(1).count(",") + 1
    rest = _brace_count(pattern[m.end() :])
    return n * rest


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{000..010}`` ranges and ``{a,b,c}`` lists (nested left to right).

    Raises :class:`InputError` when the pattern names more than :data:`MAX_BRACE_NAMES` files.
    """
    count = _brace_count(pattern)
    if count > MAX_BRACE_NAMES:
        raise InputError(
            f"{pattern!r} expands to {count:,} names (at most {MAX_BRACE_NAMES:,}); "
            "name a directory or a glob instead"
        )
    return _expand(pattern)


def _expand(pattern: str) -> list[str]:
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = _RANGE.match(body)
    if rng:
        lo_s, hi_s = rng.groups()
        lo, hi = int(lo_s), int(hi_s)
        width = len(lo_s) if lo_s.startswith("0") and len(lo_s) > 1 else 0
        step = 1 if hi >= lo else -1
        choices = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    else:
        choices = body.split(",")
    head, tail = pattern[: m.start()], pattern[m.end() :]
    out: list[str] = []
    for choice in choices:
        out.extend(_expand(head + choice + tail))
    return out


def _with_protocol(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path)


def _is_shard(path: str) -> bool:
    return path.lower().endswith(SHARD_SUFFIXES)


def discover_shards(
    inputs: Sequence[str | ShardRef], storage_options: dict[str, Any] | None = None
) -> list[ShardRef]:
    """Resolve user inputs to a sorted, de-duplicated list of shards; raise :class:`InputError`.

    :class:`ShardRef` items (from an earlier call) are taken as they are. Entries that are not
    regular files (a FIFO named ``b.tar``) are logged and skipped.
    """
    found: dict[str, ShardRef] = {}

    def add(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any], explicit: bool) -> None:
        url = _with_protocol(fs, path)
        kind = info.get("type")
        if kind != "file":
            log.warning("skipping %s: not a regular file (%s); only files are shards", url, kind)
            return
        size = int(info.get("size") or 0)
        found[url] = ShardRef(url, size, file_version(info), explicit)

    for raw in inputs:
        if isinstance(raw, ShardRef):  # already resolved: no second listing
            found[raw.url] = raw
            continue
        patterns = expand_braces(raw)
        for pattern in patterns:
            try:
                fs, path = url_to_fs(pattern, **(storage_options or {}))
            except (ImportError, ValueError) as e:
                raise InputError(f"cannot open {pattern!r}: {e}") from e
            if any(ch in path for ch in "*?["):
                matches = fs.glob(path, detail=True)
                if not matches:
                    raise InputError(f"no files match {pattern!r}")
                for p, info in sorted(matches.items()):
                    if info.get("type") != "directory":
                        add(fs, p, info, explicit=False)
            elif fs.isdir(path):
                files = fs.find(path, detail=True)
                shards = {p: i for p, i in files.items() if _is_shard(p)}
                if not shards:
                    raise InputError(f"directory {pattern!r} holds no .tar shards")
                for p, info in sorted(shards.items()):
                    add(fs, p, info, explicit=False)
            else:
                try:
                    info = fs.info(path)
                except FileNotFoundError:
                    raise InputError(f"input not found: {pattern!r}") from None
                except OSError as e:
                    raise InputError(f"cannot read {pattern!r}: {e}") from None
                add(fs, path, info, explicit=len(patterns) == 1)
    if not found:
        raise InputError("no input shards given (nothing that is a regular file)")
    return [found[url] for url in sorted(found)]


def not_a_regular_file(url: str, storage_options: dict[str, Any]) -> str | None:
    """Why a local ``url`` must not be opened (a FIFO, a device, a directory), else ``None``."""
    try:
        fs, path = url_to_fs(url, **storage_options)
    except Exception:  # let fsspec.open report it
        return None
    if not isinstance(fs, LocalFileSystem):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing: fsspec.open raises FileNotFoundError
    if stat.S_ISREG(mode):
        return None
    return f"not_a_file: {url} is not a regular file (never opened)"


def partition_by_size(shards: list[ShardRef], parts: int) -> list[list[int]]:
    """Split shard indices into at most ``parts`` contiguous groups of balanced byte size.

    Contiguity keeps output order equal to input order; balance comes from cutting the running
    byte total at even fractions of the whole.
    """
    n = len(shards)
    if parts >= n:
        return [[i] for i in range(n)]
    parts = max(1, parts)
    total = sum(max(s.size, 1) for s in shards)
    groups: list[list[int]] = [[] for _ in range(parts)]
    running = 0
    for i, s in enumerate(shards):
        weight = max(s.size, 1)
        # place each shard by the midpoint of its byte range
        g = min(parts - 1, int((running + weight / 2) * parts / total))
        groups[g].append(i)
        running += weight
    return [g for g in groups if g]


def partition_by_bytes(shards: list[ShardRef], target_bytes: int) -> list[list[int]]:
    """Contiguous partitions of about ``target_bytes`` each (the count depends on sizes only)."""
    total = sum(s.size for s in shards)
    return partition_by_size(shards, max(1, math.ceil(total / target_bytes)))
