"""CLIP ViT-L/14 embedding throughput on this machine, and end-to-end ``curate`` against it.

Run by hand from the repository root (takes a few minutes on 2 cores)::

    python benchmarks/embed_bench.py [--images 96] [--batch-size 16]

The model has the real ViT-L/14 architecture (24 layers, width 1024, patch 14, 224 px,
projection 768), randomly initialised — same compute, no download. Prints the bare forward
throughput in fp32 and bf16, then runs ``pixsieve curate`` (decode → embed → aesthetic → NSFW
→ semantic dedup → export → report) on synthetic JPEG shards with that model and prints its
throughput as a fraction of the bare fp32 forward measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
WEIGHTS = ROOT / "tests" / "data" / "weights"

from ingest_bench import make_jpegs, write_shard  # noqa: E402

from pixsieve.config import (  # noqa: E402
    CurateConfig,
    EmbedConfig,
    FilterConfig,
    ModelsConfig,
    RunConfig,
)
from pixsieve.curate import curate  # noqa: E402
from pixsieve.models import load_clip  # noqa: E402


def save_vit_l14(folder: Path) -> Path:
    """A randomly initialised CLIP ViT-L/14 vision tower with projection, saved as HF files."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu",
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


def forward_rate(model_dir: Path, precision: str, pixels: np.ndarray, batch: int) -> float:
    """Images/s of ``encode`` (preprocess + forward + normalise), after one warm-up batch."""
    enc = load_clip(str(model_dir), device="cpu", precision=precision, batch_size=batch)
    enc.encode(pixels[:batch])
    t = time.perf_counter()
    enc.encode(pixels)
    return len(pixels) / (time.perf_counter() - t)


def main() -> None:
    """Print fp32/bf16 throughput and the end-to-end ratio."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixsieve-embed-") as tmp:  # removed at the end
        run(Path(tmp), args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    """The measurements, with every file under ``tmp``."""
    model_dir = save_vit_l14(tmp / "vit-l-14")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    pixels = np.random.default_rng(0).integers(0, 255, (args.images, 224, 224, 3), dtype=np.uint8)
    rates = {p: forward_rate(model_dir, p, pixels, args.batch_size) for p in ("fp32", "bf16")}
    for p, r in rates.items():
        print(f"bare encode {p}: {r:.2f} img/s")
    shards = tmp / "shards"
    shards.mkdir()
    images = make_jpegs(args.images, (512, 512))
    for i in range(2):
        write_shard(shards / f"s-{i}.tar", images[i::2])
    cfg = CurateConfig(
        embed=EmbedConfig(
            model=str(model_dir), device="cpu", precision="fp32", batch_size=args.batch_size
        ),
        filters=FilterConfig(aesthetic_min=0.0),
        run=RunConfig(skip=("caption",)),  # a vision-only model: see caption_bench.py
        models=ModelsConfig(
            aesthetic=str(WEIGHTS / "sac+logos+ava1-l14-linearMSE.pth"),
            nsfw=str(WEIGHTS / "clip_ViT-L-14_openai_binary_nsfw_head.pth"),
        ),
    )
    t = time.perf_counter()
    result = curate([str(shards)], str(tmp / "out"), cfg)
    seconds = time.perf_counter() - t
    e2e = result.counts["input"] / seconds
    after = forward_rate(model_dir, "fp32", pixels, args.batch_size)
    bare = max(rates["fp32"], after)  # the faster bare figure: a conservative ratio
    print(f"bare encode fp32 again after curate: {after:.2f} img/s")
    print(
        f"curate end to end (fp32, load + all passes + report): {e2e:.2f} img/s "
        f"= {e2e / bare:.1%} of bare fp32 encode (the faster of before/after)"
    )
    print("passes (s):", result.record["timings"])


if __name__ == "__main__":
    main()
