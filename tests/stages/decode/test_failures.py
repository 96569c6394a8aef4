"""Sorting a failed batch-decode call: bad image, out of memory, or the decoder's own fault."""

from __future__ import annotations

import pytest
import torch

from pixsieve.stages.decode.failures import (
    BAD_IMAGE,
    OUT_OF_MEMORY,
    SYSTEMATIC,
    classify,
    describe,
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            OUT_OF_MEMORY,
        ),
        (
            RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
            OUT_OF_MEMORY,
        ),
        (RuntimeError("nvJPEG error: NVJPEG_STATUS_ALLOCATOR_FAILURE"), OUT_OF_MEMORY),
        (MemoryError(), OUT_OF_MEMORY),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), SYSTEMATIC),
        (RuntimeError("CUDA driver version is insufficient for CUDA runtime version"), SYSTEMATIC),
        (TypeError("interpolate() got an unexpected keyword argument"), SYSTEMATIC),
        (IndexError("index 3 is out of bounds"), SYSTEMATIC),
        (NotImplementedError("resize for this mode"), SYSTEMATIC),
        (RuntimeError("Error while decoding JPEG: corrupt huffman table"), BAD_IMAGE),
        (OSError("broken data stream when reading image file"), BAD_IMAGE),
        (ValueError("image has zero height"), BAD_IMAGE),
    ],
)
def test_classify(error: BaseException, kind: str) -> None:
    assert classify(error) == kind


def test_describe_is_type_and_first_line() -> None:
    assert describe(RuntimeError("boom\ntraceback noise")) == "RuntimeError: boom"
    assert describe(ValueError()) == "ValueError: "
