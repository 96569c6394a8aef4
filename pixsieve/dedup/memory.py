"""The memory budget of partitioned dedup and the sizes every phase derives from it.

One number, ``memory_limit`` (bytes; default half of the machine's memory or of the cgroup
limit, whichever is smaller), bounds the peak RSS of the whole process. The driver keeps a
reserve for the interpreter and faiss; the rest is split between the concurrent tasks, and each
task sizes its reads from its share. The components phase runs alone (no task beside it) and
uses all but the reserve: when the edges fit it holds them with a union-find over only the
items that appear in them, else it runs in :meth:`Budget.component_parts` passes over edge and
label partitions on disk (:mod:`pixsieve.dedup.component_parts`). Nothing here grows with the
number of items.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

#: Interpreter, numpy, pyarrow and faiss before any data (measured: ~300 MiB).
BASE_RESERVE: int = 400 << 20
#: Bytes the components phase holds per edge at its peak (both endpoints, their compact ids,
#: the sorted node list, labels and flags, the sort's temporaries; measured 128-148 on 2-3M
#: random or star edges, see docs/dedup.md).
COMPONENT_BYTES_PER_EDGE: int = 192

_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str | int) -> int:
    """Bytes from ``3GiB``, ``3G``, ``512MiB``, ``2.5GB`` or a plain number of bytes.

    Raises:
        ValueError: not a size.
    """
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"not a memory size: {text!r} (e.g. 3GiB, 512MiB, 2e9)")
    number, unit, binary = match.groups()
    scale = 1024 ** "bkmgt".index(unit) if binary and unit else _UNITS[unit]
    return int(float(number) * scale)


def machine_memory() -> int:
    """Physical memory, or the cgroup (v2 or v1) limit when it is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def default_memory_limit() -> int:
    """Half of :func:`machine_memory`."""
    return machine_memory() // 2


@dataclass(frozen=True)
class Budget:
    """Sizes derived from a memory limit for ``n`` items of dimension ``dim``.

    Attributes:
        limit: bytes the whole process may use.
        workers: tasks run at once.
        n: items.
        dim: embedding dimension.
    """

    limit: int
    workers: int
    n: int
    dim: int

    @property
    def row_bytes(self) -> int:
        """Bytes of one float32 embedding."""
        return 4 * max(1, self.dim)

    @property
    def per_task(self) -> int:
        """Bytes one task may use: what the driver leaves, shared by the workers."""
        return max(64 << 20, (self.limit - BASE_RESERVE) // max(1, self.workers))

    def check(self) -> None:
        """Raise ``ValueError`` when the limit cannot hold even the driver's reserve."""
        need = BASE_RESERVE + (64 << 20) * self.workers
        if self.limit < need:
            raise ValueError(
                f"memory limit {self.limit / 2**30:.2f} GiB is too small for "
                f"{self.workers} worker(s): need at least {need / 2**30:.2f} GiB"
            )

    @property
    def batch_rows(self) -> int:
        """Rows one task reads at a time (the batch, its float32 copy and the search output)."""
        return int(max(1024, min(65536, self.per_task // (8 * self.row_bytes))))

    @property
    def bucket_rows(self) -> int:
        """Memberships one similarity task holds (the rows, their sorted copy, one block)."""
        return int(max(4096, (self.per_task - (128 << 20)) // (3 * self.row_bytes + 64)))

    @property
    def sample_rows(self) -> int:
        """Most rows k-means may train on: a quarter of what the driver may use, for the sample,
        the copy of its largest part in the two-level k-means (at most the sample), faiss's
        subsample of that part (at most the part) and the refinement's search buffers and
        allocator slack (with a third, a 5M run peaked at 3.07 GiB under a 3 GiB limit)."""
        return int(max(1024, (self.limit - BASE_RESERVE) // (4 * self.row_bytes)))

    def buckets(self, memberships: float) -> int:
        """Similarity buckets for ``memberships`` expected rows."""
        return max(1, math.ceil(memberships / self.bucket_rows))

    def id_buckets(self) -> int:
        """Buckets for the uniqueness check of the ids (about 100 bytes per id in memory)."""
        return max(1, math.ceil(self.n * 100 / max(1, self.per_task // 2)))

    def group_buckets(self, grouped: int) -> int:
        """Buckets for the ``grouped`` items whose groups are resolved with their embeddings."""
        return max(1, math.ceil(grouped / self.bucket_rows))

    @property
    def component_edges(self) -> int:
        """Edges the components phase holds at once (it runs alone: all but the reserve)."""
        return int(max(4096, (self.limit - BASE_RESERVE) // COMPONENT_BYTES_PER_EDGE))

    def component_parts(self, edges: int) -> int:
        """Partitions of the components phase for ``edges`` edges: 1 is the in-memory
        union-find; more is the partitioned one, each pass holding about ``1/parts`` of them."""
        return max(1, math.ceil(edges / self.component_edges))
