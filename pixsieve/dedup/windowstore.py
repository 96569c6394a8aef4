"""Reading earlier index rows for the cross search (:mod:`pixsieve.dedup.crossmatch`).

:class:`Stores` holds the open embedding stores of the earlier index parts a cross bucket
needs; :class:`Window` reads slices of them into one reused float32 buffer. A version 5 part
is searched in its float16 copy (half the bytes to read; converted with torch, vectorised,
where numpy's cast is a scalar loop), read past the page cache where the file system allows it
(a run reads nearly the whole copy, which is rarely still cached: filling the page cache cost
more system time than the rest of the earlier phase's reads); the few rows near the threshold
are then reread in float32 from the kept items' store (:meth:`Stores.exact`). Versions 3 and 4
are searched in their float32 stores directly, through the page cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pixsieve.dedup.directio import AlignedBuffer
from pixsieve.dedup.index import items_path, window_path
from pixsieve.dedup.readphase import NpyReader

#: Most a cosine of unit vectors moves when one of them is rounded to float16: each coordinate
#: moves by at most 2**-11 of itself, so the sum by at most 2**-11 * sum |x_i y_i| <= 2**-11
#: (Cauchy-Schwarz); float16 subnormals add less than 1e-6.
HALF_SLACK: float = 2.0**-11 + 1e-6


class Stores:
    """The embedding stores of the earlier index parts (``parts``: their ``kept/`` files), read
    with positioned reads straight into the caller's buffer: no mapping, so the task's resident
    memory does not grow with what it has read, and only the parts holding the current cluster
    are open (one earlier bucket's)."""

    def __init__(self, parts: list[Path]) -> None:
        self.parts = parts
        self.paths = [window_path(p) for p in parts]
        self.half = [p.name.endswith(".f16.npy") for p in self.paths]
        self.open: dict[int, NpyReader] = {}
        self.items: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.item_stores: dict[tuple[Path, int], NpyReader] = {}

    def use(self, parts: set[int]) -> None:
        """Keep open exactly ``parts`` (and no kept items' store of parts left)."""
        for f in set(self.open) - parts:
            self.open.pop(f).close()
            if self.items.pop(f, None) is not None:
                for reader in self.item_stores.values():
                    reader.close()
                self.item_stores.clear()
        for f in parts - set(self.open):
            self.open[f] = NpyReader(self.paths[f], direct=self.half[f])

    def exact(self, part: int, pos: np.ndarray) -> np.ndarray:
        """The float32 rows ``pos`` of a version 5 ``part`` (few: a float16 search's rows near
        the threshold), from the kept items' stores (``ids/fFFFFF.f32.npy``)."""
        if part not in self.items:
            table = pq.ParquetFile(self.parts[part]).read(columns=["file", "item"])
            self.items[part] = (table.column("file").to_numpy(), table.column("item").to_numpy())
        file, item = (column[pos] for column in self.items[part])
        folder = self.parts[part].parents[1]
        out = np.empty((len(pos), self.open[part].tail[0]), np.float32)
        for n, (f, i) in enumerate(zip(file.tolist(), item.tolist(), strict=True)):
            if (folder, f) not in self.item_stores:
                self.item_stores[folder, f] = NpyReader(items_path(folder, f))
            self.item_stores[folder, f].read(i, i + 1, out[n : n + 1])
        return out

    def close(self) -> None:
        """Close every open store."""
        self.use(set())
        for reader in self.item_stores.values():
            reader.close()
        self.item_stores.clear()


class Window:
    """The earlier rows a block of new rows is multiplied with, read into one float32 buffer
    that grows as needed and is reused from block to block (a fresh array per block costs more
    in page faults than the copy itself). ``approx`` marks rows read from float16 copies."""

    def __init__(self, dim: int) -> None:
        self.x = np.empty((0, dim), np.float32)
        self.stage = AlignedBuffer()
        self.src = np.empty(0, np.int64)
        self.pos = np.empty(0, np.int64)
        self.approx = np.empty(0, bool)

    def fill(self, stores: Stores, spans: list[tuple[int, int, int]]) -> int:
        """Read rows ``lo..hi-1`` of part ``f`` for every ``(f, lo, hi)``, in that order;
        return the count."""
        n = sum(hi - lo for _, lo, hi in spans)
        if n > len(self.x):
            size = max(n, 2 * len(self.x))
            self.x = np.empty((size, self.x.shape[1]), np.float32)
            self.src, self.pos = np.empty(size, np.int64), np.empty(size, np.int64)
            self.approx = np.empty(size, bool)
        at = 0
        for f, lo, hi in spans:
            rows = slice(at, at + hi - lo)
            if stores.half[f]:
                import torch  # here: the CLI checks its arguments before torch is imported

                half = stores.open[f].read_view(lo, hi, self.stage)
                torch.from_numpy(self.x[rows]).copy_(torch.from_numpy(half))
            else:
                stores.open[f].read(lo, hi, self.x[rows])
            self.src[rows], self.pos[rows], self.approx[rows] = f, np.arange(lo, hi), stores.half[f]
            at += hi - lo
        return n

    def exact(self, stores: Stores, j: np.ndarray) -> np.ndarray:
        """The float32 rows ``j`` of the buffer as stored (rows of float16 copies reread)."""
        out = self.x[j]
        approx = np.flatnonzero(self.approx[j])
        for f in np.unique(self.src[j[approx]]).tolist():
            mine = approx[self.src[j[approx]] == f]
            out[mine] = stores.exact(f, self.pos[j[mine]])
        return out
