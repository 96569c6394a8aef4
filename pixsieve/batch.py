"""The columnar unit of work that flows between stages.

An :class:`ImageBatch` holds up to a few hundred samples from one input shard as parallel
columns (NumPy arrays and Python lists of bytes), never as per-image objects. Rows never
disappear from a batch: a stage that drops a sample sets its ``status`` and ``reason``, so every
input sample reaches the manifest with its fate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pixsieve.io.tar_reader import RawSample

KEPT: int = 0
REMOVED: int = 1
ERROR: int = 2
STATUS_NAMES: tuple[str, str, str] = ("kept", "removed", "error")
EMBEDDING_COLUMN: str = "embedding"
"""The column holding each sample's CLIP embedding (set by the embed stage)."""


def reason_code(reason: str) -> str:
    """The stable code of a reason: the part before ``:`` (``decode_error: x`` → decode_error).

    The one rule for it: counters (``dropped_<code>``), the manifest's ``reason`` column, the
    report, sweeps and ``refilter`` all use it. A bare code is its own code.
    """
    return reason.split(":", 1)[0].strip().replace(" ", "_")


def split_reason(reason: str | None) -> tuple[str | None, str | None]:
    """``(code, detail)`` of a reason: the manifest's ``reason`` and ``reason_detail`` columns.

    ``"decode_error: cannot identify image"`` → ``("decode_error", "cannot identify image")``;
    a bare code has no detail; ``None`` (kept) stays ``(None, None)``.
    """
    if reason is None:
        return None, None
    code = reason_code(reason)
    _, sep, detail = reason.partition(":")
    return code or "unknown", (detail.strip() or None) if sep else None


@dataclass
class ImageBatch:
    """A columnar batch of samples from one input shard.

    Attributes:
        source: URL of the input shard the samples come from.
        shard_index: position of that shard in the sorted input list.
        key: WebDataset sample keys, ``(N,)`` object array of ``str``.
        position: sample index within the shard, ``(N,)`` int64.
        members: per sample, the member names in tar order (image and every sidecar).
        image_name: name of the image member per sample (``None`` when there is none).
        image_bytes: raw image bytes per sample (``None`` when there is none or it was released).
        sidecars: per sample, ``{member name: bytes}`` of every non-image member.
        pixels: decoded, model-sized RGB pixels ``(N, S, S, 3)`` uint8 (zeros where not decoded).
        width, height: original image size (0 where unknown).
        status: ``(N,)`` int8 of :data:`KEPT`, :data:`REMOVED`, :data:`ERROR`.
        reason: per sample, why it was removed or failed (``None`` while kept).
        columns: extra per-sample columns added by stages (scores, hashes, embeddings...).
    """

    source: str
    shard_index: int
    key: np.ndarray
    position: np.ndarray
    members: list[list[str]]
    image_name: list[str | None]
    image_bytes: list[bytes | None]
    sidecars: list[dict[str, bytes]]
    status: np.ndarray
    reason: list[str | None]
    pixels: np.ndarray | None = None
    width: np.ndarray | None = None
    height: np.ndarray | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples: list[RawSample], source: str, shard_index: int) -> ImageBatch:
        """Build a columnar batch from raw tar samples (structural problems become errors)."""
        n = len(samples)
        image_name: list[str | None] = []
        image_bytes: list[bytes | None] = []
        sidecars: list[dict[str, bytes]] = []
        status = np.zeros(n, dtype=np.int8)
        for i, s in enumerate(samples):
            idx = s.image_index
            image_name.append(s.names[idx] if idx is not None else None)
            image_bytes.append(s.data[idx] if idx is not None else None)
            pairs = enumerate(zip(s.names, s.data, strict=True))
            sidecars.append({name: data for j, (name, data) in pairs if j != idx})
            if s.reason is not None:
                status[i] = ERROR
        batch = cls(
            source=source,
            shard_index=shard_index,
            key=np.array([s.key for s in samples], dtype=object),
            position=np.array([s.position for s in samples], dtype=np.int64),
            members=[list(s.names) for s in samples],
            image_name=image_name,
            image_bytes=image_bytes,
            sidecars=sidecars,
            status=status,
            reason=[s.reason for s in samples],
        )
        batch.columns["warnings"] = np.array(
            ["; ".join(s.warnings) if s.warnings else None for s in samples], dtype=object
        )
        return batch

    def __len__(self) -> int:
        return len(self.key)

    @property
    def alive(self) -> np.ndarray:
        """Boolean mask of samples still kept."""
        return self.status == KEPT

    @property
    def decoded(self) -> np.ndarray:
        """Boolean mask of samples whose pixels were decoded (kept or removed, not errors)."""
        if self.width is None:
            return np.zeros(len(self), dtype=bool)
        return (self.status != ERROR) & (self.width > 0)

    def drop(self, mask: np.ndarray, reason: str | list[str], status: int = REMOVED) -> int:
        """Mark still-kept samples selected by ``mask`` as dropped; return how many changed.

        A sample keeps the first reason it was dropped for: later stages never overwrite it.
        ``reason`` is one string for all, or one string per sample (length ``N``).
        """
        hit = np.asarray(mask, dtype=bool) & self.alive
        idx = np.flatnonzero(hit)
        for i in idx:
            self.reason[i] = reason if isinstance(reason, str) else reason[i]
        self.status[idx] = status
        return len(idx)

    def set_column(self, name: str, values: np.ndarray) -> None:
        """Attach a per-sample column (length must equal the batch size)."""
        values = np.asarray(values)
        if len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} rows, batch has {len(self)}")
        self.columns[name] = values

    def release_bytes(self) -> None:
        """Drop image bytes and pixels once nothing downstream needs them (bounds memory)."""
        self.image_bytes = [None] * len(self)
        self.pixels = None
