"""Ingest throughput (read + decode + resize to 224) and peak memory of ingest → export.

Run by hand from the repository root::

    python benchmarks/ingest_bench.py [--images 400] [--shards 4]

Part 1 times, on one core, a Pillow full-decode + resize baseline against pixsieve's decoder
(DCT-domain downscaling) and the full reader + decode stage, on ~512-px and ~1600×1200 JPEGs
made from the real photos in tests/data/photos. Part 2 runs a pure ingest → export
(``--skip embed``) on N and 10×N shards in child processes and compares their peak RSS.
"""

from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "photos"
sys.path.insert(0, str(ROOT))

from pixsieve.io.decode import _resize_crop, decode_image  # noqa: E402
from pixsieve.io.tar_reader import TarShardReader  # noqa: E402
from pixsieve.stages.decode import DecodeStage  # noqa: E402


def make_jpegs(n: int, size: tuple[int, int]) -> list[bytes]:
    """``n`` distinct JPEGs of about ``size``, cut from the real photos (quality 90)."""
    photos = [Image.open(p).convert("RGB") for p in sorted(PHOTOS.iterdir())]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        scale = max(size[0] / im.width, size[1] / im.height) * rng.uniform(1.0, 1.1)
        im = im.resize((int(im.width * scale) + 1, int(im.height * scale) + 1), Image.BICUBIC)
        x, y = rng.integers(0, im.width - size[0] + 1), rng.integers(0, im.height - size[1] + 1)
        buf = io.BytesIO()
        im.crop((x, y, x + size[0], y + size[1])).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_shard(path: Path, images: list[bytes]) -> None:
    """A WebDataset shard with a caption per image."""
    with tarfile.open(path, "w") as tf:
        for i, data in enumerate(images):
            for name, payload in ((f"{i:06d}.jpg", data), (f"{i:06d}.txt", b"a caption")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))


def baseline(data: bytes) -> np.ndarray:
    """Pillow full-resolution decode, then the same resize + crop."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(_resize_crop(im, 224))


def baseline_ingest(shard: Path) -> int:
    """The baseline with the same tar reading: tarfile stream + Pillow full decode + resize."""
    n = 0
    with tarfile.open(shard, "r|") as tf:
        for m in tf:
            data = tf.extractfile(m).read()
            if m.name.endswith(".jpg"):
                baseline(data)
                n += 1
    return n


def rate(fn, items: list, repeat: int = 2) -> float:
    """Best images/s over ``repeat`` runs of ``fn`` on every item."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t)
    return len(items) / best


def ingest_rate(shard: Path, n: int) -> float:
    """Reader + decode stage with one decode thread, end to end, images/s."""
    from pixsieve.batch import ImageBatch

    stage = DecodeStage(threads=1)
    stage.setup()
    t = time.perf_counter()
    chunk = []
    for s in TarShardReader(str(shard)):
        chunk.append(s)
        if len(chunk) == 256:
            stage.process(ImageBatch.from_samples(chunk, str(shard), 0))
            chunk = []
    if chunk:
        stage.process(ImageBatch.from_samples(chunk, str(shard), 0))
    return n / (time.perf_counter() - t)


def peak_rss_mb(inputs: Path, out: Path) -> float:
    """Peak RSS (MB) of a child process running a pure ingest → export."""
    code = (
        "import resource, sys; from pixsieve.curate import curate;"
        "from pixsieve.config import CurateConfig, RunConfig;"
        "curate([sys.argv[1]], sys.argv[2], CurateConfig(run=RunConfig(skip=('embed',))));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(inputs), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout.split()[-1]) / 1024


def main() -> None:
    """Print throughput per core and the peak-RSS ratio."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixsieve-bench-") as tmp:  # removed at the end
        run(Path(tmp), args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    """The measurements, with every file under ``tmp``."""
    print(f"machine: {resource.getpagesize()} B pages, python {sys.version.split()[0]}")
    for label, size in (("512px", (512, 512)), ("1600x1200", (1600, 1200))):
        images = make_jpegs(args.images, size)
        shard = tmp / f"{label}.tar"
        write_shard(shard, images)
        base = rate(baseline, images)
        ours = rate(lambda d: decode_image(d, 224), images)
        full = max(ingest_rate(shard, len(images)) for _ in range(2))
        base_ingest = rate(baseline_ingest, [shard]) * len(images)
        mean_kb = sum(map(len, images)) / len(images) / 1024
        print(
            f"{label:>9} ({mean_kb:.0f} KB avg): pillow full decode {base:7.1f} img/s/core | "
            f"pixsieve decode {ours:7.1f} img/s/core ({ours / base:.2f}x) | "
            f"ingest (tar read + decode stage) {full:7.1f} img/s/core vs baseline read + "
            f"decode {base_ingest:7.1f} ({full / base_ingest:.2f}x)"
        )
    # peak RSS: N shards vs 10N shards, pure ingest -> export
    per_shard = 100
    images = make_jpegs(per_shard * args.shards * 10, (512, 512))  # all distinct
    small, large = tmp / "small", tmp / "large"
    small.mkdir()
    large.mkdir()
    for i in range(args.shards * 10):
        chunk = images[i * per_shard : (i + 1) * per_shard]
        if i < args.shards:
            write_shard(small / f"s-{i:04d}.tar", chunk)
        write_shard(large / f"s-{i:04d}.tar", chunk)
    a = peak_rss_mb(small, tmp / "out-small")
    b = peak_rss_mb(large, tmp / "out-large")
    print(
        f"peak RSS ingest->export: {args.shards} shards ({args.shards * per_shard} imgs) "
        f"{a:.0f} MB, {args.shards * 10} shards ({args.shards * per_shard * 10} imgs) "
        f"{b:.0f} MB, ratio {b / a:.2f}"
    )


if __name__ == "__main__":
    main()
