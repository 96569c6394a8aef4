"""Model code, apart from stage logic: CLIP image encoder, LAION heads, pinned weights cache.

``load_clip`` returns an encoder (uint8 pixels → unit-norm embeddings); ``load_aesthetic`` and
``load_nsfw`` return callables mapping ``(N, 768)`` embeddings to ``(N,)`` float32 scores.
Heavy imports (transformers) happen on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixsieve.models.hub import ModelUnavailableError

if TYPE_CHECKING:
    from pixsieve.models.clip import ClipEncoder, load_clip
    from pixsieve.models.heads import HeadScorer, load_aesthetic, load_nsfw

__all__ = [
    "ClipEncoder",
    "HeadScorer",
    "ModelUnavailableError",
    "load_aesthetic",
    "load_clip",
    "load_nsfw",
]

_LAZY = {
    "ClipEncoder": "pixsieve.models.clip",
    "load_clip": "pixsieve.models.clip",
    "HeadScorer": "pixsieve.models.heads",
    "load_aesthetic": "pixsieve.models.heads",
    "load_nsfw": "pixsieve.models.heads",
}


def __getattr__(name: str) -> Any:
    """Import the public loaders on first access (keeps ``import pixsieve.models`` light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
