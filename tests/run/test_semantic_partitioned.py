"""The semantic pass over per-shard caches gives the in-memory answer, and resumes by phase."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from dedup_tools.synthetic import planted_embeddings

from pixsieve.dedup import SemanticDedupConfig, find_duplicates
from pixsieve.executors import LocalExecutor
from pixsieve.io.shards import ShardRef
from pixsieve.run.layout import RunLayout
from pixsieve.run.semantic import run_semantic_dedup

N_SHARDS = 5
MIB = 1 << 20


def _caches(root: Path, n: int = 5000, seed: int = 5) -> tuple[RunLayout, list[ShardRef], dict]:
    """Sample caches of ``N_SHARDS`` shards: planted duplicates, some rows removed earlier or
    without an embedding, aesthetic scores with gaps; plus the kept rows in input order."""
    layout = RunLayout.open(str(root))
    rng = np.random.default_rng(seed)
    x = planted_embeddings(n, dim=24, seed=seed).embeddings
    status = np.where(rng.random(n) < 0.05, "removed", "kept")
    has_emb = rng.random(n) > 0.03
    aesthetic = np.where(rng.random(n) < 0.1, np.nan, rng.random(n) * 10).astype(np.float32)
    width = rng.integers(100, 400, n)
    height = rng.integers(100, 400, n)
    cuts = np.sort(rng.choice(np.arange(1, n), N_SHARDS - 1, replace=False))
    shards, kept = [], {"x": [], "aesthetic": [], "res": [], "id": []}
    for i, (lo, hi) in enumerate(zip(np.r_[0, cuts], np.r_[cuts, n], strict=True)):
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[lo:hi].reshape(-1)), 24)
        mask = pa.array(~has_emb[lo:hi])
        table = pa.table(
            {
                "position": pa.array(np.arange(hi - lo), pa.int64()),
                "key": pa.array([f"s{i}-{j}" for j in range(hi - lo)]),
                "status": pa.array(status[lo:hi].tolist()),
                "embedding": pa.compute.if_else(mask, pa.nulls(hi - lo, emb.type), emb),
                "aesthetic_score": pa.array(aesthetic[lo:hi], from_pandas=True),
                "width": pa.array(width[lo:hi], pa.int32()),
                "height": pa.array(height[lo:hi], pa.int32()),
            }
        )
        layout.write_table(layout.samples(i), table)
        shards.append(ShardRef(url=f"/in/shard-{i}.tar", size=1))
        ok = np.flatnonzero((status[lo:hi] == "kept") & has_emb[lo:hi])
        kept["x"].append(x[lo:hi][ok])
        kept["aesthetic"].append(aesthetic[lo:hi][ok])
        kept["res"].append(width[lo:hi][ok] * height[lo:hi][ok])
        kept["id"] += [(i, int(j)) for j in ok]
    return layout, shards, {k: np.concatenate(v) if k != "id" else v for k, v in kept.items()}


def _expected(kept: dict, shards: list[ShardRef], config: SemanticDedupConfig) -> list[dict]:
    res = find_duplicates(kept["x"], config, aesthetic=kept["aesthetic"], resolution=kept["res"])
    rows = []
    for g in np.flatnonzero(res.component_size > 1):
        shard, pos = kept["id"][g]
        gone = bool(res.removed[g])
        rep = kept["id"][res.duplicate_of[g]] if gone else None
        rows.append(
            {
                "shard_index": shard,
                "position": pos,
                "removed": gone,
                "duplicate_of": f"s{rep[0]}-{rep[1]}" if gone else None,
                "duplicate_of_source": shards[rep[0]].url if gone else None,
                "duplicate_of_run": None,
                "similarity": float(res.similarity[g]) if gone else None,
                "component_id": int(res.component_id[g]),
                "component_size": int(res.component_size[g]),
                "chained": bool(res.chained[g]),
            }
        )
    return rows


def _same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) and len(want) > 50
    for a, b in zip(got, want, strict=True):
        sa, sb = a.pop("similarity"), b.pop("similarity")
        assert a == b
        assert (sa is None) == (sb is None) and (sa is None or abs(sa - sb) < 1e-5)


@pytest.mark.parametrize(
    ("mode", "keep"),
    [("witness", "aesthetic"), ("components", "resolution"), ("semdedup", "first")],
)
def test_pass_matches_in_memory_dedup_of_the_cached_embeddings(
    tmp_path: Path, mode: str, keep: str
) -> None:
    layout, shards, kept = _caches(tmp_path / "out")
    config = SemanticDedupConfig(threshold=0.9, n_clusters=16, mode=mode, keep=keep)
    summary = run_semantic_dedup(
        layout,
        shards,
        config,
        map_calls=LocalExecutor(workers=2).map_calls,
        memory_limit=480 * MIB,  # the smallest budget: several similarity buckets
        workers=1,
    )
    table = layout.read_table(layout.semantic_duplicates())
    _same(table.to_pylist(), _expected(kept, shards, config))
    counts = summary["stats"]["counts"]
    assert counts["in"] == len(kept["x"])
    assert counts["dropped_semantic_duplicate"] == int(table["removed"].to_numpy().sum())
    record = layout.read_json(f"{layout.semantic_out()}/dedup.json")
    assert record["counts"]["buckets"] > 1
    assert not Path(layout.semantic_work()).exists()  # removed once the decision is written
    assert not Path(layout.semantic_inputs()).exists()


class Interrupted(Exception):
    """Stands for a run killed between two phases."""


def _stop_at(name: str) -> Any:
    def run(fn: Any, calls: Any) -> Any:
        if fn.__name__ == name:
            raise Interrupted(name)
        return LocalExecutor(workers=2).map_calls(fn, calls)

    return run


@pytest.mark.parametrize("phase", ["assign_file", "bucket_edges", "resolve_bucket"])
def test_pass_resumes_after_an_interruption_between_phases(tmp_path: Path, phase: str) -> None:
    config = SemanticDedupConfig(threshold=0.9, n_clusters=16)
    ref_layout, shards, _ = _caches(tmp_path / "ref")
    run_semantic_dedup(ref_layout, shards, config)
    layout, shards, _ = _caches(tmp_path / "out")
    with pytest.raises(Interrupted):
        run_semantic_dedup(layout, shards, config, map_calls=_stop_at(phase))
    assert layout.read_json(layout.marker("semantic", "all")) is None
    done = sorted(Path(layout.semantic_dir()).rglob("*.parquet"))
    stamps = {p: os.stat(p).st_mtime_ns for p in done}
    assert stamps  # the phases before the interruption left their files
    seen: dict[str, dict] = {}

    def checking(fn: Any, calls: Any) -> Any:
        if fn.__name__ == phase:  # the resumed run reached the interrupted phase
            seen["stamps"] = {p: os.stat(p).st_mtime_ns for p in done}
        return LocalExecutor(workers=2).map_calls(fn, calls)

    run_semantic_dedup(layout, shards, config, map_calls=checking)
    assert seen["stamps"] == stamps  # what finished before the interruption was not redone
    got = layout.read_table(layout.semantic_duplicates())
    assert got.equals(ref_layout.read_table(ref_layout.semantic_duplicates()))
