"""GPU throughput: decode, CLIP ViT-L/14 embedding (bf16), the two LAION heads, end to end.

Run by ``benchmarks/gpu.sh`` on a machine with one GPU and no network, or here on a CPU::

    python benchmarks/gpu_bench.py                   # CUDA, ~6,000 synthetic ~512-px JPEGs
    python benchmarks/gpu_bench.py --cpu --images 64 # smoke mode (same code paths, CPU, fp32)

Nothing is downloaded: the JPEG shards are synthesised on the spot (smooth random scenes plus
noise, ~512 px on the long side, quality 90, with ``.txt``/``.json`` sidecars), the CLIP
vision tower is a randomly initialised ``CLIPVisionModelWithProjection`` with the ViT-L/14
sizes saved with ``save_pretrained`` into a temporary folder, and both heads get random
weights. Speed does not depend on the weights, so the numbers hold for the real models.

Reported (images/s): every decode backend available (DALI, torchvision nvJPEG, the CPU
decoder), the embedder alone, each head as its filter runs it, and a full
``pixsieve.pipeline.Pipeline`` run (scan → decode/embed/score → export) with the backend
:func:`pixsieve.stages.decode.choose_decoder` picks, with the GPU utilisation sampled
during the embed and end-to-end phases. ``--json`` saves everything.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pixsieve import ImageBatch, Pipeline  # noqa: E402
from pixsieve.io.tar_reader import RawSample, TarShardReader  # noqa: E402
from pixsieve.stages.decode import available_backends, choose_decoder  # noqa: E402

VIT_L14 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 768,
}
TINY = {**VIT_L14, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}


# --- data ----------------------------------------------------------------------------------


def synth_jpeg(seed: int, long_side: int) -> bytes:
    """A distinct, photo-like JPEG: a smooth random scene, edges and sensor-like noise."""
    rng = np.random.default_rng(seed)
    short = int(long_side * rng.uniform(0.66, 1.0))
    w, h = (long_side, short) if rng.random() < 0.7 else (short, long_side)
    coarse = rng.integers(0, 256, (rng.integers(3, 12), rng.integers(3, 12), 3), np.uint8)
    scene = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    arr = scene.astype(np.int16)
    for _ in range(rng.integers(2, 6)):  # a few hard-edged shapes
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        x1, y1 = x0 + rng.integers(8, w // 2), y0 + rng.integers(8, h // 2)
        arr[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    arr += rng.normal(0, 6, arr.shape).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_shards(folder: Path, n: int, long_side: int, per_shard: int) -> list[Path]:
    """``n`` synthetic samples (``.jpg`` + ``.txt`` + ``.json``) in shards of ``per_shard``."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        jpegs = list(pool.map(lambda i: synth_jpeg(i, long_side), range(n)))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, start in enumerate(range(0, n, per_shard)):
        path = folder / f"synth-{s:05d}.tar"
        with tarfile.open(path, "w") as tf:
            for i in range(start, min(n, start + per_shard)):
                meta = json.dumps({"key": f"{i:08d}", "url": f"synthetic://{i}"}).encode()
                for ext, data in (("jpg", jpegs[i]), ("txt", b"a caption"), ("json", meta)):
                    info = tarfile.TarInfo(f"{i:08d}.{ext}")
                    info.size, info.mtime = len(data), 0
                    tf.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def read_samples(shards: list[Path]) -> list[list[RawSample]]:
    """All samples, shard by shard, held in memory (decode is timed without I/O)."""
    return [list(TarShardReader(str(p))) for p in shards]


def batches(samples: list[list[RawSample]], size: int) -> list[ImageBatch]:
    """Fresh batches of ``size`` (stages mutate batches, so each run gets new ones)."""
    out = []
    for index, shard in enumerate(samples):
        for i in range(0, len(shard), size):
            out.append(ImageBatch.from_samples(shard[i : i + size], f"shard-{index}", index))
    return out


# --- models --------------------------------------------------------------------------------


def save_clip(folder: Path, config: dict[str, int], dtype: torch.dtype) -> Path:
    """A randomly initialised CLIP vision tower with projection, saved with save_pretrained."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config)).to(dtype)
    model.save_pretrained(folder)
    return folder


def save_heads(folder: Path) -> tuple[Path, Path]:
    """Random-weight LAION aesthetic and NSFW heads as ``.safetensors`` files."""
    from safetensors.torch import save_file

    from pixsieve.models.heads import AestheticHead, NSFWHead

    torch.manual_seed(0)
    paths = []
    for name, head in (("aesthetic", AestheticHead()), ("nsfw", NSFWHead())):
        path = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path))
        paths.append(path)
    return paths[0], paths[1]


# --- GPU utilisation -----------------------------------------------------------------------


class UtilSampler:
    """Samples GPU utilisation (%) every ``interval`` s in the background: nvidia-smi, else
    ``torch.cuda.utilization()`` (needs pynvml), else nothing."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self.source = "none"

    def start(self) -> UtilSampler:
        if not torch.cuda.is_available():
            return self
        smi = shutil.which("nvidia-smi")
        if smi:
            self.source = "nvidia-smi"
            index = str(torch.cuda.current_device())
            cmd = [smi, "-i", index, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            self._proc = subprocess.Popen(
                [*cmd, f"--loop-ms={int(self.interval * 1000)}"], stdout=subprocess.PIPE, text=True
            )
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        else:
            try:
                torch.cuda.utilization()
            except Exception:
                return self
            self.source = "torch.cuda.utilization"
            self._thread = threading.Thread(target=self._poll_torch, daemon=True)
        self._thread.start()
        return self

    def _read_smi(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append((time.perf_counter(), float(line)))

    def _poll_torch(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter(), float(torch.cuda.utilization())))

    def window(self, start: float, end: float) -> dict[str, float] | None:
        """Mean and 90th percentile utilisation between two ``perf_counter`` times."""
        vals = [u for t, u in self.samples if start <= t <= end]
        if not vals:
            return None
        return {"mean": round(float(np.mean(vals)), 1), "p90": float(np.percentile(vals, 90))}

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)


# --- phases --------------------------------------------------------------------------------


def probe_decoders(device: str, samples, args) -> dict[str, str | None]:
    """Each installed backend, set up and run once on one small batch: ``None`` when it works,
    else the one-line error (an import alone does not show that nvJPEG runs on this device)."""
    probe = batches([samples[0][:8]], 8)[0]
    out: dict[str, str | None] = {}
    for backend in available_backends(device):
        try:
            stage = choose_decoder(device, backend=backend, batch_size=args.batch)
            stage.setup()
            stage.process(probe)
            out[backend] = None
        except Exception as e:  # report and skip this backend, keep the others
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            out[backend] = f"{type(e).__name__}: {first}"
        print(f"probe   {backend:<10s} {out[backend] or 'ok'}", flush=True)
    return out


def preloaded(stage: Any) -> Any:
    """Make deep copies of a set-up ``stage`` share it instead of loading its model again.

    The score pass deep-copies its stages (one copy per thread), and a copy comes without the
    model (``ClipEmbedder.__getstate__`` drops the encoder, a GPU decoder its pipeline), so the
    timed pass would load ViT-L/14 again and the warm-up would warm a model it never uses.
    The local model pass runs on one thread, so sharing the one loaded copy is safe.
    """
    stage.__deepcopy__ = lambda memo: stage
    return stage


def bench_decode(
    backend: str, device: str, samples, args, on_device: bool = False
) -> tuple[float, Any, dict]:
    """Images/s of one decode backend over every sample (warm-up batch first)."""
    extra = {"keep_on_device": True} if on_device else {}
    stage = choose_decoder(device, backend=backend, batch_size=args.batch, **extra)
    stage.setup()
    stage.process(batches(samples, args.batch)[0])  # warm-up: allocations, cuDNN, pools
    todo = batches(samples, args.batch)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in todo:
        stage.process(b)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n = sum(len(b) for b in todo)
    pixels = None if on_device else np.concatenate([np.asarray(b.pixels) for b in todo])
    return n / seconds, pixels, dict(getattr(stage, "counts", {}))


def bench_embed(model_dir: Path, device: str, pixels: np.ndarray, args, util: UtilSampler):
    """Images/s of ClipEncoder.encode (host uint8 pixels in, embeddings out)."""
    from pixsieve.models.clip import load_clip

    encoder = load_clip(model_dir, device=device, precision=args.precision, batch_size=args.batch)
    encoder.encode(pixels[: args.warmup])  # warm-up
    start = time.perf_counter()
    emb = encoder.encode(pixels)
    seconds = time.perf_counter() - start
    result = {"images_per_s": len(pixels) / seconds, "dtype": encoder.describe()["dtype"]}
    result["gpu_util"] = util.window(start, start + seconds)
    return result, emb


def bench_heads(paths: tuple[Path, Path], emb: np.ndarray, device: str) -> dict[str, float]:
    """Images/s of each head, on CPU as the filters run them, and on the GPU."""
    from pixsieve.models.heads import load_aesthetic, load_nsfw

    out = {}
    devices = ["cpu", "cuda"] if device == "cuda" else ["cpu"]
    for name, loader, path in (
        ("aesthetic", load_aesthetic, paths[0]),
        ("nsfw", load_nsfw, paths[1]),
    ):
        for dev in devices:
            head = loader(path, device=dev)
            head(emb[:64])
            start = time.perf_counter()
            for i in range(0, len(emb), 4096):
                head(emb[i : i + 4096])
            out[f"{name}_{dev}"] = len(emb) / (time.perf_counter() - start)
    return out


def bench_end_to_end(shards, model_dir, heads, device, args, util, root: Path) -> dict[str, Any]:
    """A full Pipeline run with the real stages; models are loaded before the clock starts."""
    from pixsieve.stages.embed import ClipEmbedder
    from pixsieve.stages.scoring import AestheticFilter, NSFWFilter

    backend = args.decoder
    if backend == "auto" and device == "cuda":  # the fastest backend that passed its probe
        backend = next(b for b, usable in args.usable.items() if usable)
    decoder = choose_decoder(device, backend=backend, batch_size=args.batch)
    embed = ClipEmbedder(
        model=str(model_dir), device=device, precision=args.precision, batch_size=args.batch
    )
    stages = [
        decoder,
        embed,
        AestheticFilter(weights=heads[0], score_only=True),
        NSFWFilter(weights=heads[1], score_only=True),
    ]
    t0 = time.perf_counter()
    for stage in stages:
        preloaded(stage).setup()  # the pass uses these set-up stages, not reloaded copies
    load_s = time.perf_counter() - t0
    embed.encoder.encode(np.zeros((args.warmup, 224, 224, 3), np.uint8))  # warm-up
    pipe = Pipeline(stages, batch_size=args.batch, samples_per_shard=1000)
    import pixsieve.models.clip as clip_module

    loads: list[int] = []
    real_load = clip_module.load_clip
    clip_module.load_clip = lambda *a, **k: loads.append(1) or real_load(*a, **k)
    try:
        start = time.perf_counter()
        result = pipe.run([str(p) for p in shards], str(root / "out"), overwrite=True)
        seconds = time.perf_counter() - start
    finally:
        clip_module.load_clip = real_load
    timings = result.record["timings"]
    score_start = start + timings.get("scan", 0.0)
    return {
        "images": result.counts["input"],
        "images_per_s": result.counts["input"] / seconds,
        "score_pass_images_per_s": result.counts["input"] / timings["score"],
        "timings_s": timings,
        "decoder": result.record["decoder"],
        "model_load_s_untimed": round(load_s, 2),
        "model_loads_in_pass": len(loads),  # 0: the timed pass used the warmed model
        "gpu_util_score_pass": util.window(score_start, score_start + timings["score"]),
        "totals": result.counts,
    }


# --- main ----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "torchvision", "nvidia.dali"):
        try:
            out[mod] = __import__(mod, fromlist=["__version__"]).__version__
        except Exception:
            out[mod] = "-"
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="smoke mode: run everything on the CPU")
    p.add_argument("--images", type=int, default=6000, help="synthetic images (default 6000)")
    p.add_argument("--size", type=int, default=512, help="long side of the JPEGs (default 512)")
    p.add_argument("--batch", type=int, default=256, help="batch size for decode and embed")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per input shard")
    p.add_argument("--decoder", default="auto", help="end-to-end decode backend (default auto)")
    p.add_argument("--precision", default=None, help="embed precision (default bf16 on CUDA)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer CLIP instead of ViT-L/14")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device visible: run with --cpu for the smoke mode")
    if args.precision is None:
        args.precision = "bf16" if device == "cuda" else "fp32"
    args.warmup = args.batch if device == "cuda" else 4  # CPU smoke: keep ViT-L passes few
    settings = {**vars(args), "json": str(args.json) if args.json else None}
    report: dict[str, Any] = {"device": device, "versions": versions(), "args": settings}
    print(json.dumps(report["versions"]), flush=True)
    util = UtilSampler().start()
    with tempfile.TemporaryDirectory(prefix="pixsieve-gpu-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        shards = make_shards(root / "shards", args.images, args.size, args.per_shard)
        mb = sum(p.stat().st_size for p in shards) / 1e6
        print(
            f"made {args.images} JPEGs in {len(shards)} shards ({mb:.0f} MB) "
            f"in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        model_dir = save_clip(root / "clip", TINY if args.tiny else VIT_L14, torch.bfloat16)
        heads = save_heads(root)
        samples = read_samples(shards)

        probes = probe_decoders(device, samples, args)
        report["decode_probe"] = probes
        args.usable = {b: error is None for b, error in probes.items()}
        decode: dict[str, Any] = {}
        pixels = None
        for backend, error in probes.items():
            if error is not None:
                decode[backend] = {"skipped": error}
                continue
            rate, px, counts = bench_decode(backend, device, samples, args)
            decode[backend] = {"images_per_s": rate, "routing": counts}
            pixels = px if pixels is None else pixels
            print(f"decode  {backend:<10s} {rate:10.1f} img/s  {counts or ''}", flush=True)
            if device == "cuda" and backend != "pillow":  # pixels left on the GPU
                rate, _, _ = bench_decode(backend, device, samples, args, on_device=True)
                decode[f"{backend}_on_device"] = {"images_per_s": rate}
                print(f"decode  {backend + '*':<10s} {rate:10.1f} img/s  (kept on GPU)", flush=True)
        report["decode"] = decode
        assert pixels is not None

        embed, emb = bench_embed(model_dir, device, pixels, args, util)
        report["embed"] = embed
        print(
            f"embed   {embed['dtype']:<10s} {embed['images_per_s']:10.1f} img/s  "
            f"gpu util {embed['gpu_util']}",
            flush=True,
        )
        report["heads"] = bench_heads(heads, emb, device)
        for name, rate in report["heads"].items():
            print(f"head    {name:<14s} {rate:10.1f} img/s", flush=True)

        e2e = bench_end_to_end(shards, model_dir, heads, device, args, util, root)
        report["end_to_end"] = e2e
        print(
            f"e2e     {e2e['decoder']:<10s} {e2e['images_per_s']:10.1f} img/s "
            f"(score pass {e2e['score_pass_images_per_s']:.1f} img/s, "
            f"passes {e2e['timings_s']}, gpu util {e2e['gpu_util_score_pass']}, "
            f"model loads in the timed pass {e2e['model_loads_in_pass']})",
            flush=True,
        )
    util.stop()
    report["gpu_util_source"] = util.source
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
