"""The dedup index: what a ``pixsieve dedup`` output keeps so later runs can dedup against it.

Layout (version :data:`INDEX_VERSION`) under ``OUT/index/``:

* ``index.json``: version, run id, settings (dimension, threshold and its meaning, mode, keep
  policy, border rule, model id when given), cluster and bucket counts, kept counts and the
  earlier runs this one was deduplicated against (``parents``: run id and absolute path);
* ``centroids.npy``: the ``(k, D)`` unit centroids every kept item was assigned to (an earlier
  run's set followed by extra ones after ``recluster``: runs share centroids up to a prefix);
* ``radius.npy``: per cluster, the lowest cosine of a primary member to its centroid (the
  cluster's radius as a similarity; ``inf`` for an empty cluster);
* ``members.npy``: ``(2, k)``, per cluster the kept memberships and kept primaries (what a
  later run's cross search costs per cluster, without reading every part);
* ``kept/bBBBB.parquet``: every membership of every item this run *kept* (its own cluster and
  its border clusters) in bucket ``b`` (clusters ``c`` with ``c * buckets // k == b``), sorted
  by cluster, primaries first, then by ``centroid_sim``: ``row`` (the item's row in this run),
  ``cluster``, ``secondary``, ``centroid_sim`` (float32 cosine of the item to that cluster's
  centroid), ``file`` and ``item`` (its input file and place in that file's ``ids/`` store),
  so a later run's window in a cluster is one slice of one file;
* ``vectors/bBBBB.i8.npy``: their unit embeddings in the same order as int8 rows, what a later
  run searches in (:mod:`pixsieve.dedup.windowstore`, :mod:`pixsieve.dedup.quant`: a quarter of
  the float32 bytes), and ``vectors/bBBBB.i8s.npy`` ``(rows, 2)`` float32, each row's scale and
  error bound;
* ``ids/fFFFFF.parquet``: ``row`` and ``id`` (string) of the kept items of input file ``F``,
  by row, and ``ids/fFFFFF.f32.npy`` their unit float32 embeddings (each item once): a later
  run reads ids only for matched items, and rereads the rows its int8 search found near the
  threshold in float32, so every match is exact.

Version 5 had a float16 copy (``vectors/bBBBB.f16.npy``) where version 6 has the int8 one.
Versions 3 and 4 had one part per input file and bucket (``kept/bBBBB/fFFFFF.parquet`` with
an ``id`` column, ``vectors/bBBBB/fFFFFF.f32.npy``; version 3 also an unused float16 copy):
a later run's window was up to one slice per input file, and their metadata was read from
every file. They are still read (:func:`bucket_parts`, :func:`part_ids`). The index is
written by :mod:`pixsieve.dedup.indexwrite`.

An index holds only the items its own run kept; the kept items of the runs it was deduplicated
against live in theirs (``parents``), so ``--against OUT`` brings in OUT's whole history.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pixsieve.dedup.config import SemanticDedupConfig
from pixsieve.dedup.sources import InputError
from pixsieve.io.localcopy import local_copy

INDEX_DIR: str = "index"
INDEX_FILE: str = "index.json"
INDEX_VERSION: int = 6
#: Index versions this pixsieve reads (3 and 4: one part per input file and bucket, ids in the
#: parts; 3 also has an unused float16 store; 5: a float16 search store).
READABLE_VERSIONS: tuple[int, ...] = (3, 4, 5, 6)
#: Every entry of an index directory; ``index.json`` last (an index without it is not one).
INDEX_ENTRIES: tuple[str, ...] = (
    "kept",
    "vectors",
    "ids",
    "centroids.npy",
    "radius.npy",
    "members.npy",
    INDEX_FILE,
)
#: The columns of a version 5 or 6 ``kept/bBBBB.parquet`` (see the module docs).
KEPT_SCHEMA: pa.Schema = pa.schema(
    [
        ("row", pa.int64()),
        ("cluster", pa.int32()),
        ("secondary", pa.bool_()),
        ("centroid_sim", pa.float32()),
        ("file", pa.int32()),
        ("item", pa.int64()),
    ]
)
#: What the threshold means; an index of another meaning is refused.
THRESHOLD_SEMANTICS: str = "cosine_at_least"


@dataclass(frozen=True)
class EarlierRun:
    """One earlier dedup output opened as an index.

    Attributes:
        run_id: its run id (named in ``duplicate_of_run``).
        path: its output directory (or a local copy of its index: an output elsewhere).
        meta: its ``index.json``.
        name: its URL, for an output elsewhere (recorded in ``parents``; else ``path``).
    """

    run_id: str
    path: str
    meta: dict[str, Any]
    name: str = ""

    @property
    def label(self) -> str:
        """The name a run records for it."""
        return self.name or self.path

    @property
    def kept_dir(self) -> Path:
        """Its ``index/kept`` directory."""
        return Path(self.path) / INDEX_DIR / "kept"

    @property
    def buckets(self) -> int:
        """Its bucket count (bucket of cluster ``c``: ``c * buckets // clusters``)."""
        return int(self.meta["buckets"])


def new_run_id(out: Path) -> str:
    """A run id: the output directory's name and 8 random hex digits."""
    return f"{out.name}-{uuid.uuid4().hex[:8]}"


def settings(config: SemanticDedupConfig, dim: int, model: str | None) -> dict[str, Any]:
    """The settings an index records and a later run is checked against."""
    return {
        "dim": dim,
        "threshold": config.threshold,
        "threshold_semantics": THRESHOLD_SEMANTICS,
        "mode": config.mode,
        "keep": config.keep,
        "border_candidates": config.border_candidates,
        "border_slack": config.border_slack,
        "model": model,
    }


def _open(path: str | Path) -> EarlierRun:
    fs, root = url_to_fs(str(path))
    if not fs.exists(f"{root}/{INDEX_DIR}/{INDEX_FILE}"):
        raise InputError(f"--against {path}: no dedup index ({INDEX_DIR}/{INDEX_FILE}) there")
    name = ""
    if not isinstance(fs, LocalFileSystem):  # read from a local copy, named by its URL
        stamp = f"{INDEX_DIR}/{INDEX_FILE}"  # written last
        root, name = str(local_copy(str(path), (INDEX_DIR,), stamp)), str(path)
    folder = Path(root)
    meta = json.loads((folder / INDEX_DIR / INDEX_FILE).read_text())
    if meta.get("version") not in READABLE_VERSIONS:
        *rest, last = map(str, READABLE_VERSIONS)
        readable = f"{', '.join(rest)} and {last}" if rest else last
        raise InputError(
            f"--against {path}: index version {meta.get('version')}, this pixsieve reads "
            f"versions {readable} (rerun that dedup to rebuild its index)"
        )
    run = EarlierRun(run_id=meta["run_id"], path=str(folder.resolve()), meta=meta, name=name)
    stores = [window_path(p) for p in all_parts(run.kept_dir)]
    stores += [scale_path(p) for p in stores if p.name.endswith(".i8.npy")]
    files = sorted((folder / INDEX_DIR).glob("ids/f*.parquet"))
    stores += [items_path(folder / INDEX_DIR, int(p.stem[1:])) for p in files]
    missing = [p for p in stores if not p.exists()]
    if missing:
        raise InputError(
            f"--against {path}: index damaged: {len(missing)} embedding store(s) missing, "
            f"e.g. {missing[0]} (rerun that dedup to rebuild its index)"
        )
    return run


def open_earlier(paths: list[str | Path]) -> list[EarlierRun]:
    """The runs named by ``--against`` and, recursively, the runs they were deduplicated
    against (each once, first named first).

    Raises:
        InputError: a path without an index, an unknown version, a parent run moved away.
    """
    runs: dict[str, EarlierRun] = {}
    todo = list(paths)
    while todo:
        run = _open(todo.pop(0))
        if run.run_id in runs:
            continue
        runs[run.run_id] = run
        for parent in run.meta.get("parents", []):
            if parent["run_id"] not in runs:
                fs, root = url_to_fs(str(parent["path"]))
                if not fs.exists(f"{root}/{INDEX_DIR}/{INDEX_FILE}"):
                    raise InputError(
                        f"--against {run.label}: its earlier run {parent['path']} is gone; "
                        "name its new place with another --against"
                    )
                todo.append(parent["path"])
    return list(runs.values())


def check_settings(runs: list[EarlierRun], mine: dict[str, Any]) -> np.ndarray:
    """Check that this run's settings fit every earlier run; return their shared centroids.

    The earlier runs' centroid sets must be prefixes of one another (a ``recluster`` run
    appends centroids to its earlier runs' set); the longest is returned.

    Raises:
        InputError: one line naming the setting and both values.
    """
    sets = []
    for run in runs:
        theirs = run.meta["settings"]
        name = f"--against {run.path}"
        if theirs["threshold_semantics"] != mine["threshold_semantics"]:
            raise InputError(
                f"{name}: threshold means {theirs['threshold_semantics']!r} there, "
                f"{mine['threshold_semantics']!r} here"
            )
        if theirs["dim"] != mine["dim"]:
            raise InputError(f"{name}: embeddings of dimension {theirs['dim']}, here {mine['dim']}")
        if theirs.get("model") and mine.get("model") and theirs["model"] != mine["model"]:
            raise InputError(f"{name}: model {theirs['model']!r} there, {mine['model']!r} here")
        if theirs["mode"] != mine["mode"]:
            raise InputError(f"{name}: mode {theirs['mode']!r} there, {mine['mode']!r} here")
        if mine["threshold"] < theirs["threshold"]:
            raise InputError(
                f"{name}: threshold {mine['threshold']:g} is below that run's "
                f"{theirs['threshold']:g} (its border memberships would miss pairs)"
            )
        sets.append(np.load(Path(run.path) / INDEX_DIR / "centroids.npy"))
    longest = max(range(len(sets)), key=lambda i: len(sets[i]))
    centroids = sets[longest]
    for run, c in zip(runs, sets, strict=True):
        if c.shape[1:] != centroids.shape[1:] or not np.array_equal(c, centroids[: len(c)]):
            raise InputError(
                f"--against {run.path}: clustered independently of {runs[longest].path}; runs "
                "deduplicated against each other share one set of centroids"
            )
    return centroids


def earlier_radius(runs: list[EarlierRun], clusters: int | None = None) -> np.ndarray:
    """Per cluster (``clusters``, default the most of any run), the lowest radius (as a
    cosine) over the earlier runs (``inf`` for clusters a run does not have)."""
    radii = [np.load(Path(r.path) / INDEX_DIR / "radius.npy") for r in runs]
    out = np.full(clusters or max(len(r) for r in radii), np.inf)
    for radius in radii:
        out[: len(radius)] = np.minimum(out[: len(radius)], radius)
    return out


def bucket_parts(kept_dir: Path, bucket: int) -> list[Path]:
    """The index parts of one bucket: ``kept/bBBBB.parquet`` (versions 5 and 6) or
    ``kept/bBBBB/fFFFFF.parquet``, one per input file (versions 3 and 4)."""
    single = kept_dir / f"b{bucket:04d}.parquet"
    if single.exists():
        return [single]
    return sorted((kept_dir / f"b{bucket:04d}").glob("f*.parquet"))


def all_parts(kept_dir: Path) -> list[Path]:
    """Every index part of ``kept_dir`` (any version)."""
    return sorted([*kept_dir.glob("b*.parquet"), *kept_dir.glob("b*/f*.parquet")])


def int8_path(kept_part: Path) -> Path:
    """``vectors/bBBBB.i8.npy`` beside ``kept/bBBBB.parquet``: the part's int8 search store."""
    return kept_part.parents[1] / "vectors" / f"{kept_part.stem}.i8.npy"


def window_path(kept_part: Path) -> Path:
    """The embedding store a later run searches in for an index part: :func:`int8_path`
    (version 6), ``vectors/bBBBB.f16.npy`` (5), ``vectors/bBBBB/fFFFFF.f32.npy`` (3 and 4)."""
    if kept_part.parent.name == "kept":
        half = kept_part.parents[1] / "vectors" / f"{kept_part.stem}.f16.npy"
        return half if half.exists() else int8_path(kept_part)
    return kept_part.parents[2] / "vectors" / kept_part.parent.name / f"{kept_part.stem}.f32.npy"


def scale_path(int8_store: Path) -> Path:
    """``vectors/bBBBB.i8s.npy``: the scales and error bounds of an int8 store's rows."""
    return int8_store.with_name(int8_store.name.replace(".i8.npy", ".i8s.npy"))


def ids_path(index_dir: Path, file: int) -> Path:
    """``ids/fFFFFF.parquet`` of a version 5 or 6 index: ``row`` and ``id`` of input file ``file``'s
    kept items, by row."""
    return index_dir / "ids" / f"f{file:05d}.parquet"


def items_path(index_dir: Path, file: int) -> Path:
    """``ids/fFFFFF.f32.npy``: the unit float32 embeddings of those items, same order."""
    return index_dir / "ids" / f"f{file:05d}.f32.npy"


def part_ids(hits: list[tuple[Path, np.ndarray]]) -> list[pa.Array]:
    """The ids (strings) of rows ``pos`` of each index part of ``hits`` = ``[(part, pos)]``:
    from the part's ``id`` column (versions 3 and 4), or by its ``file`` and ``item`` columns
    from ``ids/fFFFFF.parquet`` (versions 5 and 6; each ids file read once for all the hits)."""
    out: list[pa.Array] = [pa.array([], pa.string())] * len(hits)
    wanted: dict[tuple[Path, int], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for n, (part, pos) in enumerate(hits):
        meta = pq.ParquetFile(part)
        if "id" in meta.schema_arrow.names:
            out[n] = meta.read(columns=["id"]).column("id").combine_chunks().take(pa.array(pos))
            continue
        table = meta.read(columns=["file", "item"])
        file, item = table.column("file").to_numpy()[pos], table.column("item").to_numpy()[pos]
        for f in np.unique(file).tolist():
            mine = np.flatnonzero(file == f)
            wanted.setdefault((part.parents[1], f), []).append((n, mine, item[mine]))
    pieces: dict[int, list[tuple[np.ndarray, pa.Array]]] = {}
    for (folder, f), items in wanted.items():
        ids = pq.ParquetFile(ids_path(folder, f)).read(columns=["id"]).column("id")
        for n, mine, item in items:
            pieces.setdefault(n, []).append((mine, ids.take(pa.array(item)).combine_chunks()))
    for n, got in pieces.items():
        back = np.argsort(np.concatenate([mine for mine, _ in got]))  # back to pos's order
        out[n] = pa.concat_arrays([ids for _, ids in got]).take(pa.array(back))
    return out
