"""CLIP text encoder: captions in, unit-norm text embeddings (and truncation flags) out.

The text tower (``transformers.CLIPTextModelWithProjection``) and CLIP's byte-level BPE
tokenizer are read from the same model folder as the image tower (the pinned OpenAI ViT-L/14
snapshot holds both towers in one weight file, plus ``vocab.json`` and ``merges.txt``), so the
two embeddings share one space and one revision. Captions are tokenised to at most
:data:`CONTEXT_LENGTH` tokens (start and end markers included); longer ones are cut, keeping
the end marker the model pools at, and flagged as truncated. Batches are sorted by length so a
short caption is never padded to a long one's length.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixsieve.models.captions import clip_chars
from pixsieve.models.clip import _quiet_transformers, resolve_device, resolve_precision
from pixsieve.models.hub import HubFile, ModelUnavailableError, fetch_hub, resolve_clip

logger = logging.getLogger(__name__)

CONTEXT_LENGTH = 77
"""CLIP's text context: 75 caption tokens between the start and end markers."""
TOKENIZER_FILES = ("vocab.json", "merges.txt")


@dataclass(frozen=True)
class Tokens:
    """Tokenised captions: padded ids, attention mask, and which captions were cut."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    truncated: np.ndarray
    lengths: np.ndarray


def has_text_tower(model_dir: Path) -> bool:
    """Whether a model folder holds a CLIP text tower and its tokenizer files."""
    import json

    config = model_dir / "config.json"
    if not config.is_file() or not all((model_dir / f).is_file() for f in TOKENIZER_FILES):
        return False
    try:
        cfg = json.loads(config.read_text())
    except ValueError:
        return False
    return "text_config" in cfg or cfg.get("model_type") == "clip_text_model"


class ClipTextEncoder:
    """A loaded CLIP text tower with projection and its tokenizer; see :func:`load_clip_text`."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
        source: Path,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.source = source
        self.projection_dim = int(model.config.projection_dim)
        self.bos = int(tokenizer.bos_token_id)
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos)

    def describe(self) -> dict[str, Any]:
        """Settings for ``run.json``."""
        return {
            "source": str(self.source),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "projection_dim": self.projection_dim,
            "context_length": CONTEXT_LENGTH,
        }

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """CLIP token ids of each caption, start and end markers included, not yet cut."""
        if not texts:
            return []
        clipped = [clip_chars(t) for t in texts]
        return [list(ids) for ids in self.tokenizer(clipped, add_special_tokens=True)["input_ids"]]

    def tokenize(self, texts: list[str]) -> Tokens:
        """Token ids cut to :data:`CONTEXT_LENGTH` (end marker kept), padded to the longest."""
        ids = self.token_ids(texts)
        truncated = np.array([len(i) > CONTEXT_LENGTH for i in ids], dtype=bool)
        ids = [i if len(i) <= CONTEXT_LENGTH else [*i[: CONTEXT_LENGTH - 1], self.eos] for i in ids]
        lengths = np.array([len(i) for i in ids], dtype=np.int64)
        width = int(lengths.max()) if len(ids) else 0
        input_ids = torch.full((len(ids), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return Tokens(input_ids, mask, truncated, lengths)

    def _embed(self, tokens: Tokens) -> torch.Tensor:
        out = self.model(
            input_ids=tokens.input_ids.to(self.device),
            attention_mask=tokens.attention_mask.to(self.device),
        )
        emb = out.text_embeds
        expected = (len(tokens.input_ids), self.projection_dim)
        if not isinstance(emb, torch.Tensor) or tuple(emb.shape) != expected:
            got = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise RuntimeError(f"expected text_embeds of shape {expected}, got {got}")
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def encode(
        self, texts: list[str], batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed captions → ``(N, D)`` float32 L2-normalised, and ``(N,)`` bool ``truncated``.

        Captions are sorted by token count and run in chunks of ``batch_size``, each padded to
        its own longest caption; results come back in the input order.
        """
        tokens = self.tokenize(list(texts))
        out = np.zeros((len(texts), self.projection_dim), dtype=np.float32)
        order = np.argsort(tokens.lengths, kind="stable")
        step = max(1, batch_size or self.batch_size)
        for start in range(0, len(order), step):
            rows = order[start : start + step]
            width = int(tokens.lengths[rows].max())
            chunk = Tokens(
                tokens.input_ids[rows, :width],
                tokens.attention_mask[rows, :width],
                tokens.truncated[rows],
                tokens.lengths[rows],
            )
            out[rows] = self._embed(chunk).cpu().numpy()
        return out, tokens.truncated


def fill_tokenizer(path: Path) -> None:
    """Fetch tokenizer files missing from a cached Hub snapshot (one cached before they were
    part of the pinned download); the snapshot's own commit pins them. Local folders are left
    as they are."""
    repo_dir = path.parent.parent
    if path.parent.name != "snapshots" or not repo_dir.name.startswith("models--"):
        return
    repo_id = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
    for name in TOKENIZER_FILES:
        if not (path / name).is_file():
            fetch_hub(HubFile(repo_id, name, path.name), root=repo_dir.parent.parent)


def resolve_clip_text(
    model: str | os.PathLike[str] | None = None, revision: str | None = None
) -> Path:
    """The CLIP model folder, checked to hold a text tower and tokenizer; never loads weights.

    Raises:
        ModelUnavailableError: the folder has no tokenizer files or no text tower.
    """
    path = resolve_clip(model, revision)
    fill_tokenizer(path)
    _check_tokenizer_files(path)
    if not has_text_tower(path):
        raise ModelUnavailableError(
            f"{path} holds no CLIP text tower (a vision-only model?): caption alignment needs "
            "the full CLIP model, or pass --skip caption"
        )
    return path


def _check_tokenizer_files(path: Path) -> None:
    """Raise :class:`ModelUnavailableError` naming the tokenizer files missing from ``path``."""
    missing = [f for f in TOKENIZER_FILES if not (path / f).is_file()]
    if missing:
        raise ModelUnavailableError(
            f"{path} has no CLIP tokenizer ({', '.join(missing)} missing): caption alignment "
            "needs a full CLIP model folder with its tokenizer files (the pinned default fetches "
            "them when the Hub is reachable), or pass --skip caption"
        )


def load_tokenizer(model_dir: str | os.PathLike[str]) -> Any:
    """CLIP's tokenizer from ``vocab.json`` + ``merges.txt`` in ``model_dir`` (no network)."""
    from transformers import CLIPTokenizer

    path = Path(model_dir)
    _check_tokenizer_files(path)
    with _quiet_transformers():
        return CLIPTokenizer(  # no length limit here: ClipTextEncoder cuts and records it
            vocab=str(path / "vocab.json"),
            merges=str(path / "merges.txt"),
            model_max_length=1 << 30,
        )


def load_clip_text(
    model: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    device: str | torch.device = "auto",
    precision: str | None = None,
    batch_size: int = 256,
) -> ClipTextEncoder:
    """Load the text tower and tokenizer of a CLIP model (same arguments as ``load_clip``).

    ``model=None`` is the pinned OpenAI ViT-L/14; pass the image tower's ``model``,
    ``revision``, ``device`` and ``precision`` to get embeddings in the same space.
    """
    from transformers import CLIPTextModelWithProjection

    path = resolve_clip_text(model, revision)
    tokenizer = load_tokenizer(path)
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    try:
        with _quiet_transformers():
            net = CLIPTextModelWithProjection.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot load a CLIP text model from {path}: {exc}") from exc
    net = net.to(dev).eval().requires_grad_(False)
    return ClipTextEncoder(net, tokenizer, dev, dtype, batch_size, path)
