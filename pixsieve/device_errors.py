"""Recognising device failures in exceptions, without importing torch.

Out-of-memory errors do not all arrive as ``torch.OutOfMemoryError``: cuBLAS allocation
failures and nvJPEG allocator failures are plain ``RuntimeError``s. The model code (halving a
batch) and the accelerated decoders (telling a broken device from a bad image) both ask here.
"""

from __future__ import annotations

OOM_MARKERS = (
    "out of memory",
    "cublas_status_alloc_failed",
    "cudaerrormemoryallocation",
    "nvjpeg_status_allocator_failure",
)
DEVICE_MARKERS = (
    "cuda error",
    "cudaerror",
    "cuda driver",
    "cublas_status",
    "cudnn_status",
    "device-side assert",
    "illegal memory access",
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says the device (or host) ran out of memory."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return any(marker in text for marker in OOM_MARKERS)


def is_device_error(error: BaseException) -> bool:
    """Whether ``error`` reports a CUDA / cuBLAS / cuDNN failure other than out of memory."""
    text = str(error).lower()
    return not is_out_of_memory(error) and any(marker in text for marker in DEVICE_MARKERS)
