"""``curate --against`` on Ray writes what it writes locally (its exact and semantic steps'
tasks placed as Ray tasks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from executors.helpers import ThumbnailEmbedder, assert_same_outputs, read_manifest
from fixtures_shards import PHOTOS, encode, make_tar, sample_members
from PIL import Image

from pixsieve.dedup import SemanticDedupConfig
from pixsieve.pipeline import Pipeline


@pytest.mark.ray
def test_against_on_ray_matches_local(ray_session, tmp_path: Path) -> None:
    from pixsieve.executors.ray import RayExecutor

    photos = {p.stem: Image.open(p).convert("RGB") for p in sorted(PHOTOS.iterdir())}
    jpg = {name: encode(im, quality=92) for name, im in photos.items()}
    names = sorted(photos)
    a = [m for name in names[:5] for m in sample_members(name, jpg[name])]
    b = [m for name in names[3:] for m in sample_members(f"{name}-copy", jpg[name])]
    b += [
        m
        for name in names[:3]
        for m in sample_members(f"{name}-q60", encode(photos[name], quality=60))
    ]
    shard_a = str(make_tar(tmp_path / "a.tar", a))
    shard_b = str(make_tar(tmp_path / "b.tar", b))

    def pipeline(against: tuple[str, ...] = ()) -> Pipeline:
        config = SemanticDedupConfig(threshold=0.97, keep="first")
        return Pipeline([ThumbnailEmbedder()], semantic_dedup=config, against=against)

    earlier = str(tmp_path / "A")
    pipeline().run([shard_a], earlier, "local", workers=2, report=False)
    here, there = str(tmp_path / "local"), str(tmp_path / "ray")
    pipeline((earlier,)).run([shard_b], here, "local", workers=2, report=False)
    pipeline((earlier,)).run([shard_b], there, RayExecutor(workers=2), report=False)
    assert_same_outputs(here, there)
    reasons = read_manifest(there)["reason"].to_pylist()
    assert reasons.count("duplicate_of_earlier") == 5  # 2 byte copies, 3 re-encodes
    assert reasons.count(None) == 3  # hubble, retina, rocket: new
