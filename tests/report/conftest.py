"""Runs for the report tests: fake scoring and embedding stages, no CLIP model.

``FakeAesthetic`` and ``FakeNSFW`` are the real :class:`AestheticFilter` and :class:`NSFWFilter`
(same name, reason, score column, threshold setting and keep rule, all inherited) with a cheap
pixel statistic in place of the LAION head. ``FakeEmbed`` writes an 8-d embedding of colour
statistics, so re-encodes, crops and flips of one photo (the bad shard's chelsea variants,
the generated ``scene*`` variants) are near-duplicates.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from fixtures_shards import make_tar, sample_members

from pixsieve.batch import ImageBatch
from pixsieve.pipeline import Pipeline, RunResult
from pixsieve.stages.base import Stage
from pixsieve.stages.decode import DecodeStage
from pixsieve.stages.filters import ImageSizeFilter
from pixsieve.stages.scoring import AestheticFilter, NSFWFilter

AESTHETIC_MIN = 3.0
NSFW_MAX = 0.5
DEDUP_THRESHOLD = 0.99
MIN_SIDE = 2


def _pixels(batch: ImageBatch) -> np.ndarray:
    assert batch.pixels is not None
    return batch.pixels.astype(np.float32) / 255.0


class FakeEmbed(Stage):
    """Colour statistics as an 8-d embedding (centred so unrelated images differ)."""

    name: ClassVar[str] = "embed"

    def process(self, batch: ImageBatch) -> ImageBatch:
        px = _pixels(batch)
        lum = px.mean(axis=3)
        emb = np.concatenate(
            [
                px.mean(axis=(1, 2)) - 0.45,
                px.std(axis=(1, 2)) - 0.2,
                lum.mean(axis=(1, 2))[:, None] - 0.45,
                lum.std(axis=(1, 2))[:, None] - 0.2,
            ],
            axis=1,
        ).astype(np.float32)
        emb[~batch.decoded] = np.nan
        batch.set_column("embedding", emb)
        return batch


class FakeAesthetic(AestheticFilter):
    """``aesthetic_score`` = 10 × mean brightness; the real filter's rule (keep ≥ min_score)."""

    def __init__(self, min_score: float = AESTHETIC_MIN, score_only: bool = False) -> None:
        super().__init__(min_score, score_only=score_only)

    def setup(self) -> None:
        """No head to load."""

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        s = 10.0 * _pixels(batch).mean(axis=(1, 2, 3))
        return {self.column: np.where(batch.decoded, s, np.nan).astype(np.float32)}


class FakeNSFW(NSFWFilter):
    """``nsfw_prob`` = share of red in the colour sum; the real rule (remove ≥ max_prob)."""

    def __init__(self, max_prob: float = NSFW_MAX, score_only: bool = False) -> None:
        super().__init__(max_prob, score_only=score_only)

    def setup(self) -> None:
        """No head to load."""

    def score(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        m = _pixels(batch).mean(axis=(1, 2)) + 1e-3
        p = m[:, 0] / m.sum(axis=1)
        return {self.column: np.where(batch.decoded, p, np.nan).astype(np.float32)}


def make_pipeline(
    aesthetic_min: float = AESTHETIC_MIN,
    nsfw_max: float = NSFW_MAX,
    dedup_threshold: float | None = DEDUP_THRESHOLD,
    aesthetic_score_only: bool = False,
) -> Pipeline:
    """Decode (small), size filter, fake embed, fake aesthetic, fake NSFW, semantic dedup."""
    semantic = None
    if dedup_threshold is not None:
        from pixsieve.dedup import SemanticDedupConfig

        semantic = SemanticDedupConfig(threshold=dedup_threshold)
    return Pipeline(
        [
            DecodeStage(image_size=48, threads=2),
            ImageSizeFilter(min_side=MIN_SIDE),
            FakeEmbed(),
            FakeAesthetic(aesthetic_min, score_only=aesthetic_score_only),
            FakeNSFW(nsfw_max),
        ],
        semantic_dedup=semantic,
        batch_size=8,
        samples_per_shard=7,
        partition_bytes=1 << 20,
    )


def run_pipeline(inputs: list[Path], output: Path, **kw: Any) -> RunResult:
    """Run :func:`make_pipeline` on ``inputs`` into ``output`` with two local workers."""
    return make_pipeline(**kw).run([str(p) for p in inputs], str(output), workers=2)


@pytest.fixture(scope="session")
def pipeline_runner() -> Any:
    """:func:`run_pipeline`, for tests that run fresh pipelines with other thresholds."""
    return run_pipeline


@pytest.fixture(scope="session")
def run_settings() -> dict[str, float]:
    """The thresholds of ``scored_run``."""
    return {
        "aesthetic_min": AESTHETIC_MIN,
        "nsfw_max": NSFW_MAX,
        "dedup_threshold": DEDUP_THRESHOLD,
    }


@pytest.fixture(scope="session")
def dup_shard(good_shards: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Byte-identical copies of the first two images of the first good shard (exact dups)."""
    with tarfile.open(good_shards[0]) as tf:
        images = [m for m in tf.getmembers() if m.name.endswith(".jpg")][:2]
        data = [tf.extractfile(m).read() for m in images]  # type: ignore[union-attr]
    members: list[tuple[str, bytes]] = []
    for i, d in enumerate(data):
        members += sample_members(f"copy-{i}", d, caption=f"copy {i}")
    return make_tar(tmp_path_factory.mktemp("dups") / "zz-dups.tar", members)


@pytest.fixture(scope="session")
def run_inputs(
    good_shards: list[Path], bad_shard: Path, not_a_tar: Path, dup_shard: Path
) -> list[Path]:
    """Two good shards, the bad shard, a file that is not a tar and a shard of exact copies."""
    return [*good_shards, bad_shard, not_a_tar, dup_shard]


@pytest.fixture(scope="session")
def scored_run(run_inputs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with scores, embeddings and semantic dedup (do not modify it)."""
    out = tmp_path_factory.mktemp("run") / "out"
    run_pipeline(run_inputs, out)
    return out


@pytest.fixture(scope="session")
def plain_run(good_shards: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run without scores, embeddings or semantic dedup (decode only)."""
    out = tmp_path_factory.mktemp("plain") / "out"
    Pipeline([DecodeStage(image_size=32)], samples_per_shard=5).run(
        [str(p) for p in good_shards], str(out), workers=2
    )
    return out
