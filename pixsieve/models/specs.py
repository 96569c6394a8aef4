"""The catalogue of pinned models: what each is and where its bytes come from.

The CLIP backbone is pinned to a Hugging Face commit, each head to a URL plus the sha256 of its
bytes. :mod:`pixsieve.models.hub` fetches, caches and verifies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["clip", "aesthetic", "nsfw"]


@dataclass(frozen=True)
class UrlFile:
    """One file fetched from a URL (any fsspec protocol), pinned by the sha256 of its bytes."""

    url: str
    sha256: str
    filename: str


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face repository at a pinned revision."""

    repo_id: str
    filename: str
    revision: str


@dataclass(frozen=True)
class HubSnapshot:
    """Selected files of a Hugging Face repository at a pinned revision."""

    repo_id: str
    revision: str
    allow_patterns: tuple[str, ...] = (
        "config.json",
        "preprocessor_config.json",
        "*.safetensors",
        "vocab.json",  # CLIP's tokenizer, for the text tower (caption alignment)
        "merges.txt",
    )


@dataclass(frozen=True)
class ModelSpec:
    """A named, pinned model: what it is, where it comes from, whether it is a default."""

    name: str
    kind: Kind
    source: UrlFile | HubFile | HubSnapshot
    description: str
    default: bool = False


DEFAULT_CLIP_ID = "openai/clip-vit-large-patch14"
DEFAULT_CLIP_REVISION = "32bd64288804d66eefd0ccbe215aa642df71cc41"

SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "clip-vit-l-14",
            "clip",
            HubSnapshot(DEFAULT_CLIP_ID, DEFAULT_CLIP_REVISION),
            "OpenAI CLIP ViT-L/14 (vision and text towers, 768-d, tokenizer), MIT",
            default=True,
        ),
        ModelSpec(
            "laion-aesthetic-v2",
            "aesthetic",
            UrlFile(
                "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                "sac%2Blogos%2Bava1-l14-linearMSE.pth",
                "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
                "sac+logos+ava1-l14-linearMSE.pth",
            ),
            "LAION improved aesthetic predictor v2 (sac+logos+ava1, ViT-L/14), Apache-2.0",
            default=True,
        ),
        ModelSpec(
            "laion-aesthetic-v2-hf",
            "aesthetic",
            HubFile(
                "ttj/sac-logos-ava1-l14-linearMSE",
                "model.safetensors",
                "1e77fa05081323d99725fc40a9bf9f88180490e7",
            ),
            "the same aesthetic MLP republished as safetensors on the Hugging Face Hub",
        ),
        ModelSpec(
            "laion-nsfw-l14",
            "nsfw",
            UrlFile(
                "https://raw.githubusercontent.com/LAION-AI/CLIP-based-NSFW-Detector/"
                "21072a2a38e6d2bb294be03c005aaa9a65778e47/models/"
                "clip_ViT-L-14_openai_binary_nsfw_head.pth",
                "fc4d70d2eea4e948d13bc27bf7114f5e8d3bd317eb01a4b49b35dcf1a3d672c6",
                "clip_ViT-L-14_openai_binary_nsfw_head.pth",
            ),
            "LAION CLIP-based NSFW detector, ViT-L/14 binary head (PyTorch port), MIT",
            default=True,
        ),
    )
}


def default_spec(kind: Kind) -> ModelSpec:
    """The default pinned model of one kind."""
    return next(s for s in SPECS.values() if s.kind == kind and s.default)
