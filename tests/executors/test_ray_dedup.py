"""Semantic dedup's tasks spread over Ray give the same answer as here (alone and in a run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dedup_tools.synthetic import planted_embeddings
from executors.helpers import (
    ThumbnailEmbedder,
    assert_same_outputs,
    read_manifest,
    read_output_shards,
)
from fixtures_shards import PHOTOS, encode, make_tar, sample_members
from PIL import Image

from pixsieve.dedup import SemanticDedupConfig, find_duplicates
from pixsieve.executors import LocalExecutor
from pixsieve.pipeline import Pipeline


@pytest.mark.ray
@pytest.mark.parametrize("mode", ["components", "semdedup"])
def test_map_calls_on_ray_matches_local(ray_session, mode) -> None:
    from pixsieve.executors.ray import RayExecutor

    data = planted_embeddings(3000, dim=32, seed=3)
    config = SemanticDedupConfig(threshold=0.9, n_clusters=12, mode=mode, keep="first")
    here = find_duplicates(data.embeddings, config, map_calls=LocalExecutor().map_calls)
    ex = RayExecutor()
    there = find_duplicates(data.embeddings, config, map_calls=ex.map_calls)
    ex.shutdown()
    assert here.removed.sum() > 0
    for field in ("removed", "duplicate_of", "component_id", "component_size"):
        np.testing.assert_array_equal(getattr(here, field), getattr(there, field))
    np.testing.assert_allclose(here.similarity, there.similarity, equal_nan=True)


@pytest.fixture(scope="module")
def variant_shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three shards: the photos, then re-encodes and resizes of some of them, spread out."""
    root = tmp_path_factory.mktemp("variants")
    photos = {p.stem: Image.open(p).convert("RGB") for p in sorted(PHOTOS.iterdir())}
    first = [m for name, im in photos.items() for m in sample_members(name, encode(im))]
    second, third = [], []
    for n, (name, im) in enumerate(photos.items()):
        small = im.resize((im.width // 2, im.height // 2))
        second += sample_members(f"{name}-small", encode(small, quality=90))
        if n % 2:
            third += sample_members(f"{name}-q60", encode(im, quality=60))
    return [
        str(make_tar(root / f"{name}.tar", members))
        for name, members in (("a", first), ("b", second), ("c", third))
    ]


@pytest.mark.ray
@pytest.mark.parametrize("mode", ["witness", "semdedup"])
def test_curate_with_semantic_dedup_on_ray_matches_local(
    ray_session, variant_shards: list[str], tmp_path: Path, mode: str
) -> None:
    """The whole run, its semantic pass placed as Ray tasks, writes what a local run writes."""
    from pixsieve.executors.ray import RayExecutor

    def pipeline() -> Pipeline:
        config = SemanticDedupConfig(threshold=0.97, keep="aesthetic", mode=mode)
        return Pipeline([ThumbnailEmbedder()], semantic_dedup=config, samples_per_shard=5)

    here, there = str(tmp_path / "local"), str(tmp_path / "ray")
    local = pipeline().run(variant_shards, here, "local", workers=2, report=False)
    remote = pipeline().run(variant_shards, there, RayExecutor(workers=2), report=False)
    assert_same_outputs(here, there)
    assert read_output_shards(here) == read_output_shards(there)
    assert remote.record["executor"]["name"] == "ray"
    counts = local.record["counters"]["semantic_dedup"]["counts"]
    assert counts["dropped_semantic_duplicate"] >= 4
    assert remote.record["counters"]["semantic_dedup"] == local.record["counters"]["semantic_dedup"]
    reasons = read_manifest(there)["reason"].to_pylist()
    assert reasons.count("semantic_duplicate") == counts["dropped_semantic_duplicate"]
