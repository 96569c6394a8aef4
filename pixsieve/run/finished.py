"""Open a finished run directory read-only and answer what the report tools ask of it.

Everything here reads what a run already wrote (``run.json``, ``cache/fingerprint.json``, the
manifest and the per-shard caches); nothing is created, so pointing a command at a wrong path
fails with :class:`RunError` instead of leaving an empty directory behind.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pixsieve.io.shards import ShardRef
from pixsieve.run.layout import RunLayout
from pixsieve.stages.base import ScoreFilter


class RunError(Exception):
    """A path is not a finished pixsieve run, or lacks what a command needs (a user error)."""


@dataclass
class FinishedRun:
    """A finished run: its layout, ``run.json`` record and input fingerprint."""

    layout: RunLayout
    record: dict[str, Any]
    fingerprint: dict[str, Any]
    storage_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, output: str, storage_options: dict[str, Any] | None = None) -> FinishedRun:
        """Open ``output``; raise :class:`RunError` unless it holds a finished run."""
        try:
            fs, root = url_to_fs(output, **(storage_options or {}))
        except (ImportError, ValueError) as e:
            raise RunError(f"cannot open {output!r}: {e}") from e
        root = root.rstrip("/") or "/"
        layout = RunLayout(fs=fs, root=root, url=output)
        if not fs.isdir(root):
            raise RunError(f"{output} is not a directory")
        try:
            record = layout.read_json(layout.run_json())
        except (ValueError, OSError) as e:
            raise RunError(f"{output}/run.json is unreadable: {e}") from e
        if record is None or not fs.exists(layout.manifest_dir()):
            raise RunError(
                f"{output} is not a finished pixsieve run (no run.json or manifest/); "
                "run `pixsieve curate` first, or finish it by running it again"
            )
        saved = layout.read_json(layout.fingerprint()) or {}
        return cls(
            layout=layout,
            record=record,
            fingerprint=saved.get("fingerprint") or {},
            storage_options=dict(storage_options or {}),
        )

    @property
    def url(self) -> str:
        """The run directory as given."""
        return self.layout.url

    @property
    def shards(self) -> list[ShardRef]:
        """The input shards, in input order (their index names the cache files)."""
        inputs = self.fingerprint.get("inputs")
        if not inputs:
            raise RunError(f"{self.url} has no cache/fingerprint.json: its inputs are unknown")
        return [ShardRef(str(url), int(size)) for url, size in inputs]

    def url_of(self, *parts: str) -> str:
        """Full URL (with protocol) of a path inside the run, for readers that open URLs."""
        return str(self.layout.fs.unstrip_protocol(self.layout.path(*parts)))

    def manifest(self) -> ds.Dataset:
        """The manifest as a lazy Arrow dataset (read only the columns you need).

        Every part has the run's one manifest schema (``pixsieve.io.schemas``); the parts'
        schemas are still united, so a run written before schemas were fixed reads too.
        """
        path, fs = self.layout.manifest_dir(), self.layout.fs
        dataset = ds.dataset(path, filesystem=fs, format="parquet")
        schemas = [f.physical_schema for f in dataset.get_fragments()]
        if not schemas:
            raise RunError(f"{self.url}/manifest holds no parts")
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        return ds.dataset(path, filesystem=fs, format="parquet", schema=schema)

    def require_cache(self) -> None:
        """Raise :class:`RunError` when the per-sample caches are gone."""
        if not self.layout.fs.exists(self.layout.samples_dir()):
            raise RunError(
                f"{self.url} has no cache/samples/: the cached scores and embeddings were "
                "deleted, so thresholds cannot be changed without re-running"
            )

    def has_cached(self, column: str) -> bool:
        """True when some per-shard cache holds a value in ``column`` (e.g. ``embedding``).

        Every cache has every column of the run's schema; a column no stage filled is null.
        """
        for i in range(len(self.shards)):
            path = self.layout.samples(i)
            if self.layout.fs.exists(path):
                with self.layout.fs.open(path, "rb") as f:
                    pf = pq.ParquetFile(f)
                    if column not in pf.schema_arrow.names:
                        continue
                    values = pf.read(columns=[column])[column]
                    if values.null_count < len(values):
                        return True
        return False

    def stage_settings(self, name: str) -> dict[str, Any] | None:
        """Settings of the stage called ``name`` as recorded in ``run.json`` (``None``: absent)."""
        for stage in self.record.get("stages") or []:
            if stage.get("name") == name:
                return dict(stage.get("settings") or {})
        return None

    def stage_order(self) -> list[str]:
        """Stage names in the order they ran."""
        return [str(s.get("name")) for s in self.record.get("stages") or []]

    def score_filters(self) -> list[type[ScoreFilter]]:
        """The :class:`~pixsieve.stages.base.ScoreFilter` classes that ran, in stage order.

        Found from the class each ``run.json`` stage record names; a class that cannot be
        imported here is not a score filter to this run (its decisions stand as they are).
        """
        out: list[type[ScoreFilter]] = []
        for stage in self.record.get("stages") or []:
            kind = _import_class(str(stage.get("class") or ""))
            is_filter = isinstance(kind, type) and issubclass(kind, ScoreFilter)
            if is_filter and kind not in out and stage.get("name") == kind.name:
                out.append(kind)
        return out

    def threshold(self, kind: type[ScoreFilter]) -> float | None:
        """The threshold the run used for score filter ``kind`` (``None``: it did not run)."""
        settings = self.stage_settings(kind.name)
        if settings is None:
            return None
        value = settings.get(kind.threshold_setting)
        return None if value is None else float(value)

    def score_only(self, name: str) -> bool:
        """True when stage ``name`` only recorded scores and removed nothing."""
        return bool((self.stage_settings(name) or {}).get("score_only", False))

    @property
    def semantic_ran(self) -> bool:
        """True when the run deduplicated semantically."""
        return self.record.get("semantic_dedup") is not None

    def semantic_config(self) -> Any:
        """The run's :class:`~pixsieve.dedup.SemanticDedupConfig`, or ``None`` when none ran."""
        if not self.semantic_ran:
            return None
        from pixsieve.dedup import SemanticDedupConfig

        saved = self.fingerprint.get("semantic_dedup")
        kwargs = saved if isinstance(saved, dict) else self.record.get("semantic_dedup_config")
        if not isinstance(kwargs, dict):
            raise RunError(f"cannot recover the semantic dedup settings of {self.url}")
        names = {f.name for f in dataclasses.fields(SemanticDedupConfig)}
        return SemanticDedupConfig(**{k: v for k, v in kwargs.items() if k in names})

    def totals(self) -> dict[str, int]:
        """``run.json`` totals (``input``, ``kept``, ``removed``, ``error``)."""
        return dict(self.record.get("totals") or {})


def _import_class(path: str) -> Any:
    """The object ``module.Qual.Name`` names, or ``None`` when it cannot be imported."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # not a module (or a broken one): try a shorter prefix
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name, None)
        return obj
    return None
