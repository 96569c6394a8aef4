"""The default curation pipeline, built from a :class:`~pixsieve.config.CurateConfig`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pixsieve.config import CurateConfig
from pixsieve.dedup.memory import parse_size
from pixsieve.io.limits import ReadLimits
from pixsieve.io.shards import discover_shards
from pixsieve.models import hub
from pixsieve.models.hub import ModelUnavailableError
from pixsieve.pipeline import Pipeline, RunResult
from pixsieve.stages.base import StageLike
from pixsieve.stages.decode import choose_decoder
from pixsieve.stages.filters import ImageSizeFilter


def build_stages(cfg: CurateConfig) -> list[StageLike]:
    """Decode → size filter (when set) → captions → CLIP image and text embed → aesthetic →
    NSFW → image–caption alignment, minus skipped stages (``caption`` skips the three caption
    stages and loads no text tower).

    The decoder follows the CLIP device: DALI or nvJPEG on a GPU when installed, else the CPU
    decoder (``read.decoder`` forces one); ``run.json`` records which one ran.

    ``skip=("embed",)`` also drops every stage that needs embeddings (aesthetic, NSFW,
    semantic dedup), giving a pure ingest → export run.
    """
    skip = set(cfg.run.skip)
    f = cfg.filters
    stages: list[StageLike] = [
        choose_decoder(
            cfg.embed.device if "embed" not in skip else "cpu",
            cfg.read.decoder,
            image_size=cfg.read.image_size,
            max_pixels=cfg.read.max_pixels,
            max_full_decode_pixels=cfg.read.max_full_decode_pixels,
            max_decode_bytes=cfg.read.max_decode_bytes,
            decode_timeout=cfg.read.decode_timeout,
        )
    ]
    if f.min_side > 0 or f.max_aspect_ratio is not None:
        stages.append(ImageSizeFilter(f.min_side, f.max_aspect_ratio, score_only=f.score_only))
    if "embed" in skip:
        return stages
    from pixsieve.stages.captions import CaptionStage, ImageTextFilter, TextEmbedder
    from pixsieve.stages.embed import ClipEmbedder
    from pixsieve.stages.scoring import AestheticFilter, NSFWFilter

    e = cfg.embed
    captions = "caption" not in skip
    if captions:
        stages.append(CaptionStage(f.caption_from))
    clip: dict[str, Any] = {
        "model": e.model,
        "revision": e.revision,
        "device": e.device,
        "precision": e.precision,
        "batch_size": e.batch_size,
    }
    stages.append(ClipEmbedder(**clip, compile=e.compile))
    if captions:  # the same checkpoint, device and precision as the image tower
        stages.append(TextEmbedder(**clip))
    if "aesthetic" not in skip:
        stages.append(
            AestheticFilter(
                min_score=f.aesthetic_min, weights=cfg.models.aesthetic, score_only=f.score_only
            )
        )
    if "nsfw" not in skip:
        stages.append(
            NSFWFilter(max_prob=f.nsfw_max, weights=cfg.models.nsfw, score_only=f.score_only)
        )
    if captions:
        stages.append(ImageTextFilter(f.clip_score_min, f.require_caption, score_only=f.score_only))
    return stages


def semantic_config(cfg: CurateConfig) -> Any:
    """The semantic dedup settings, or ``None`` when it is skipped or there are no embeddings."""
    skip = set(cfg.run.skip)
    if not cfg.dedup.semantic or skip & {"embed", "dedup", "semantic-dedup"}:
        return None
    from pixsieve.dedup import SemanticDedupConfig

    d = cfg.dedup
    return SemanticDedupConfig(
        threshold=d.threshold, keep=d.keep, mode=d.mode, n_clusters=d.n_clusters
    )


def build_pipeline(cfg: CurateConfig) -> Pipeline:
    """The full default pipeline for ``cfg``."""
    skip = set(cfg.run.skip)
    return Pipeline(
        build_stages(cfg),
        exact_dedup=cfg.dedup.exact and "dedup" not in skip,
        semantic_dedup=semantic_config(cfg),
        batch_size=cfg.read.batch_size,
        samples_per_shard=cfg.export.samples_per_shard,
        partition_bytes=cfg.export.partition_bytes,
        retries=cfg.run.retries,
        memory_limit=parse_size(cfg.run.memory_limit) if cfg.run.memory_limit else None,
        against=cfg.dedup.against,
        read_limits=ReadLimits(
            max_sample_bytes=cfg.read.max_sample_bytes,
            max_sidecar_bytes=cfg.read.max_sidecar_bytes,
            max_sample_members=cfg.read.max_sample_members,
            keep_invalid_sidecars=cfg.read.keep_invalid_sidecars,
        ),
        config=cfg.applied(),
    )


_CLIP_OPTION = "CLIP model (--clip-model, [embed] model)"
_CLIP_TEXT_OPTION = "CLIP text tower for caption alignment (--clip-model; --skip caption)"
_HEAD_OPTIONS = {
    "aesthetic": "aesthetic head (--aesthetic-weights, [models] aesthetic)",
    "nsfw": "NSFW head (--nsfw-weights, [models] nsfw)",
}


def _explicit_path(value: str) -> Path | None:
    """``value`` as a local path when it can only mean one (absolute, ``./``, ``~``, file://)."""
    if value.startswith("file://"):
        return Path(unquote(urlsplit(value.partition("#")[0]).path))
    if value.startswith(("./", "../", ".\\", "..\\", "~")) or Path(value).is_absolute():
        return Path(value).expanduser()
    return None


def _resolve(label: str, value: str | None, resolve: Callable[[], Path]) -> Path:
    """Run one hub resolver, turning every failure into a ModelUnavailableError naming ``label``."""
    if value is not None:
        path = _explicit_path(value)
        if path is not None and not path.exists():
            raise ModelUnavailableError(f"{label}: {value} does not exist")
    try:
        return resolve()
    except ModelUnavailableError as e:  # keeps ChecksumError a ChecksumError
        raise type(e)(f"{label}: {e}") from e
    except (FileNotFoundError, ValueError) as e:
        raise ModelUnavailableError(f"{label}: {e}") from e


def preflight(cfg: CurateConfig) -> dict[str, Path]:
    """Resolve every model the run will use, without loading any; return their local paths.

    CLIP and each head not removed by ``run.skip`` is found locally or fetched into the cache
    (and checksummed), exactly as the stages will later do, so a mistyped path, a model missing
    in offline mode or a checksum mismatch fails here, before anything is written to the output.

    Raises:
        ModelUnavailableError: (or its subclass ChecksumError) naming the option at fault.
    """
    skip = set(cfg.run.skip)
    if "embed" in skip:
        return {}
    e = cfg.embed
    clip = _resolve(_CLIP_OPTION, e.model, lambda: hub.resolve_clip(e.model, e.revision))
    if clip.is_dir() and not (clip / "config.json").is_file():
        raise ModelUnavailableError(
            f"{_CLIP_OPTION}: {clip} is not a CLIP model folder (no config.json; "
            "expected the layout save_pretrained writes)"
        )
    resolved = {"clip": clip}
    if "caption" not in skip:
        from pixsieve.models.clip_text import resolve_clip_text

        resolve_text = functools.partial(resolve_clip_text, e.model, e.revision)
        resolved["clip_text"] = _resolve(_CLIP_TEXT_OPTION, e.model, resolve_text)
    heads: tuple[tuple[hub.Kind, str | None], ...] = (
        ("aesthetic", cfg.models.aesthetic),
        ("nsfw", cfg.models.nsfw),
    )
    for kind, value in heads:
        if kind not in skip:
            resolve = functools.partial(hub.resolve_head, value, kind)
            resolved[kind] = _resolve(_HEAD_OPTIONS[kind], value, resolve)
    return resolved


def curate(
    inputs: list[str] | str,
    output: str,
    cfg: CurateConfig | None = None,
    *,
    progress: bool = False,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> RunResult:
    """Run the default pipeline on ``inputs`` into ``output`` (resumes an interrupted run).

    ``storage_options`` (fsspec: ``endpoint_url``, ``key``, ...) add to the config's
    ``[storage] options``. Before anything is written to ``output`` the inputs are listed (a
    typo raises :class:`~pixsieve.errors.InputError` without fetching any model) and every
    model is resolved by :func:`preflight` (an unusable one raises ``ModelUnavailableError``).
    """
    cfg = cfg or CurateConfig()
    storage_options = {**cfg.storage.options, **(storage_options or {})} or None
    shards = discover_shards([inputs] if isinstance(inputs, str) else list(inputs), storage_options)
    preflight(cfg)
    executor_options = {"address": cfg.run.ray_address} if cfg.run.executor == "ray" else {}
    from pixsieve.executors import make_executor

    executor = make_executor(cfg.run.executor, cfg.run.workers, **executor_options)
    return build_pipeline(cfg).run(
        shards,
        output,
        executor,
        storage_options=storage_options,
        progress=progress,
        overwrite=overwrite,
    )
