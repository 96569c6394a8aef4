"""Semantic dedup on the torch backend (GPU when present) over planted embeddings.

Run by hand or by ``benchmarks/device_check.sh``::

    python benchmarks/dedup_gpu_bench.py --n 1000000          # one GPU: target <= 10 s
    python benchmarks/dedup_gpu_bench.py --n 20000 --cpu      # smoke on the CPU

Makes ``--n`` unit vectors of ``--dim`` (768): 85% random originals and 15% near copies of
them (cosine ~0.97-0.99 to their original, so every copy is a planted duplicate at 0.95), then
times :func:`pixsieve.dedup.find_duplicates` with ``backend="torch"`` (components mode) and
reports the phases and whether exactly the planted copies were removed (``keep=first``
keeps each original). Prints one JSON line; ``--json`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pixsieve.dedup import SemanticDedupConfig, find_duplicates  # noqa: E402


def planted(n: int, dim: int, seed: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, copy_of)``: unit float32 rows; ``copy_of[i]`` is the original of a copy, else -1."""
    g = torch.Generator(device=device).manual_seed(seed)
    n_copies = int(n * 0.15)
    n_orig = n - n_copies
    x = torch.randn((n, dim), generator=g, device=device)
    src = torch.randint(0, n_orig, (n_copies,), generator=g, device=device)
    noise = x[n_orig:] / x[n_orig:].norm(dim=1, keepdim=True)
    orig = x[src] / x[src].norm(dim=1, keepdim=True)
    x[n_orig:] = orig + 0.18 * noise  # cos(orig, copy) ~ 0.98
    x = x / x.norm(dim=1, keepdim=True)
    copy_of = np.full(n, -1, dtype=np.int64)
    copy_of[n_orig:] = src.cpu().numpy()
    return x.cpu().numpy(), copy_of


def main() -> None:
    """Time one dedup run; print the JSON line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    if args.cpu:
        torch.cuda.is_available = lambda: False  # type: ignore[assignment]  # the torch backend too
    t0 = time.perf_counter()
    x, copy_of = planted(args.n, args.dim, 0, device)
    made = time.perf_counter() - t0
    config = SemanticDedupConfig(threshold=0.95, keep="first", backend="torch")
    start = time.perf_counter()
    result = find_duplicates(x, config)
    seconds = time.perf_counter() - start
    copies = copy_of >= 0
    removed = np.asarray(result.removed)
    row = {
        "n": args.n,
        "dim": args.dim,
        "backend": result.backend,
        "seconds": round(seconds, 2),
        "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        "clusters": result.counts.get("n_clusters"),
        "planted_copies": int(copies.sum()),
        "removed": int(removed.sum()),
        "removed_are_the_planted_copies": bool((removed == copies).all()),
        "data_s": round(made, 1),
    }
    print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
