"""Paths of the material committed in ``tests/data`` (see ``tests/data/README.md``).

Tests and benchmarks read only these files: a clone has nothing beside it.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
PHOTOS = DATA / "photos"
WEIGHTS = DATA / "weights"
AESTHETIC_PTH = WEIGHTS / "sac+logos+ava1-l14-linearMSE.pth"
NSFW_PTH = WEIGHTS / "clip_ViT-L-14_openai_binary_nsfw_head.pth"
RATING_EMBEDDINGS = DATA / "embeddings" / "vit_l_14"
GOLDEN = DATA / "golden"
