"""Exact + semantic dedup inside a run, on real photos with byte copies and re-encoded variants.

A random CLIP maps every image to nearly one direction, so this test plants meaningful
embeddings instead: a zero-mean 16×16 grey thumbnail, under which re-encodes and resizes of a
photo stay within ~0.99 cosine and different photos do not.
"""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest
from executors.helpers import ThumbnailEmbedder
from fixtures_shards import PHOTOS, encode, make_tar, sample_members
from PIL import Image

from pixsieve import Pipeline
from pixsieve.dedup import SemanticDedupConfig


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Two shards: originals, a byte copy across shards, re-encodes and resizes."""
    root = tmp_path_factory.mktemp("variants")
    photos = {p.stem: Image.open(p).convert("RGB") for p in sorted(PHOTOS.iterdir())}
    first, second = [], []
    for name, im in photos.items():
        first += sample_members(f"{name}", encode(im, quality=92))
    chelsea_bytes = encode(photos["chelsea"], quality=92)
    small = photos["coffee"].resize((photos["coffee"].width // 2, photos["coffee"].height // 2))
    second += sample_members("chelsea-copy", chelsea_bytes)  # byte-identical, other shard
    second += sample_members("coffee-small", encode(small, quality=92))  # resized
    second += sample_members("rocket-q60", encode(photos["rocket"], quality=60))  # re-encoded
    second += sample_members("astronaut-png", encode(photos["astronaut"], "PNG"), ext="png")
    return [make_tar(root / "a.tar", first), make_tar(root / "b.tar", second)]


def test_byte_copies_and_variants_are_removed_with_their_original(variants, tmp_path):
    out = tmp_path / "out"
    config = SemanticDedupConfig(threshold=0.97, keep="resolution")
    result = Pipeline([ThumbnailEmbedder()], semantic_dedup=config).run(
        [str(p) for p in variants], str(out)
    )
    rows = {r["key"]: r for r in ds.dataset(str(out / "manifest")).to_table().to_pylist()}
    assert rows["chelsea-copy"]["reason"] == "exact_duplicate"
    assert rows["chelsea-copy"]["duplicate_of"] == "chelsea"
    for key, original in (
        ("coffee-small", "coffee"),
        ("rocket-q60", "rocket"),
        ("astronaut-png", "astronaut"),
    ):
        assert rows[key]["reason"] == "semantic_duplicate", (key, rows[key])
        # keep="resolution": the original survives (larger, or equal and seen first)
        assert rows[key]["duplicate_of"] == original
        assert rows[key]["similarity"] >= 0.97
        assert rows[original]["status"] == "kept" and rows[original]["component_size"] == 2
    distinct = {
        "chelsea",
        "coffee",
        "rocket",
        "astronaut",
        "china",
        "flower",
        "hubble_deep_field",
        "retina",
    }
    assert {k for k, r in rows.items() if r["status"] == "kept"} == distinct
    counts = result.record["counters"]["semantic_dedup"]["counts"]
    assert counts["dropped_semantic_duplicate"] == 3


def test_semantic_dedup_resumes_from_its_marker(variants, tmp_path):
    out = tmp_path / "out"
    pipe = Pipeline([ThumbnailEmbedder()], semantic_dedup=SemanticDedupConfig(threshold=0.97))
    first = pipe.run([str(p) for p in variants], str(out))
    again = pipe.run([str(p) for p in variants], str(out))
    assert again.record["semantic_dedup"] == first.record["semantic_dedup"]
    assert again.record["tasks"]["score"]["resumed"] == 2
