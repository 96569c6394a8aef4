"""What CLIP's text tower adds to the image tower, per sample, on this machine's CPU.

Run by hand from the repository root (a few minutes on 2 cores)::

    python benchmarks/caption_bench.py [--samples 32] [--batch-size 16]

The model is a randomly initialised full CLIP ViT-L/14 (``CLIPModel``: the vision tower of
``embed_bench.py`` plus OpenAI's L/14 text tower, 12 layers, width 768, 77 positions,
projection 768) with CLIP's real tokenizer built from ``tests/data/clip_tokenizer`` — the same
compute as the pinned checkpoint, nothing downloaded. It measures, alternating A/B rounds so a
busy shared machine hits both alike:

1. bare ``ClipEncoder.encode`` on ready pixels vs ``ClipTextEncoder.encode`` (tokenise +
   forward + normalise) on web-like captions (5–60 words, some over 77 tokens), and on
   captions that all fill the 77-token context (the worst case);
2. ``pixsieve curate`` on a shard of JPEGs with ``.txt`` captions: the ``embed`` and
   ``embed_text`` stage seconds from ``run.json``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures_clip import save_clip_tokenizer  # noqa: E402

from pixsieve.config import CurateConfig, EmbedConfig, RunConfig  # noqa: E402
from pixsieve.curate import curate  # noqa: E402
from pixsieve.models.clip import load_clip  # noqa: E402
from pixsieve.models.clip_text import load_clip_text  # noqa: E402

_WORDS = (
    "a photo of the red blue old new small large dog cat car house street city beach sunset "
    "woman man child portrait vintage poster logo illustration painting modern kitchen garden "
    "mountain river forest winter summer wedding dress shoes sale free shipping best quality "
    "stock image vector background pattern white black wooden table chair lamp"
)
WORDS = tuple(_WORDS.split(" "))


def save_vit_l14_full(folder: Path) -> Path:
    """A random CLIP ViT-L/14 with both towers and CLIP's tokenizer files."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu",
    )  # fmt: skip
    text = CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    )  # fmt: skip
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=768
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    save_clip_tokenizer(folder)
    return folder


def captions(n: int, rng: np.random.Generator, words: tuple[int, int]) -> list[str]:
    """``n`` captions of ``words[0]``..``words[1]`` words drawn from :data:`WORDS`."""
    return [" ".join(rng.choice(WORDS, rng.integers(*words))) for _ in range(n)]


def per_sample(fn: object, items: object, rounds: list[float]) -> None:
    """Append the seconds per item of one call of ``fn(items)``."""
    t = time.perf_counter()
    fn(items)  # type: ignore[operator]
    rounds.append((time.perf_counter() - t) / len(items))  # type: ignore[arg-type]


def write_shard(path: Path, n: int, texts: list[str], rng: np.random.Generator) -> None:
    """``n`` 512-px noise JPEGs, each with a ``.txt`` caption."""
    with tarfile.open(path, "w") as tf:
        for i in range(n):
            buf = io.BytesIO()
            pixels = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buf, "JPEG", quality=90)
            for name, data in ((f"{i:06d}.jpg", buf.getvalue()), (f"{i:06d}.txt", texts[i])):
                payload = data if isinstance(data, bytes) else data.encode()
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))


def main() -> None:
    """Print per-sample seconds of both towers, their ratio, and the pipeline's stage split."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="pixsieve-caption-"))
    model_dir = save_vit_l14_full(tmp / "vit-l-14")
    rng = np.random.default_rng(0)
    n, bs = args.samples, args.batch_size
    pixels = rng.integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)
    web = captions(n, rng, (5, 61))
    full = captions(n, rng, (120, 121))  # every one cut to 77 tokens
    image = load_clip(str(model_dir), device="cpu", precision="fp32", batch_size=bs)
    text = load_clip_text(str(model_dir), device="cpu", precision="fp32", batch_size=bs)
    tokens = text.tokenize(web)
    print(f"web captions: median {int(np.median(tokens.lengths))} tokens, "
          f"{int(tokens.truncated.sum())}/{n} over 77")  # fmt: skip
    image.encode(pixels[:bs])  # warm-up
    text.encode(web[:bs])
    times: dict[str, list[float]] = {"image": [], "text web": [], "text 77": []}
    for _ in range(args.rounds):
        per_sample(image.encode, pixels, times["image"])
        per_sample(text.encode, web, times["text web"])
        per_sample(text.encode, full, times["text 77"])
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:9s}: {med[k] * 1e3:8.1f} ms/sample (rounds: {[round(x * 1e3, 1) for x in v]})")
    for k in ("text web", "text 77"):
        print(f"{k} adds {med[k] / med['image']:.1%} to the image tower")
    del image, text
    shard = tmp / "shard-000.tar"
    write_shard(shard, n, web, rng)
    cfg = CurateConfig(
        embed=EmbedConfig(model=str(model_dir), device="cpu", precision="fp32", batch_size=bs),
        run=RunConfig(skip=("aesthetic", "nsfw", "dedup")),
    )
    result = curate([str(shard)], str(tmp / "out"), cfg)
    counters = result.record["counters"]
    embed, embed_text = counters["embed"]["seconds"], counters["embed_text"]["seconds"]
    print(f"curate: embed {embed:.1f} s, embed_text {embed_text:.1f} s "
          f"(+{embed_text / embed:.1%}), caption filter {counters['caption']['seconds']:.3f} s, "
          f"captions read {counters['captions']['seconds']:.3f} s")  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
