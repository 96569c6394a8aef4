"""Peak CPU memory of the embed stage: CLIP ViT-L/14 on 64 images, fp32 and bf16.

Run by hand from the repository root (a minute or two on 2 cores)::

    python benchmarks/memory_bench.py [--images 64] [--batch-size 64]

Saves a randomly initialised ViT-L/14 vision tower (as ``embed_bench.py``), then, for each
precision, runs one fresh Python process that loads it with :func:`pixsieve.models.load_clip`
on the CPU and embeds ``--images`` random 224×224 images at ``--batch-size``; prints the peak
resident memory of that process (``VmHWM``; it starts no children, so this is the process
tree's) after imports, after loading and after embedding. NeMo Curator's same stage
measured 2.58 GiB on the same 64 images (issue 14).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = """
import json, sys, time
import numpy as np
from pixsieve.models import load_clip
def rss():  # peak resident set of this process (VmHWM: per address space, unlike ru_maxrss,
    # which a child inherits from the parent that forked it)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # KiB -> GiB
model, precision, images, batch, budget = sys.argv[1:6]
start = rss()
t = time.perf_counter()
enc = load_clip(model, device="cpu", precision=precision, batch_size=int(batch),
                activation_budget=None if budget == "default" else int(budget))
loaded = rss()
px = np.random.default_rng(0).integers(0, 255, (int(images), 224, 224, 3), dtype=np.uint8)
enc.encode(px)
print(json.dumps({"precision": precision, "before_gib": round(start, 3),
                  "after_load_gib": round(loaded, 3), "peak_gib": round(rss(), 3),
                  "max_chunk": enc.max_chunk, "seconds": round(time.perf_counter() - t, 1)}))
"""


def main() -> None:
    """Print one JSON line per precision (and budget)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--unbounded", action="store_true", help="also run without the bound")
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()
    from embed_bench import save_vit_l14

    with tempfile.TemporaryDirectory(prefix="pixsieve-mem-") as tmp:
        model = save_vit_l14(Path(tmp) / "vit-l-14")
        budgets = ["default", "0"] if args.unbounded else ["default"]
        for budget in budgets:
            for precision in args.precisions.split(","):
                argv = [model, precision, args.images, args.batch_size, budget]
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, *map(str, argv)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["activation_budget"] = "unbounded" if budget == "0" else "default (256 MiB)"
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
