"""Read safetensors weights tensor by tensor, straight into the precision the model runs in.

``from_pretrained(dtype=bf16)`` on a float32 checkpoint maps the whole file and converts
from it, so the process's peak memory holds the float32 weights (the mapped pages count as
resident) *and* the bf16 copy: 2.08 GiB for ViT-L/14 on the CPU, more than running it in
fp32. Reading each tensor with a plain file read into a buffer of its own and converting it
at once keeps at most one float32 tensor beside the converted weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
}


def _files(folder: Path) -> list[Path] | None:
    """The checkpoint's safetensors files (one, or the shards of an index), else ``None``."""
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    return None


def _header(path: Path) -> tuple[int, dict[str, dict]]:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return 8 + size, header


def read_converted(
    folder: Path, dtype: torch.dtype, prefixes: tuple[str, ...]
) -> dict[str, torch.Tensor] | None:
    """The tensors named with one of ``prefixes``, each read and converted to ``dtype``.

    Returns ``None`` when there is nothing to gain or it cannot be done here: no safetensors
    files, a tensor type not listed, or every tensor already in ``dtype`` (then loading the
    mapped file directly copies nothing).
    """
    files = _files(folder)
    if files is None:
        return None
    headers = [(path, *_header(path)) for path in files]
    metas = [m for _, _, h in headers for k, m in h.items() if k.startswith(prefixes)]
    if not metas or any(m["dtype"] not in _DTYPES for m in metas):
        return None
    if all(_DTYPES[m["dtype"]] == dtype for m in metas):
        return None
    out: dict[str, torch.Tensor] = {}
    for path, start, header in headers:
        with path.open("rb") as f:
            for name, meta in header.items():
                if not name.startswith(prefixes):
                    continue
                begin, end = meta["data_offsets"]
                buf = bytearray(end - begin)
                f.seek(start + begin)
                f.readinto(buf)
                kind = _DTYPES[meta["dtype"]]
                t = torch.frombuffer(buf, dtype=kind).reshape(meta["shape"]) if buf else (
                    torch.empty(meta["shape"], dtype=kind)
                )  # fmt: skip
                out[name] = t.to(dtype) if kind.is_floating_point else t.clone()
    return out
