"""Find input shards (files, directories, globs, brace patterns, fsspec URLs) and partition them.

``data/shard-{000..099}.tar`` expands like WebDataset's brace notation (zero padding kept),
``{a,b}`` lists expand too, globs are matched through fsspec, and a directory contributes every
``.tar``/``.tar.gz``/``.tgz`` below it. The result is sorted and de-duplicated, so the same
arguments always give the same shard list, whatever the order they were typed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from pixsieve.errors import InputError

SHARD_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz")
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


@dataclass(frozen=True)
class ShardRef:
    """One input shard: its URL (with protocol) and size in bytes."""

    url: str
    size: int


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{000..010}`` ranges and ``{a,b,c}`` lists (nested left to right)."""
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
        out.extend(expand_braces(head + choice + tail))
    return out


def _with_protocol(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path)


def _is_shard(path: str) -> bool:
    return path.lower().endswith(SHARD_SUFFIXES)


def discover_shards(
    inputs: Sequence[str | ShardRef], storage_options: dict[str, Any] | None = None
) -> list[ShardRef]:
    """Resolve user inputs to a sorted, de-duplicated list of shards; raise :class:`InputError`.

    :class:`ShardRef` items (from an earlier call) are taken as they are.
    """
    found: dict[str, int] = {}
    for raw in inputs:
        if isinstance(raw, ShardRef):  # already resolved: no second listing
            found[raw.url] = raw.size
            continue
        for pattern in expand_braces(raw):
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
                        found[_with_protocol(fs, p)] = int(info.get("size") or 0)
            elif fs.isdir(path):
                files = fs.find(path, detail=True)
                shards = {p: i for p, i in files.items() if _is_shard(p)}
                if not shards:
                    raise InputError(f"directory {pattern!r} holds no .tar shards")
                for p, info in shards.items():
                    found[_with_protocol(fs, p)] = int(info.get("size") or 0)
            elif fs.isfile(path):
                found[_with_protocol(fs, path)] = int(fs.size(path) or 0)
            else:
                raise InputError(f"input not found: {pattern!r}")
    if not found:
        raise InputError("no input shards given")
    return [ShardRef(url, size) for url, size in sorted(found.items())]


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
