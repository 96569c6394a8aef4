"""The components phase gives the in-memory union-find's labels, in memory or partitioned."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixsieve.dedup.component_parts import group_components, read_groups
from pixsieve.dedup.components import connected_components
from pixsieve.dedup.memory import BASE_RESERVE, Budget


def _graph(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Edges ``(a, b)`` of a test graph over items ``0..n-1`` (in a shuffled order)."""
    perm = rng.permutation(n)
    if kind == "chain":  # one long path through a random order: many rounds of hooking
        a, b = perm[:-1], perm[1:]
    elif kind == "stars":
        hubs = perm[:5]
        leaves = perm[5 : n // 2]
        a, b = leaves, hubs[rng.integers(0, 5, len(leaves))]
    elif kind == "many":  # many small components, repeated edges, a few self-loops
        pairs = rng.integers(0, n, (n // 3, 2))
        a, b = (
            np.concatenate([pairs[:, 0], pairs[:5, 0], [7, 7]]),
            np.concatenate([pairs[:, 1], pairs[:5, 1], [7, 7]]),
        )
    else:  # paths broken into segments, both directions mixed
        a, b = perm[:-1].copy(), perm[1:].copy()
        keep = rng.random(len(a)) > 0.05
        flip = rng.random(len(a)) > 0.5
        a[flip], b[flip] = b[flip], a[flip]
        a, b = a[keep], b[keep]
    return a.astype(np.int64), b.astype(np.int64)


def _edge_files(folder, a, b, files: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(a)), files)):
        path = folder / f"b{i:04d}.parquet"
        pq.write_table(pa.table({"a": a[part], "b": b[part]}), path)
        paths.append(str(path))
    return paths


def _expected(n: int, a: np.ndarray, b: np.ndarray, semdedup: bool):
    keep = a != b
    labels = connected_components(n, a[keep], b[keep])
    grouped = np.bincount(labels, minlength=n)[labels] >= 2
    child = np.zeros(n, dtype=bool)
    child[a[keep]] = semdedup
    return grouped, labels, child


@pytest.mark.parametrize("kind", ["chain", "stars", "many", "segments"])
@pytest.mark.parametrize("parts", [1, 2, 7])
def test_same_labels_as_the_in_memory_union_find(kind, parts, tmp_path):
    rng = np.random.default_rng(len(kind) + parts)
    n = 3000
    a, b = _graph(kind, n, rng)
    offsets = [0, 1000, 1000, 2500, n]  # an empty file among them
    semdedup = kind != "stars"
    chunk = 97  # many chunks per edge file
    grouped = group_components(
        tmp_path / "work", _edge_files(tmp_path / "edges", a, b), offsets, semdedup, parts, chunk
    )
    exp_grouped, exp_labels, exp_child = _expected(n, a, b, semdedup)
    assert grouped == exp_grouped.sum()
    for i in range(len(offsets) - 1):
        lo, hi = offsets[i], offsets[i + 1]
        rows, label, child = read_groups(tmp_path / "work", i)
        np.testing.assert_array_equal(rows, np.flatnonzero(exp_grouped[lo:hi]))
        np.testing.assert_array_equal(label, exp_labels[lo + rows])
        np.testing.assert_array_equal(child, exp_child[lo + rows])
    assert not (tmp_path / "work" / "components.tmp").exists()


def test_no_edges_and_resume(tmp_path):
    files = _edge_files(tmp_path / "edges", np.empty(0, np.int64), np.empty(0, np.int64), 2)
    for parts in (1, 3):
        work = tmp_path / f"w{parts}"
        assert group_components(work, files, [0, 50, 100], False, parts, 10) == 0
        rows, label, child = read_groups(work, 1)
        assert len(rows) == len(label) == len(child) == 0
    # a finished phase is not redone: the marker answers, whatever the edges say now
    a, b = np.array([1, 2]), np.array([2, 3])
    again = _edge_files(tmp_path / "e2", a, b)
    assert group_components(tmp_path / "w3", again, [0, 100], False, 3, 10) == 0


def test_budget_chooses_partitions_from_the_edges():
    budget = Budget(BASE_RESERVE + (1 << 30), 2, 10**9, 768)  # no term grows with n
    assert budget.component_parts(budget.component_edges) == 1
    assert budget.component_parts(10 * budget.component_edges) == 10
    budget.check()  # 1B items fit a 1.4 GiB limit: nothing in the driver is per item
