"""Run configuration: small frozen dataclasses, one per concern, loadable from a file.

A config file (TOML, JSON or YAML) mirrors these sections::

    [read]      image_size, max_pixels, max_full_decode_pixels, batch_size, decoder
    [filters]   min_side, max_aspect_ratio, aesthetic_min, nsfw_max, score_only
    [embed]     model, revision, device, precision, batch_size
    [models]    aesthetic, nsfw          # paths, URLs or pinned names of the head weights
    [dedup]     exact, semantic, threshold, keep, mode, n_clusters
    [export]    samples_per_shard, partition_bytes
    [run]       executor, workers, retries, skip = ["nsfw", ...]

Command-line options override the file; the file overrides these defaults. Every value, from
a file or an override, is checked against its field's type and range; a bad one raises
:class:`ConfigError` naming the section, the key, what was expected and what was given.
"""

from __future__ import annotations

import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
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
    mode: str | None = None  # None: pixsieve.dedup's default (witness)
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
                current = getattr(cfg, section)
                merged = {**asdict(current), **values}
                cfg = replace(cfg, **{section: _build(type(current), merged, where=f"[{section}]")})
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
                f"got {_type_name(data)} {data!r}"
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
            sections[name] = _build(type(getattr(defaults, name)), values, where=f"{path} [{name}]")
        cfg = cls(**sections)
        try:
            _validate(cfg)
        except ConfigError as e:
            raise ConfigError(f"{path} {e}") from e
        return cfg


def _type_name(value: Any) -> str:
    return "list" if isinstance(value, list | tuple) else type(value).__name__


def _describe(annotation: Any) -> str:
    """Human words for a field's annotation: ``int | None`` → ``an integer (or unset)``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        words = " or ".join(_describe(a) for a in args if a is not type(None))
        return f"{words} (or unset)" if type(None) in args else words
    if typing.get_origin(annotation) is tuple:
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, str(annotation)
    )


def _coerce(value: Any, annotation: Any) -> tuple[bool, Any]:
    """``(ok, value)``: whether ``value`` fits ``annotation``, and its stored form."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is not type(None):
                ok, out = _coerce(value, arg)
                if ok:
                    return True, out
        return False, value
    if origin is tuple:  # tuple[str, ...]: a list or tuple of the item type
        (item, *_rest) = typing.get_args(annotation)
        if not isinstance(value, list | tuple):
            return False, value
        items = [_coerce(v, item) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    return isinstance(value, annotation), value


def _build(kind: type, values: Any, where: str = "config") -> Any:
    """Build section dataclass ``kind`` from ``values``, checking every key and value type."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{where} must be a table of key = value settings, got {_type_name(values)} {values!r}"
        )
    names = {f.name for f in fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown, key=str)} in {where}; known: {sorted(names)}"
        )
    hints = typing.get_type_hints(kind)
    checked: dict[str, Any] = {}
    for key, value in values.items():
        ok, checked[key] = _coerce(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{where} {key} must be {_describe(hints[key])}, got {_type_name(value)} {value!r}"
            )
    return kind(**checked)


def _at_least(section: str, key: str, value: float | None, low: float) -> None:
    if value is not None and not value >= low:  # ``not >=`` also rejects NaN
        raise ConfigError(f"[{section}] {key} must be at least {low}, got {value!r}")


def _one_of(section: str, key: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise ConfigError(f"[{section}] {key} must be one of {', '.join(choices)}, got {value!r}")


def _validate(cfg: CurateConfig) -> None:
    """Check ranges and choices that the field types alone do not capture."""
    from pixsieve.dedup.config import KEEP_POLICIES, MODES

    bad = [s for s in cfg.run.skip if s not in SKIPPABLE]
    if bad:
        raise ConfigError(f"[run] cannot skip {bad}: choose from {', '.join(SKIPPABLE)}")
    _one_of("read", "decoder", cfg.read.decoder, ("auto", "pillow", "dali", "nvjpeg"))
    _one_of("run", "executor", cfg.run.executor, ("local", "ray"))
    _one_of("embed", "precision", cfg.embed.precision, ("fp32", "bf16", "fp16"))
    _one_of("dedup", "keep", cfg.dedup.keep, KEEP_POLICIES)
    _one_of("dedup", "mode", cfg.dedup.mode, MODES)
    _at_least("read", "image_size", cfg.read.image_size, 1)
    _at_least("read", "max_pixels", cfg.read.max_pixels, 1)
    _at_least("read", "max_full_decode_pixels", cfg.read.max_full_decode_pixels, 1)
    _at_least("read", "batch_size", cfg.read.batch_size, 1)
    _at_least("embed", "batch_size", cfg.embed.batch_size, 1)
    _at_least("filters", "min_side", cfg.filters.min_side, 0)
    _at_least("filters", "max_aspect_ratio", cfg.filters.max_aspect_ratio, 1)
    _at_least("dedup", "n_clusters", cfg.dedup.n_clusters, 1)
    _at_least("export", "samples_per_shard", cfg.export.samples_per_shard, 1)
    _at_least("export", "partition_bytes", cfg.export.partition_bytes, 1)
    _at_least("run", "workers", cfg.run.workers, 1)
    _at_least("run", "retries", cfg.run.retries, 0)
    if math.isnan(cfg.filters.aesthetic_min):
        raise ConfigError("[filters] aesthetic_min must be a number, got nan")
    if not 0.0 <= cfg.filters.nsfw_max <= 1.0:
        raise ConfigError(
            f"[filters] nsfw_max is a probability between 0 and 1, got {cfg.filters.nsfw_max!r}"
        )
    threshold = cfg.dedup.threshold
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ConfigError(f"[dedup] threshold is a cosine similarity in (0, 1], got {threshold!r}")
