"""The two LAION heads that score CLIP ViT-L/14 image embeddings.

- :class:`AestheticHead`: LAION's "improved aesthetic predictor" v2, an MLP
  768→1024→128→64→16→1 without activations (its dropouts are identities at inference), trained
  on L2-normalised embeddings to predict a 1–10 rating.
- :class:`NSFWHead`: LAION's CLIP-based NSFW detector (an AutoKeras model ported to PyTorch):
  standardise with stored mean/variance, three ReLU layers, a sigmoid probability.

Weights are read from ``.safetensors`` or, for ``.pth``, only through
``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from pixsieve.models.hub import Kind, resolve_head

EMBED_DIM: int = 768


class AestheticHead(nn.Module):
    """LAION aesthetic MLP; keys ``layers.{0,2,4,6,7}`` as in the published state dict."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Identity(),  # Dropout(0.2) in training
            nn.Linear(1024, 128),
            nn.Identity(),  # Dropout(0.2)
            nn.Linear(128, 64),
            nn.Identity(),  # Dropout(0.1)
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, dim)`` unit-norm embeddings → ``(N,)`` predicted ratings."""
        return self.layers(x).squeeze(-1)


class _Standardize(nn.Module):
    """Keras ``Normalization`` layer: ``(x - mean) / (sqrt(variance) + 1e-10)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("variance", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.variance.sqrt() + 1e-10)


class NSFWHead(nn.Module):
    """LAION NSFW detector for ViT-L/14: keys ``norm.{mean,variance}``, ``linear_1..4``."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.norm = _Standardize(dim)
        self.linear_1 = nn.Linear(dim, 64)
        self.linear_2 = nn.Linear(64, 512)
        self.linear_3 = nn.Linear(512, 256)
        self.linear_4 = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, dim)`` embeddings → ``(N,)`` probability of NSFW."""
        x = torch.relu(self.linear_1(self.norm(x)))
        x = torch.relu(self.linear_2(x))
        x = torch.relu(self.linear_3(x))
        return torch.sigmoid(self.linear_4(x)).squeeze(-1)


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read tensors from ``.safetensors``, or from ``.pth``/``.pt`` with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle errors surface as many types; all mean "not plain weights"
        raise ValueError(f"{path} is not a plain tensor state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat {{name: tensor}} state dict")
    return state


class HeadScorer:
    """A loaded head as a callable: ``(N, 768)`` embeddings → ``(N,)`` float32 scores.

    Embeddings are L2-normalised before the head sees them (a no-op for CLIP's own unit-norm
    output, and what both heads were trained on).
    """

    def __init__(self, module: nn.Module, source: Path, device: str | torch.device = "cpu") -> None:
        self.source = source
        self.device = torch.device(device)
        self.module = module.to(self.device).eval().requires_grad_(False)
        self.dim = next(m for m in module.modules() if isinstance(m, nn.Linear)).in_features

    @torch.inference_mode()
    def on_device(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Score a ``(N, dim)`` tensor where it lies (the head moves there once); no copy back."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            shape = tuple(embeddings.shape)
            raise ValueError(f"expected embeddings of shape (N, {self.dim}), got {shape}")
        if embeddings.device != self.device:
            self.device = embeddings.device
            self.module = self.module.to(self.device)
        t = torch.nn.functional.normalize(embeddings.float(), dim=-1)
        return self.module(t).float()

    @torch.inference_mode()
    def __call__(self, embeddings: ArrayLike) -> np.ndarray:
        """Score a batch of embeddings."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (N, {self.dim}), got {x.shape}")
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        t = torch.nn.functional.normalize(torch.from_numpy(x).to(self.device), dim=-1)
        return self.module(t).float().cpu().numpy().astype(np.float32, copy=False)


def _load(
    factory: Callable[[], nn.Module],
    kind: Kind,
    path_or_id: str | os.PathLike[str] | None,
    device: str | torch.device,
) -> HeadScorer:
    path = resolve_head(path_or_id, kind)
    module = factory()
    state = load_state_dict_file(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} is not a {kind} head for ViT-L/14: {exc}") from exc
    return HeadScorer(module, path, device)


def load_aesthetic(
    path_or_id: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> HeadScorer:
    """Load the LAION aesthetic head (pinned default, or a file/name/URL/Hub id).

    Returns a callable mapping ``(N, 768)`` CLIP ViT-L/14 image embeddings to ``(N,)`` float32
    ratings on LAION's ~1–10 scale.
    """
    return _load(AestheticHead, "aesthetic", path_or_id, device)


def load_nsfw(
    path_or_id: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> HeadScorer:
    """Load the LAION NSFW head (pinned default, or a file/name/URL/Hub id).

    Returns a callable mapping ``(N, 768)`` CLIP ViT-L/14 image embeddings to ``(N,)`` float32
    probabilities that the image is NSFW.
    """
    return _load(NSFWHead, "nsfw", path_or_id, device)
