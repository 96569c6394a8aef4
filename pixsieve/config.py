"""Run configuration: small frozen dataclasses, one per concern, loadable from a file.

A config file (TOML, JSON or YAML) mirrors these sections::

    [read]      image_size, max_pixels, max_full_decode_pixels, batch_size, decoder
    [filters]   min_side, max_aspect_ratio, aesthetic_min, nsfw_max, score_only
    [embed]     model, revision, device, precision, batch_size
    [models]    aesthetic, nsfw          # paths, URLs or pinned names of the head weights
    [dedup]     exact, semantic, threshold, keep, mode, n_clusters
    [export]    samples_per_shard, partition_bytes
    [run]       executor, workers, retries, skip = ["nsfw", ...]

Command-line options override the file; the file overrides these defaults.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pixsieve.io.decode import DEFAULT_MAX_FULL_DECODE_PIXELS, DEFAULT_MAX_PIXELS

SKIPPABLE = ("embed", "aesthetic", "nsfw", "dedup", "semantic-dedup")
DEFAULT_AESTHETIC_MIN = 4.5
DEFAULT_NSFW_MAX = 0.5


class ConfigError(ValueError):
    """A configuration file or value is unusable."""


@dataclass(frozen=True)
class ReadConfig:
    """Decoding: model input size, bomb limits, batch size, decoder (auto, pillow, dali, nvjpeg)."""

    image_size: int = 224
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_full_decode_pixels: int = DEFAULT_MAX_FULL_DECODE_PIXELS
    batch_size: int = 256
    decoder: str = "auto"


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the built-in filters (size filter off by default)."""

    min_side: int = 0
    max_aspect_ratio: float | None = None
    aesthetic_min: float = DEFAULT_AESTHETIC_MIN
    nsfw_max: float = DEFAULT_NSFW_MAX
    score_only: bool = False


@dataclass(frozen=True)
class EmbedConfig:
    """CLIP model and inference settings (``None`` = the pinned default / automatic)."""

    model: str | None = None
    revision: str | None = None
    device: str = "auto"
    precision: str | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class ModelsConfig:
    """Head weights: a path, URL or known name; ``None`` = the pinned default."""

    aesthetic: str | None = None
    nsfw: str | None = None


@dataclass(frozen=True)
class DedupConfig:
    """Exact and semantic dedup switches and the semantic settings."""

    exact: bool = True
    semantic: bool = True
    threshold: float | None = None
    keep: str = "aesthetic"
    mode: str = "components"
    n_clusters: int | None = None


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

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for ``run.json``."""
        return asdict(self)

    def with_overrides(self, overrides: dict[str, dict[str, Any]]) -> CurateConfig:
        """Return a copy with ``{section: {field: value}}`` applied (``None`` values ignored)."""
        cfg = self
        for section, values in overrides.items():
            values = {k: v for k, v in values.items() if v is not None}
            if values:
                cfg = replace(
                    cfg,
                    **{
                        section: _build(
                            type(getattr(cfg, section)), {**asdict(getattr(cfg, section)), **values}
                        )
                    },
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
        known = {f.name: f for f in fields(cls)}
        sections: dict[str, Any] = {}
        for name, values in data.items():
            if name not in known or not isinstance(values, dict):
                raise ConfigError(f"unknown config section [{name}] in {path}")
            sections[name] = _build(type(getattr(cls(), name)), values, where=f"{path} [{name}]")
        cfg = cls(**sections)
        _validate(cfg)
        return cfg


def _build(kind: type, values: dict[str, Any], where: str = "config") -> Any:
    names = {f.name for f in fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; known: {sorted(names)}")
    if "skip" in values:
        values = {**values, "skip": tuple(values["skip"])}
    return kind(**values)


def _validate(cfg: CurateConfig) -> None:
    bad = [s for s in cfg.run.skip if s not in SKIPPABLE]
    if bad:
        raise ConfigError(f"cannot skip {bad}: choose from {', '.join(SKIPPABLE)}")
    if cfg.export.samples_per_shard < 1:
        raise ConfigError("samples_per_shard must be at least 1")
    if cfg.read.decoder not in ("auto", "pillow", "dali", "nvjpeg"):
        raise ConfigError(f"unknown decoder {cfg.read.decoder!r}: auto, pillow, dali or nvjpeg")
    if cfg.run.executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {cfg.run.executor!r}: choose local or ray")
    if not 0.0 <= cfg.filters.nsfw_max <= 1.0:
        raise ConfigError("nsfw_max is a probability between 0 and 1")
    if cfg.dedup.threshold is not None and not 0.0 < cfg.dedup.threshold <= 1.0:
        raise ConfigError("the dedup threshold is a cosine similarity in (0, 1]")
