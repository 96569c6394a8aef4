"""Ray executor vs local executor on the same input and pipeline (run by hand, not by CI).

    python benchmarks/ray_bench.py --shards 8 --per-shard 500 --repeat 2

1. writes ``--shards`` tars of ``--per-shard`` synthetic JPEGs (``--width`` x ``--height``,
   noise over gradients, quality 90) under ``--workdir`` (reused when already there; without
   it, a temporary folder that is removed at the end);
2. starts a local Ray (``num_cpus=--cpus``) and reports the start-up cost separately:
   ``ray.init`` and starting a first pool of two actors (process start, imports);
3. per repeat, alternates the local and the Ray executor on the same pipeline (decode, size
   filter; exact dedup on) so that load from elsewhere on the machine hits both alike:
   ``x2`` (two workers, default decode threads), then for the scaling rows ``x1`` and ``x2``
   with one decode thread per worker (``DecodeStage(threads=1)``: a worker is one core).

Each run writes to a fresh output; throughput is input images per second of ``Pipeline.run``
wall time (every pass, and starting the run's actor pools, included). The 1-minute load
average before each run is printed: other processes on the machine skew every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
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


def _spin(n: int) -> float:
    t = time.perf_counter()
    sum(range(n))
    return time.perf_counter() - t


def parallel_capacity(n: int = 30_000_000) -> float:
    """How many cores' worth of work two busy processes get done (2.0 on two free cores)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        one = pool.submit(_spin, n).result()
        both = [f.result() for f in [pool.submit(_spin, n), pool.submit(_spin, n)]]
    return 2 * one / max(both)


def pipeline(decode_threads: int | None) -> Any:
    from pixsieve.pipeline import Pipeline
    from pixsieve.stages.decode import DecodeStage
    from pixsieve.stages.filters import ImageSizeFilter

    stages = [DecodeStage(threads=decode_threads), ImageSizeFilter(min_side=64)]
    return Pipeline(stages, samples_per_shard=1000, partition_bytes=32 << 20)


def run_once(
    label: str, inputs: Path, out: Path, executor: Any, decode_threads: int | None, images: int
) -> dict[str, Any]:
    load = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    result = pipeline(decode_threads).run([str(inputs)], str(out), executor)
    seconds = time.perf_counter() - start
    pools = result.record["executor"].get("pools", [])
    start_s = sum(p.get("start_s", 0.0) for p in pools)
    row = {
        "run": label,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 1),
        "pool_start_s": round(start_s, 2),
        "images_per_s_after_start": round(images / (seconds - start_s), 1),
        "passes": result.record["timings"],
        "kept": result.counts["kept"],
        "load_before": load,
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
    try:
        run(work, args)
    finally:  # a --workdir is kept (its inputs are reused); a temporary one is removed
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    """Generate (or reuse) the inputs under ``work``, then time every executor."""
    t0 = time.perf_counter()
    if len(list((work / "in").glob("*.tar"))) != args.shards:
        make_shards(work / "in", args.shards, args.per_shard, args.width, args.height)
    inputs = work / "in"
    images = args.shards * args.per_shard
    size = sum(p.stat().st_size for p in inputs.iterdir())
    print(
        json.dumps(
            {
                "images": images,
                "input_mb": round(size / 1e6, 1),
                "generate_s": round(time.perf_counter() - t0, 1),
                "parallel_capacity_of_2_cpus": round(parallel_capacity(), 2),
                "load_1min": round(os.getloadavg()[0], 2),
            }
        ),
        flush=True,
    )

    import ray

    from pixsieve.executors.local import LocalExecutor
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

    rows: list[dict[str, Any]] = []
    plan = [
        ("local x2", lambda: LocalExecutor(2), None),
        ("ray x2", lambda: RayExecutor(workers=2), None),
        ("local x1, 1 decode thread", lambda: LocalExecutor(1), 1),
        ("ray x1, 1 decode thread", lambda: RayExecutor(workers=1), 1),
        ("local x2, 1 decode thread", lambda: LocalExecutor(2), 1),
        ("ray x2, 1 decode thread", lambda: RayExecutor(workers=2), 1),
    ]
    for rep in range(args.repeat):
        for label, make, threads in plan:
            out = work / f"out-{rep}-{label.replace(' ', '').replace(',', '-')}"
            if out.exists():
                shutil.rmtree(out)
            rows.append(run_once(label, inputs, out, make(), threads, images))
    ray.shutdown()

    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_run.setdefault(r["run"], []).append(r)
    best = {k: max(r["images_per_s"] for r in v) for k, v in by_run.items()}
    print(
        "\n| run | images/s best | images/s median | actor-pool start s (median) "
        "| images/s after pool start (median) |\n|---|---|---|---|---|"
    )
    for k, v in by_run.items():
        med = {f: float(np.median([r[f] for r in v])) for f in v[0] if f.startswith(("im", "po"))}
        print(
            f"| {k} | {best[k]} | {med['images_per_s']:.1f} | {med['pool_start_s']:.2f} "
            f"| {med['images_per_s_after_start']:.1f} |"
        )
    print(f"\nray x2 / local x2 = {best['ray x2'] / best['local x2']:.0%}")
    print(
        f"ray 1 -> 2 workers (1 decode thread each) = "
        f"{best['ray x2, 1 decode thread'] / best['ray x1, 1 decode thread']:.2f}x; local: "
        f"{best['local x2, 1 decode thread'] / best['local x1, 1 decode thread']:.2f}x"
    )


if __name__ == "__main__":
    main()
