"""The components phase of partitioned dedup: group labels from the edge files, O(edges) memory.

Only the items that appear in an edge can be in a group of two or more, so no array here has
one entry per item. Each grouped item gets the label the in-memory path gives it (the smallest
item of its component) and, in ``semdedup`` mode, a ``child`` flag (it is the first item of an
edge). The answer is written per input file to ``components/fFFFFF.npz`` (``rows`` local to the
file, ascending; ``label``; ``child``), which the gather tasks read; ``components/done.json``
marks the phase done (a rerun skips it).

Two ways, chosen by :meth:`pixsieve.dedup.memory.Budget.component_parts` from the edge count:

* **in memory** (one part): compact ids for the items in the edges (``np.unique``), the
  vectorised union-find of :mod:`pixsieve.dedup.components` over them;
* **partitioned** (``P`` parts): labels live on disk in ``P`` partitions by ``item % P`` and
  edges in spill files keyed the same way. Each round looks up both ends' roots (one pass over
  the partitions by first end, one by second end), drops edges inside one root, hooks each
  larger root onto the smallest root it meets and keeps the contracted edges; pointer jumping
  (``parent = parent[parent]``, three passes per jump) then makes every label a root again.
  Roots only ever move to smaller items, so at the end every label is its component's smallest
  item, exactly as in memory. Every pass holds one partition (about ``1/P`` of the labels and
  of the edges).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pixsieve.dedup.components import connected_components

COMPONENTS_DIR = "components"


def edge_count(edge_files: Sequence[str]) -> int:
    """Edges in the edge files (from their metadata)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in edge_files)


def _edge_chunks(edge_files: Sequence[str], rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(a, b)`` chunks of at most ``rows`` edges, self-loops dropped."""
    for path in edge_files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=["a", "b"]):
            a = batch.column(0).to_numpy().astype(np.int64, copy=False)
            b = batch.column(1).to_numpy().astype(np.int64, copy=False)
            keep = a != b
            yield a[keep], b[keep]


class _Spill:
    """Columns appended into numbered bucket files, read back one bucket at a time."""

    def __init__(self, folder: Path, buckets: int) -> None:
        self.folder, self.buckets, self.chunks = folder, buckets, 0
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def add(self, bucket: np.ndarray, **columns: np.ndarray) -> None:
        order = np.argsort(bucket, kind="stable")
        cuts = np.searchsorted(bucket[order], np.arange(self.buckets + 1))
        for k in range(self.buckets):
            part = order[cuts[k] : cuts[k + 1]]
            if len(part):
                name = self.folder / f"p{k:05d}-{self.chunks:06d}.npz"
                np.savez(name, **{key: value[part] for key, value in columns.items()})
        self.chunks += 1

    def read(self, k: int, *names: str) -> list[np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for path in sorted(self.folder.glob(f"p{k:05d}-*.npz")):
            with np.load(path) as data:
                for name in names:
                    parts[name].append(data[name])
        return [
            np.concatenate(parts[name]) if parts[name] else np.empty(0, np.int64) for name in names
        ]

    def drop(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _Labels:
    """The label partitions: ``node`` (ascending), ``parent`` and ``child`` per ``node % P``."""

    def __init__(self, folder: Path, parts: int) -> None:
        self.folder, self.parts = folder, parts
        folder.mkdir(parents=True, exist_ok=True)

    def load(self, k: int) -> dict[str, np.ndarray]:
        with np.load(self.folder / f"p{k:05d}.npz") as data:
            return {key: data[key] for key in ("node", "parent", "child")}

    def save(self, k: int, part: dict[str, np.ndarray]) -> None:
        np.savez(self.folder / f"p{k:05d}.npz", **part)


def _lookup(part: dict[str, np.ndarray], nodes: np.ndarray) -> np.ndarray:
    """The parents of ``nodes`` (all in this partition)."""
    return part["parent"][np.searchsorted(part["node"], nodes)]


def _partitioned(
    edge_files: Sequence[str], semdedup: bool, parts: int, chunk: int, tmp: Path
) -> _Labels:
    """Label partitions of the components (see the module docstring); return them."""
    labels = _Labels(tmp / "labels", parts)
    edges = _Spill(tmp / "e0", parts)
    nodes = _Spill(tmp / "nodes", parts)
    for a, b in _edge_chunks(edge_files, chunk):
        edges.add(a % parts, u=a, v=b)
        both = np.concatenate([a, b])
        child = np.zeros(len(both), dtype=bool)
        child[: len(a)] = semdedup
        nodes.add(both % parts, node=both, child=child)
    for k in range(parts):
        node, child = nodes.read(k, "node", "child")
        uniq, inv = np.unique(node, return_inverse=True)
        flag = np.zeros(len(uniq), dtype=bool)
        flag[inv[child.astype(bool)]] = True
        labels.save(k, {"node": uniq, "parent": uniq.copy(), "child": flag})
    nodes.drop()
    round_ = 0
    while True:
        round_ += 1
        half = _Spill(tmp / "half", parts)
        for k in range(parts):  # first ends to their roots
            part = labels.load(k)
            u, v = edges.read(k, "u", "v")
            half.add(v % parts, pu=_lookup(part, u), v=v)
        edges.drop()
        edges, hooks, left = _Spill(tmp / f"e{round_}", parts), _Spill(tmp / "hooks", parts), 0
        for k in range(parts):  # second ends to their roots; hook, contract
            part = labels.load(k)
            pu, v = half.read(k, "pu", "v")
            pv = _lookup(part, v)
            split = pu != pv
            low, high = np.minimum(pu[split], pv[split]), np.maximum(pu[split], pv[split])
            if len(low):
                pair = np.unique(np.stack([high, low], axis=1), axis=0)
                high, low = pair[:, 0], pair[:, 1]
                hooks.add(high % parts, node=high, to=low)
                edges.add(high % parts, u=high, v=low)
                left += len(high)
        half.drop()
        if not left:
            hooks.drop()
            edges.drop()
            return labels
        for k in range(parts):
            part = labels.load(k)
            node, to = hooks.read(k, "node", "to")
            np.minimum.at(part["parent"], np.searchsorted(part["node"], node), to)
            labels.save(k, part)
        hooks.drop()
        _jump(labels, tmp)


def _jump(labels: _Labels, tmp: Path) -> None:
    """Pointer-jump the partitions until every parent is a root."""
    parts = labels.parts
    while True:
        asks = _Spill(tmp / "asks", parts)
        for k in range(parts):
            part = labels.load(k)
            moved = part["parent"] != part["node"]
            parent = part["parent"][moved]
            asks.add(parent % parts, node=part["node"][moved], parent=parent)
        answers, changed = _Spill(tmp / "answers", parts), 0
        for k in range(parts):
            part = labels.load(k)
            node, parent = asks.read(k, "node", "parent")
            grand = _lookup(part, parent)
            hop = grand != parent
            answers.add(node[hop] % parts, node=node[hop], parent=grand[hop])
            changed += int(hop.sum())
        asks.drop()
        for k in range(parts):
            node, parent = answers.read(k, "node", "parent")
            if len(node):
                part = labels.load(k)
                part["parent"][np.searchsorted(part["node"], node)] = parent
                labels.save(k, part)
        answers.drop()
        if not changed:
            return


def _in_memory(edge_files: Sequence[str], semdedup: bool, chunk: int) -> dict[str, np.ndarray]:
    """``node`` (ascending), ``parent`` (its label) and ``child`` by one union-find."""
    pairs = list(_edge_chunks(edge_files, chunk))
    a = np.concatenate([p[0] for p in pairs]) if pairs else np.empty(0, np.int64)
    b = np.concatenate([p[1] for p in pairs]) if pairs else np.empty(0, np.int64)
    del pairs
    node = np.unique(np.concatenate([a, b]))
    ai, bi = np.searchsorted(node, a), np.searchsorted(node, b)
    del a, b
    child = np.zeros(len(node), dtype=bool)
    child[ai] = semdedup
    parent = node[connected_components(len(node), ai, bi)]
    return {"node": node, "parent": parent, "child": child}


def group_components(
    work: str | Path,
    edge_files: Sequence[str],
    offsets: Sequence[int],
    semdedup: bool,
    parts: int,
    chunk: int,
) -> int:
    """Write ``components/fFFFFF.npz`` for the files starting at global rows ``offsets`` (the
    last entry: the total); return the number of grouped items.

    Args:
        work: the work directory.
        edge_files: the similarity phase's edge files (columns ``a``, ``b``: global rows).
        offsets: first global row of every input file, then the row count.
        semdedup: flag first ends of edges as ``child`` (SemDeDup removes them).
        parts: 1 for the in-memory union-find, else the partition count.
        chunk: edges read at a time.
    """
    final = Path(work) / COMPONENTS_DIR
    if (final / "done.json").exists():
        return int(json.loads((final / "done.json").read_text())["grouped"])
    tmp = final.with_name(COMPONENTS_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    tmp.mkdir(parents=True)
    bounds = np.asarray(offsets, dtype=np.int64)
    files = len(bounds) - 1
    if parts <= 1:
        label_parts = [_in_memory(edge_files, semdedup, chunk)]
    else:
        labels = _partitioned(edge_files, semdedup, parts, chunk, tmp)
        label_parts = (labels.load(k) for k in range(parts))
    by_file, grouped = _Spill(tmp / "by_file", files), 0
    for part in label_parts:
        file_of = np.searchsorted(bounds, part["node"], side="right") - 1
        by_file.add(file_of, **part)
        grouped += len(part["node"])
    for i in range(files):
        node, parent, child = by_file.read(i, "node", "parent", "child")
        order = np.argsort(node, kind="stable")
        rows = node[order] - bounds[i]
        np.savez(tmp / f"f{i:05d}.npz", rows=rows, label=parent[order], child=child[order])
    by_file.drop()
    shutil.rmtree(tmp / "labels", ignore_errors=True)
    (tmp / "done.json").write_text(json.dumps({"grouped": grouped, "parts": parts}))
    tmp.rename(final)
    return grouped


def read_groups(work: str | Path, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, label, child)`` of file ``index``'s grouped items (local rows, ascending)."""
    with np.load(Path(work) / COMPONENTS_DIR / f"f{index:05d}.npz") as data:
        return data["rows"], data["label"], data["child"].astype(bool)
