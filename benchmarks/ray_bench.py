"""Ray executor vs local executor on the same input and pipeline (run by hand, not by CI).

    python benchmarks/ray_bench.py --shards 8 --per-shard 500 --repeat 2

1. writes ``--shards`` tars of ``--per-shard`` synthetic JPEGs (``--width`` x ``--height``,
   noise over gradients, quality 90) to a temporary directory;
2. runs the same pipeline (decode, size filter; exact dedup on) with the local executor
   (``workers=2`` threads) *before* Ray is started, so Ray's idle daemons do not slow it;
3. starts a local Ray (``num_cpus=--cpus``) and reports the start-up cost separately:
   ``ray.init`` and the first actor pool (process start, imports);
4. runs the pipeline with ``RayExecutor(workers=2)`` and with ``workers=1``, and the local
   executor with ``workers=1`` for the scaling table. Decode threads are pinned to one per
   worker (``DecodeStage(threads=1)``) for the scaling rows so that a worker is one core.

Each run writes to a fresh output; throughput is input images per second of ``Pipeline.run``
wall time (every pass, actor start-up for the run's pools included). Prints one JSON line per
run and a summary table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def make_shards(root: Path, shards: int, per_shard: int, width: int, height: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for s in range(shards):
        with tarfile.open(root / f"bench-{s:04d}.tar", "w") as tf:
            for i in range(per_shard):
                base = rng.integers(0, 200, 3)
                grad = (xx * rng.uniform(0, 0.2) + yy * rng.uniform(0, 0.2))[..., None]
                noise = rng.integers(0, 40, (height, width, 3))
                px = np.clip(base + grad + noise, 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(px).save(buf, "JPEG", quality=90)
                key = f"{s:04d}-{i:05d}"
                for name, data in ((f"{key}.jpg", buf.getvalue()), (f"{key}.txt", b"caption")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return root


def pipeline(decode_threads: int | None) -> Any:
    from pixsieve.pipeline import Pipeline
    from pixsieve.stages.decode import DecodeStage
    from pixsieve.stages.filters import ImageSizeFilter

    stages = [DecodeStage(threads=decode_threads), ImageSizeFilter(min_side=64)]
    return Pipeline(stages, samples_per_shard=1000, partition_bytes=32 << 20)


def run_once(
    label: str, inputs: Path, out: Path, executor: Any, decode_threads: int | None, images: int
) -> dict[str, Any]:
    start = time.perf_counter()
    result = pipeline(decode_threads).run([str(inputs)], str(out), executor)
    seconds = time.perf_counter() - start
    row = {
        "run": label,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 1),
        "passes": result.record["timings"],
        "kept": result.counts["kept"],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--per-shard", type=int, default=500)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ray-bench-"))
    t0 = time.perf_counter()
    inputs = make_shards(work / "in", args.shards, args.per_shard, args.width, args.height)
    images = args.shards * args.per_shard
    size = sum(p.stat().st_size for p in inputs.iterdir())
    print(
        json.dumps(
            {
                "images": images,
                "input_mb": round(size / 1e6, 1),
                "generate_s": round(time.perf_counter() - t0, 1),
            }
        ),
        flush=True,
    )

    from pixsieve.executors.local import LocalExecutor

    rows: list[dict[str, Any]] = []
    n = 0

    def out() -> Path:
        nonlocal n
        n += 1
        return work / f"out-{n}"

    for _ in range(args.repeat):
        rows.append(run_once("local x2", inputs, out(), LocalExecutor(2), None, images))
        rows.append(
            run_once("local x1, 1 decode thread", inputs, out(), LocalExecutor(1), 1, images)
        )
        rows.append(
            run_once("local x2, 1 decode thread", inputs, out(), LocalExecutor(2), 1, images)
        )

    import ray

    from pixsieve.executors.ray import RayExecutor, TaskActor

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=True)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    actors = [ray.remote(TaskActor).options(num_cpus=1).remote() for _ in range(2)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    pool_s = time.perf_counter() - t0
    for a in actors:
        ray.kill(a)
    print(
        json.dumps({"ray_init_s": round(init_s, 2), "first_pool_of_2_s": round(pool_s, 2)}),
        flush=True,
    )

    for _ in range(args.repeat):
        rows.append(run_once("ray x2", inputs, out(), RayExecutor(workers=2), None, images))
        rows.append(
            run_once("ray x1, 1 decode thread", inputs, out(), RayExecutor(workers=1), 1, images)
        )
        rows.append(
            run_once("ray x2, 1 decode thread", inputs, out(), RayExecutor(workers=2), 1, images)
        )
    ray.shutdown()

    best: dict[str, float] = {}
    for r in rows:
        best[r["run"]] = max(best.get(r["run"], 0.0), r["images_per_s"])
    print("\n| run | best images/s |\n|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v} |")
    print(f"\nray x2 / local x2 = {best['ray x2'] / best['local x2']:.0%}")
    print(
        f"ray 1 -> 2 workers (1 decode thread each) = "
        f"{best['ray x2, 1 decode thread'] / best['ray x1, 1 decode thread']:.2f}x"
    )


if __name__ == "__main__":
    main()
