"""Run configuration: small frozen dataclasses, one per concern, loadable from a file.

A config file (TOML, JSON or YAML) mirrors these sections::

    [read]      image_size, max_pixels, max_full_decode_pixels, batch_size, decoder,
                max_decode_bytes, decode_timeout, max_sample_bytes, max_sidecar_bytes,
                max_sample_members, keep_invalid_sidecars   # docs/limits.md
    [filters]   min_side, max_aspect_ratio, aesthetic_min, nsfw_max, score_only,
                clip_score_min, caption_from, require_caption
    [embed]     model, revision, device, precision, batch_size
    [models]    aesthetic, nsfw          # paths, URLs or pinned names of the head weights
    [dedup]     exact, semantic, threshold, keep, mode, n_clusters, against = ["OUT1", ...]
    [export]    samples_per_shard, partition_bytes
    [run]       executor, workers, retries, skip = ["nsfw", ...], ray_address, memory_limit
    [storage]   options = {...}                # fsspec storage options (endpoint_url, key, ...)

``docs/config.md`` documents every key; ``examples/curate.toml`` is a complete example.
Command-line options override the file; the file overrides these defaults. Every value, from
a file or an override, is checked against its field's type and range; a bad one raises
:class:`ConfigError` naming the section, the key, what was expected and what was given.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pixsieve.config_values import ConfigError, build_section, type_name
from pixsieve.dedup.config import DEFAULT_MODE, DEFAULT_THRESHOLD
from pixsieve.io.decode import (
    DEFAULT_DECODE_TIMEOUT,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_FULL_DECODE_PIXELS,
    DEFAULT_MAX_PIXELS,
)
from pixsieve.io.limits import (
    DEFAULT_MAX_SAMPLE_BYTES,
    DEFAULT_MAX_SAMPLE_MEMBERS,
    DEFAULT_MAX_SIDECAR_BYTES,
)
from pixsieve.stages.captions import ImageTextFilter
from pixsieve.stages.documents import caption_sources
from pixsieve.stages.scoring import AestheticFilter, NSFWFilter

SKIPPABLE = ("embed", "aesthetic", "nsfw", "caption", "dedup", "semantic-dedup")
DECODERS = ("auto", "pillow", "dali", "nvjpeg")
EXECUTORS = ("local", "ray")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ReadConfig:
    """Decoding: model input size, bomb limits, batch size, decoder (auto, pillow, dali, nvjpeg)."""

    image_size: int = 224
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS
    batch_size: int = 256
    decoder: str = "auto"
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT
    max_sample_bytes: int = DEFAULT_MAX_SAMPLE_BYTES
    max_sidecar_bytes: int = DEFAULT_MAX_SIDECAR_BYTES
    max_sample_members: int = DEFAULT_MAX_SAMPLE_MEMBERS
    keep_invalid_sidecars: bool = False


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the built-in filters (size filter off by default).

    ``clip_score_min``, ``caption_from`` and ``require_caption`` set image–caption alignment:
    the least cosine kept, the caption source (``txt``: the ``.txt`` sidecar, else the
    ``.json`` ``caption`` field; or ``json:FIELD``), and whether samples without one are removed.
    """

    min_side: int = 0
    max_aspect_ratio: float | None = None
    aesthetic_min: float = AestheticFilter.default_threshold
    nsfw_max: float = NSFWFilter.default_threshold
    score_only: bool = False
    clip_score_min: float = ImageTextFilter.default_threshold
    caption_from: str = "txt"
    require_caption: bool = False


@dataclass(frozen=True)
class EmbedConfig:
    """CLIP model and inference settings (``None`` = the pinned default / automatic)."""

    model: str | None = None
    revision: str | None = None
    device: str = "auto"
    precision: str | None = None
    batch_size: int = 64
    compile: bool = False


@dataclass(frozen=True)
class ModelsConfig:
    """Head weights: a path, URL or known name; ``None`` = the pinned default."""

    aesthetic: str | None = None
    nsfw: str | None = None


@dataclass(frozen=True)
class DedupConfig:
    """Exact and semantic dedup switches, the semantic settings and the earlier curate
    outputs to deduplicate against (``against``: their kept samples survive, new copies go)."""

    exact: bool = True
    semantic: bool = True
    threshold: float = DEFAULT_THRESHOLD
    keep: str = "aesthetic"
    mode: str = DEFAULT_MODE
    n_clusters: int | None = None
    against: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportConfig:
    """Output shard size and export partitioning."""

    samples_per_shard: int = 1000
    partition_bytes: int = 2 << 30


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes, and which stages to skip."""

    executor: str = "local"
    workers: int | None = None
    retries: int = 1
    skip: tuple[str, ...] = ()
    ray_address: str | None = None
    memory_limit: str | None = None


@dataclass(frozen=True)
class StorageConfig:
    """fsspec storage options for every input and output URL (``endpoint_url``, ``key``, ...)."""

    options: dict[str, Any] = field(default_factory=dict)


SECRET_WORDS = ("secret", "token", "password", "credential", "key")
"""Storage option names holding any of these are written to ``run.json`` as ``<redacted>``."""


def _redact(options: Any) -> Any:
    if not isinstance(options, dict):
        return options
    return {
        k: "<redacted>"
        if any(w in str(k).lower() for w in SECRET_WORDS) and not isinstance(v, dict)
        else _redact(v)
        for k, v in options.items()
    }


@dataclass(frozen=True)
class CurateConfig:
    """Everything ``pixsieve curate`` needs."""

    read: ReadConfig = field(default_factory=ReadConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    run: RunConfig = field(default_factory=RunConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form of every setting, as given and defaulted."""
        return asdict(self)

    def applied(self) -> dict[str, Any]:
        """The settings the run actually uses, for ``run.json``.

        Settings of skipped stages are left out (``--skip embed`` lists no model, threshold
        or semantic-dedup setting), ``dedup.exact``/``dedup.semantic`` say whether each ran,
        and secret-looking storage options (``key``, ``secret``, ``token``...) are redacted.
        """
        out = self.to_dict()
        skip = set(self.run.skip)
        filters, dedup = out["filters"], out["dedup"]
        if "embed" in skip:
            skip |= {"aesthetic", "nsfw", "caption", "semantic-dedup"}
            del out["embed"]
        for head, key in (("aesthetic", "aesthetic_min"), ("nsfw", "nsfw_max")):
            if head in skip:
                del filters[key]
                out.get("models", {}).pop(head, None)
        if "caption" in skip:
            for key in ("clip_score_min", "caption_from", "require_caption"):
                del filters[key]
        if not out.get("models"):
            out.pop("models", None)
        dedup["exact"] = self.dedup.exact and "dedup" not in skip
        dedup["semantic"] = self.dedup.semantic and not skip & {"dedup", "semantic-dedup"}
        if not dedup["against"]:
            del dedup["against"]
        if not dedup["semantic"]:
            for key in ("threshold", "keep", "mode", "n_clusters"):
                del dedup[key]
        out["storage"]["options"] = _redact(out["storage"]["options"])
        return out

    def with_overrides(self, overrides: dict[str, dict[str, Any]]) -> CurateConfig:
        """Return a copy with ``{section: {field: value}}`` applied (``None`` values ignored)."""
        cfg = self
        for section, values in overrides.items():
            values = {k: v for k, v in values.items() if v is not None}
            if values:
                current = getattr(cfg, section)
                merged = {**asdict(current), **values}
                cfg = replace(
                    cfg, **{section: build_section(type(current), merged, where=f"[{section}]")}
                )
        _validate(cfg)
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> CurateConfig:
        """Load a TOML, JSON or YAML file; unknown sections or keys are errors."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from e
        try:
            if p.suffix == ".toml":
                data = tomllib.loads(text)
            elif p.suffix == ".json":
                data = json.loads(text)
            elif p.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                raise ConfigError(f"config file {path} must end in .toml, .json or .yaml")
        except (ValueError, ImportError) as e:
            raise ConfigError(f"cannot parse config file {path}: {e}") from e
        if data is None:  # an empty YAML file
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"config file {path} must hold sections ([read], [run], ...) at its top level, "
                f"got {type_name(data)} {data!r}"
            )
        known = {f.name for f in fields(cls)}
        defaults = cls()
        sections: dict[str, Any] = {}
        for name, values in data.items():
            if name not in known:
                raise ConfigError(
                    f"unknown config section [{name}] in {path}; known: {', '.join(sorted(known))}"
                )
            if values is None:  # a YAML section with no keys
                values = {}
            sections[name] = build_section(
                type(getattr(defaults, name)), values, where=f"{path} [{name}]"
            )
        cfg = cls(**sections)
        try:
            _validate(cfg)
        except ConfigError as e:
            raise ConfigError(f"{path} {e}") from e
        return cfg


def _at_least(section: str, key: str, value: float | None, low: float) -> None:
    if value is not None and not value >= low:  # ``not >=`` also rejects NaN
        raise ConfigError(f"[{section}] {key} must be at least {low}, got {value!r}")


def _one_of(section: str, key: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise ConfigError(f"[{section}] {key} must be one of {', '.join(choices)}, got {value!r}")


def _validate(cfg: CurateConfig) -> None:
    """Check ranges and choices that the field types alone do not capture."""
    from pixsieve.dedup.config import KEEP_POLICIES, MODES, check_threshold

    bad = [s for s in cfg.run.skip if s not in SKIPPABLE]
    if bad:
        raise ConfigError(f"[run] cannot skip {bad}: choose from {', '.join(SKIPPABLE)}")
    _one_of("read", "decoder", cfg.read.decoder, DECODERS)
    _one_of("run", "executor", cfg.run.executor, EXECUTORS)
    _one_of("embed", "precision", cfg.embed.precision, PRECISIONS)
    _one_of("dedup", "keep", cfg.dedup.keep, KEEP_POLICIES)
    _one_of("dedup", "mode", cfg.dedup.mode, MODES)
    _at_least("read", "image_size", cfg.read.image_size, 1)
    _at_least("read", "max_pixels", cfg.read.max_pixels, 1)
    _at_least("read", "max_full_decode_pixels", cfg.read.max_full_decode_pixels, 1)
    _at_least("read", "max_decode_bytes", cfg.read.max_decode_bytes, 1)
    _at_least("read", "decode_timeout", cfg.read.decode_timeout, 0.001)
    _at_least("read", "max_sample_bytes", cfg.read.max_sample_bytes, 1)
    _at_least("read", "max_sidecar_bytes", cfg.read.max_sidecar_bytes, 1)
    _at_least("read", "max_sample_members", cfg.read.max_sample_members, 1)
    _at_least("read", "batch_size", cfg.read.batch_size, 1)
    _at_least("embed", "batch_size", cfg.embed.batch_size, 1)
    _at_least("filters", "min_side", cfg.filters.min_side, 0)
    _at_least("filters", "max_aspect_ratio", cfg.filters.max_aspect_ratio, 1)
    _at_least("dedup", "n_clusters", cfg.dedup.n_clusters, 1)
    _at_least("export", "samples_per_shard", cfg.export.samples_per_shard, 1)
    _at_least("export", "partition_bytes", cfg.export.partition_bytes, 1)
    _at_least("run", "workers", cfg.run.workers, 1)
    _at_least("run", "retries", cfg.run.retries, 0)
    if cfg.run.memory_limit is not None:
        from pixsieve.dedup.memory import parse_size

        try:
            parse_size(cfg.run.memory_limit)
        except ValueError as e:
            raise ConfigError(f"[run] memory_limit: {e}") from None
    for kind in (AestheticFilter, NSFWFilter, ImageTextFilter):  # each checks its threshold
        try:
            kind.checked(getattr(cfg.filters, kind.threshold_key))
        except ValueError as e:
            raise ConfigError(f"[filters] {e}") from e
    try:
        caption_sources(cfg.filters.caption_from)
    except ValueError as e:
        raise ConfigError(f"[filters] caption_from: {e}") from None
    if cfg.dedup.threshold is not None:
        try:
            check_threshold(cfg.dedup.threshold)
        except ValueError as e:
            raise ConfigError(f"[dedup] {e}") from e
