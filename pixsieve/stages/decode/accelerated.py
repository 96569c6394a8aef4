"""Shared logic of the batch (GPU) decode stages: routing, CPU fallback, orientation, assembly.

A batch decoder (DALI, torchvision's nvJPEG) decodes many JPEGs in one call and raises for the
whole call when one image is bad. :class:`AcceleratedDecodeStage` keeps the CPU decode stage's
contract and its reasons on top of that:

1. **Routing.** Only plain JPEGs whose header reads cleanly (:func:`read_jpeg_header`) and
   whose declared size is within ``max_accel_pixels`` (and ``max_pixels``) go to the
   accelerator. Everything else (PNG, WebP, CMYK, truncated files, decompression bombs, empty
   or missing images...) goes to the CPU decoder, :func:`pixsieve.io.decode.decode_image`, so
   its status, reason, size and format are exactly the CPU stage's.
2. **Fallback.** When an accelerated call raises, it is split in halves and retried; a part of
   at most ``min_split`` images goes to the CPU decoder, which reports the bad sample as a
   decode error like any other. One corrupt JPEG costs a few extra calls, never the shard.
   Only failures that look like bad data are treated so (:mod:`.failures`): out of memory
   splits the call without sending its images to the CPU; a CUDA error, an exception no bad
   image raises (a bug), or a batch whose every call failed the same way on JPEGs the CPU
   decoder then read raises :class:`~pixsieve.stages.decode.failures.AcceleratorError`.
3. **Orientation.** Accelerators decode without EXIF orientation; the small output is then
   rotated here, from the header's orientation, as the CPU decoder does.

Subclasses fill :meth:`AcceleratedDecodeStage._build` and
:meth:`AcceleratedDecodeStage._accel_decode`; the result assembly is the decode family's one
finish step (:mod:`pixsieve.stages.decode.base`).
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import torch

from pixsieve.batch import ImageBatch
from pixsieve.io.decode import (
    DEFAULT_MAX_FULL_DECODE_PIXELS,
    DEFAULT_MAX_PIXELS,
    decode_or_error,
)
from pixsieve.io.jpeg_header import JpegHeader, read_jpeg_header
from pixsieve.stages.base import DeviceResources
from pixsieve.stages.decode.base import (
    DecoderStage,
    Gathered,
    finish,
    gather,
    resolve_decode_device,
)
from pixsieve.stages.decode.failures import (
    OUT_OF_MEMORY,
    SYSTEMATIC,
    SYSTEMATIC_MIN_IMAGES,
    AcceleratorError,
    classify,
    describe,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_ACCEL_PIXELS: int = 4096 * 4096
"""Larger JPEGs go to the CPU decoder, which decodes them at 1/2–1/8 scale in the DCT domain
(a GPU decoder decodes at full size: a 16k × 16k image would take 768 MB of device memory)."""


def orient_nhwc(x: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1–8; others unchanged) to ``(N, H, W, C)`` images.

    Same operations as :func:`pixsieve.io.decode._orient` on each image.
    """
    if orientation == 2:
        return x.flip(2)
    if orientation == 3:
        return x.flip(1, 2)
    if orientation == 4:
        return x.flip(1)
    if orientation == 5:
        return x.transpose(1, 2)
    if orientation == 6:
        return torch.rot90(x, -1, dims=(1, 2))
    if orientation == 7:
        return x.transpose(1, 2).flip(1, 2)
    if orientation == 8:
        return torch.rot90(x, 1, dims=(1, 2))
    return x


class AcceleratedDecodeStage(DecoderStage):
    """Decode still-kept samples to ``(size, size, 3)`` uint8 with a batch decoder.

    Same output as :class:`pixsieve.stages.DecodeStage`: ``batch.pixels``, ``width``,
    ``height``, a ``format`` column, and ``error`` rows with the CPU decoder's reasons.

    Args:
        image_size: output side in pixels.
        max_pixels, max_full_decode_pixels: the CPU decoder's decompression-bomb limits.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        batch_size: the most images one accelerated call decodes.
        threads: CPU threads (CPU fallback pool and the accelerator's host workers).
        max_accel_pixels: larger JPEGs go to the CPU decoder.
        keep_on_device: on CUDA, leave ``batch.pixels`` as a CUDA ``torch.Tensor`` (the embed
            stage must accept one); by default pixels are copied back to a NumPy array.
        min_split: a failing call of at most this many images goes to the CPU decoder whole
            instead of being split again.
    """

    backend: ClassVar[str] = "accelerated"
    resources = DeviceResources()  # one GPU unless the device is the CPU

    def __init__(
        self,
        image_size: int = 224,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS,
        device: str = "auto",
        batch_size: int = 256,
        threads: int | None = None,
        max_accel_pixels: int = DEFAULT_MAX_ACCEL_PIXELS,
        keep_on_device: bool = False,
        min_split: int = 8,
    ) -> None:
        self.image_size = image_size
        self.max_pixels = max_pixels
        self.max_full_decode_pixels = max_full_decode_pixels
        self.device = device
        self.batch_size = batch_size
        self.threads = threads
        self.max_accel_pixels = max_accel_pixels
        self.keep_on_device = keep_on_device
        self.min_split = max(1, min_split)
        self._pool: ThreadPoolExecutor | None = None
        self._lock: threading.Lock | None = None
        self._accel: Any = None
        self._counts: Counter[str] = Counter()
        self._taken: Counter[str] = Counter()

    def __getstate__(self) -> dict[str, Any]:
        # ship settings, never the pool, the lock or a built accelerator
        fresh = {"_counts": Counter(), "_taken": Counter()}
        return {**self.__dict__, "_pool": None, "_lock": None, "_accel": None, **fresh}

    @property
    def counts(self) -> dict[str, int]:
        """Images ``accelerated``, ``routed_cpu`` (by header) and ``fallback_cpu`` (after a
        failed call), ``failed_calls`` and ``oom_splits``, since this worker started."""
        return dict(self._counts)

    def tally(self, batch: ImageBatch, entered: np.ndarray) -> dict[str, int]:
        """The routing counters since the last call (``run.json`` records them per stage)."""
        new = self._counts - self._taken
        self._taken.update(new)
        return dict(new)

    @abstractmethod
    def _build(self, device: torch.device) -> Any:
        """Return the accelerator for ``device``; raise with an install hint when it can't."""

    @abstractmethod
    def _accel_decode(self, items: list[bytes], headers: list[JpegHeader]) -> Any:
        """Decode ``items`` to ``(M, S, S, 3)`` uint8 *without* EXIF orientation.

        Return a NumPy array, or a ``torch.Tensor`` on the decode device. Raise on any failure.
        """

    def setup(self) -> None:
        """Start the CPU pool and build the accelerator (once per worker)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads())
        if self._lock is None:
            self._lock = threading.Lock()
        if self._accel is None:
            self._accel = self._build(resolve_decode_device(self.device))

    @property
    def _on_device(self) -> bool:
        return self.keep_on_device and resolve_decode_device(self.device).type == "cuda"

    def _accepts(self, header: JpegHeader | None) -> bool:
        if header is None:
            return False
        return header.width * header.height <= min(self.max_pixels, self.max_accel_pixels)

    def _decode_accelerated(
        self, rows: list[int], batch: ImageBatch, headers: dict[int, JpegHeader]
    ) -> tuple[list[tuple[list[int], Any]], list[int], set[str]]:
        """Run the accelerator over ``rows``: decoded parts, rows left to the CPU, and the
        distinct errors of the calls that failed on (probably) bad images."""
        parts: list[tuple[list[int], Any]] = []
        fallback: list[int] = []
        errors: set[str] = set()
        todo = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        while todo:
            chunk = todo.pop()
            items = [batch.image_bytes[i] or b"" for i in chunk]
            try:
                out = self._accel_decode(items, [headers[i] for i in chunk])
            except Exception as e:  # one bad image fails the whole call, but so does a bug
                kind = classify(e)
                self._counts["oom_splits" if kind == OUT_OF_MEMORY else "failed_calls"] += 1
                logger.debug("%s decode of %d images failed: %s", self.backend, len(chunk), e)
                if kind == SYSTEMATIC or (kind == OUT_OF_MEMORY and len(chunk) == 1):
                    raise AcceleratorError(
                        f"{self.backend} decoding failed, not because of an image: {describe(e)}"
                    ) from e
                if kind == OUT_OF_MEMORY:
                    _free_device_memory()
                if kind != OUT_OF_MEMORY and len(chunk) <= self.min_split:
                    fallback += chunk
                    errors.add(describe(e))
                else:
                    half = len(chunk) // 2
                    todo += [chunk[half:], chunk[:half]]
                continue
            parts.append((chunk, self._orient(out, [headers[i].orientation for i in chunk])))
        return parts, fallback, errors

    def _check_fallback(self, parts: list[Any], fallback: list[int], errors: set[str],
                        cpu: Gathered) -> None:  # fmt: skip
        """Raise when every call failed the same way on many JPEGs the CPU decoder read."""
        read = sum(1 for i in fallback if not cpu.failed[i])
        if not parts and len(errors) == 1 and read >= SYSTEMATIC_MIN_IMAGES:
            raise AcceleratorError(
                f"{self.backend} decoding failed the same way on all {len(fallback)} JPEGs of "
                f"a batch, {read} of which the CPU decoder reads: {errors.pop()}"
            )

    @staticmethod
    def _orient(out: Any, orientations: list[int]) -> Any:
        """Rotate each decoded image by its EXIF orientation (square images keep their shape)."""
        tensor = out if isinstance(out, torch.Tensor) else torch.from_numpy(out)
        codes = np.asarray(orientations)
        for o in np.unique(codes[(codes >= 2) & (codes <= 8)]):
            idx = torch.from_numpy(np.flatnonzero(codes == o)).to(tensor.device)
            tensor[idx] = orient_nhwc(tensor[idx], int(o)).contiguous()
        return tensor if isinstance(out, torch.Tensor) else tensor.numpy()

    def _cpu_submit(self, batch: ImageBatch, rows: list[int]) -> list[Future[Any]]:
        assert self._pool is not None
        args = (self.image_size, self.max_pixels, self.max_full_decode_pixels)
        return [self._pool.submit(decode_or_error, batch.image_bytes[i], *args) for i in rows]

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Decode the batch; failures become ``error`` rows with the CPU decoder's reasons."""
        self.setup()
        assert self._lock is not None
        n = len(batch)
        headers: dict[int, JpegHeader] = {}
        cpu_rows: list[int] = []
        for i in np.flatnonzero(batch.alive).tolist():
            data = batch.image_bytes[i]
            header = read_jpeg_header(data) if data else None
            if header is not None and self._accepts(header):
                headers[i] = header
            else:
                cpu_rows.append(i)
        futures = self._cpu_submit(batch, cpu_rows)  # the CPU works while the accelerator does
        with self._lock:  # one accelerated call at a time per stage
            parts, fallback, errors = self._decode_accelerated(list(headers), batch, headers)
            self._counts.update(
                accelerated=len(headers) - len(fallback),
                routed_cpu=len(cpu_rows),
                fallback_cpu=len(fallback),
            )
        futures += self._cpu_submit(batch, fallback)
        gathered = gather(n, cpu_rows + fallback, (f.result() for f in futures))
        self._check_fallback(parts, fallback, errors, gathered)
        for rows, _ in parts:
            for i in rows:
                gathered.width[i], gathered.height[i] = headers[i].oriented_size
                gathered.fmt[i] = "JPEG"
        return finish(batch, gathered, self._assemble(n, parts, gathered))

    def _assemble(self, n: int, parts: list[tuple[list[int], Any]], cpu: Gathered) -> Any:
        """One ``(N, S, S, 3)`` uint8 array (or CUDA tensor), zeros where not decoded."""
        s = self.image_size
        if self._on_device:
            device = resolve_decode_device(self.device)
            pixels = torch.zeros((n, s, s, 3), dtype=torch.uint8, device=device)
            for rows, out in parts:
                pixels[torch.tensor(rows, device=device)] = torch.as_tensor(out, device=device)
            if cpu.rows:
                host = torch.from_numpy(np.stack(cpu.pixels))
                pixels[torch.tensor(cpu.rows, device=device)] = host.to(device)
            return pixels
        array = np.zeros((n, s, s, 3), dtype=np.uint8)
        for rows, out in parts:
            array[rows] = out.cpu().numpy() if isinstance(out, torch.Tensor) else out
        return cpu.place(array)


def _free_device_memory() -> None:
    """Return cached CUDA memory after an out-of-memory error (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
