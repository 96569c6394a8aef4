"""Reading earlier index rows for the cross search (:mod:`pixsieve.dedup.crossmatch`).

:class:`Stores` holds the open embedding stores of the earlier index parts a cross bucket
needs; :class:`Window` reads slices of them into one reused int8 buffer
(:mod:`pixsieve.dedup.quant`), with each row's scale and error bound. A version 6 part is
searched in its int8 copy as stored (a quarter of the float32 bytes, no conversion), read past
the page cache where the file system allows it (a run reads nearly the whole copy, which is
rarely still cached: filling the page cache cost more system time than the rest of the earlier
phase's reads); the few rows near the threshold are then reread in float32 from the kept
items' store (:meth:`Stores.exact`). Older parts are quantized as they are read: version 5
from its float16 copy, versions 3 and 4 from their float32 stores (through the page cache).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pixsieve.dedup.directio import AlignedBuffer
from pixsieve.dedup.index import items_path, scale_path, window_path
from pixsieve.dedup.quant import quantize
from pixsieve.dedup.readphase import NpyReader

#: How each kind of embedding store is read into the int8 window: its file name's ending.
KINDS: tuple[str, ...] = (".i8.npy", ".f16.npy", ".f32.npy")


class Stores:
    """The embedding stores of the earlier index parts (``parts``: their ``kept/`` files), read
    with positioned reads: no mapping, so the task's resident memory does not grow with what it
    has read, and only the parts holding the current cluster are open (one earlier bucket's)."""

    def __init__(self, parts: list[Path]) -> None:
        self.parts = parts
        self.paths = [window_path(p) for p in parts]
        self.kind = [next(k for k in KINDS if p.name.endswith(k)) for p in self.paths]
        self.open: dict[int, NpyReader] = {}
        self.meta: dict[int, np.ndarray] = {}  # an int8 store's scales and error bounds
        self.items: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.item_stores: dict[tuple[Path, int], NpyReader] = {}

    def use(self, parts: set[int]) -> None:
        """Keep open exactly ``parts`` (and no kept items' store of parts left)."""
        for f in set(self.open) - parts:
            self.open.pop(f).close()
            self.meta.pop(f, None)
            if self.items.pop(f, None) is not None:
                for reader in self.item_stores.values():
                    reader.close()
                self.item_stores.clear()
        for f in parts - set(self.open):
            self.open[f] = NpyReader(self.paths[f], direct=self.kind[f] != ".f32.npy")
            if self.kind[f] == ".i8.npy":
                self.meta[f] = np.load(scale_path(self.paths[f]))

    def exact(self, part: int, pos: np.ndarray) -> np.ndarray:
        """The float32 rows ``pos`` of ``part`` (few: rows the int8 search found near the
        threshold): from the float32 store (versions 3 and 4), else from the kept items'
        stores (``ids/fFFFFF.f32.npy``)."""
        out = np.empty((len(pos), self.open[part].tail[0]), np.float32)
        if self.kind[part] == ".f32.npy":
            for n, p in enumerate(pos.tolist()):
                self.open[part].read(p, p + 1, out[n : n + 1])
            return out
        if part not in self.items:
            table = pq.ParquetFile(self.parts[part]).read(columns=["file", "item"])
            self.items[part] = (table.column("file").to_numpy(), table.column("item").to_numpy())
        file, item = (column[pos] for column in self.items[part])
        folder = self.parts[part].parents[1]
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
    """The earlier rows a block of new rows is multiplied with, as int8 rows with their scales
    and error bounds (``meta``, :func:`pixsieve.dedup.quant.quantize`), in buffers that grow as
    needed and are reused from block to block (a fresh array per block costs more in page
    faults than the copy itself)."""

    def __init__(self, dim: int) -> None:
        self.q = np.empty((0, dim), np.int8)
        self.meta = np.empty((0, 2), np.float32)
        self.stage = AlignedBuffer()
        self.src = np.empty(0, np.int64)
        self.pos = np.empty(0, np.int64)
        self.wide = np.empty((0, dim), np.float32)  # older stores' rows before quantizing

    def fill(self, stores: Stores, spans: list[tuple[int, int, int]]) -> int:
        """Read rows ``lo..hi-1`` of part ``f`` for every ``(f, lo, hi)``, in that order;
        return the count."""
        n = sum(hi - lo for _, lo, hi in spans)
        if n > len(self.q):
            size = max(n, 2 * len(self.q))
            self.q = np.empty((size, self.q.shape[1]), np.int8)
            self.meta = np.empty((size, 2), np.float32)
            self.src, self.pos = np.empty(size, np.int64), np.empty(size, np.int64)
        at = 0
        for f, lo, hi in spans:
            rows = slice(at, at + hi - lo)
            if stores.kind[f] == ".i8.npy":
                self.q[rows] = stores.open[f].read_view(lo, hi, self.stage)
                self.meta[rows] = stores.meta[f][lo:hi]
            else:
                self.q[rows], self.meta[rows] = quantize(self._wide(stores, f, lo, hi))
            self.src[rows], self.pos[rows] = f, np.arange(lo, hi)
            at += hi - lo
        return n

    def _wide(self, stores: Stores, f: int, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo..hi-1`` of a float16 or float32 store, as float32."""
        if len(self.wide) < hi - lo:
            self.wide = np.empty((max(hi - lo, 2 * len(self.wide)), self.q.shape[1]), np.float32)
        if stores.kind[f] == ".f32.npy":
            return stores.open[f].read(lo, hi, self.wide)
        import torch  # here: the CLI checks its arguments before torch is imported

        half = stores.open[f].read_view(lo, hi, self.stage)
        out = self.wide[: hi - lo]
        torch.from_numpy(out).copy_(torch.from_numpy(half))  # numpy's cast: a scalar loop
        return out

    def exact(self, stores: Stores, j: np.ndarray) -> np.ndarray:
        """The float32 rows ``j`` of the buffer, reread from their stores."""
        out = np.empty((len(j), self.q.shape[1]), np.float32)
        for f in np.unique(self.src[j]).tolist():
            mine = np.flatnonzero(self.src[j] == f)
            out[mine] = stores.exact(f, self.pos[j[mine]])
        return out
