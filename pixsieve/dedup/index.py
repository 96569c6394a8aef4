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
* ``kept/bBBBB/fFFFFF.parquet``: every membership of every item this run *kept* (its own
  cluster and its border clusters), bucket ``b`` holding clusters ``c`` with
  ``c * buckets // k == b``, sorted by cluster, primaries first, then by ``centroid_sim``:
  ``id`` (string), ``row`` (the item's row in this run), ``cluster``, ``secondary`` and
  ``centroid_sim`` (float32 cosine of the item to that cluster's centroid);
* ``vectors/bBBBB/fFFFFF.f32.npy``: their unit float32 embeddings in the same order (a later
  run reads, with positioned reads, only the rows its windows need). Version 3 also wrote a
  float16 copy for the candidate search; converting it cost more than reading float32, so
  version 4 reads (and writes) float32 only and reads version 3 indexes as they are.

An index holds only the items its own run kept; the kept items of the runs it was deduplicated
against live in theirs (``parents``), so ``--against OUT`` brings in OUT's whole history.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixsieve.dedup.config import SemanticDedupConfig
from pixsieve.dedup.packing import read_rows
from pixsieve.dedup.sources import InputError, Source, read_ids

INDEX_DIR: str = "index"
INDEX_FILE: str = "index.json"
INDEX_VERSION: int = 4
#: Index versions this pixsieve reads (version 3 differs only by an unused float16 store).
READABLE_VERSIONS: tuple[int, ...] = (3, 4)
#: Every entry of an index directory; ``index.json`` last (an index without it is not one).
INDEX_ENTRIES: tuple[str, ...] = (
    "kept",
    "vectors",
    "centroids.npy",
    "radius.npy",
    "members.npy",
    INDEX_FILE,
)
#: What the threshold means; an index of another meaning is refused.
THRESHOLD_SEMANTICS: str = "cosine_at_least"


@dataclass(frozen=True)
class EarlierRun:
    """One earlier dedup output opened as an index.

    Attributes:
        run_id: its run id (named in ``duplicate_of_run``).
        path: its output directory.
        meta: its ``index.json``.
    """

    run_id: str
    path: str
    meta: dict[str, Any]

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
    folder = Path(path)
    meta_path = folder / INDEX_DIR / INDEX_FILE
    if not meta_path.exists():
        raise InputError(f"--against {path}: no dedup index ({INDEX_DIR}/{INDEX_FILE}) there")
    meta = json.loads(meta_path.read_text())
    if meta.get("version") not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise InputError(
            f"--against {path}: index version {meta.get('version')}, this pixsieve reads "
            f"versions {readable} (rerun that dedup to rebuild its index)"
        )
    run = EarlierRun(run_id=meta["run_id"], path=str(folder.resolve()), meta=meta)
    missing = [p for p in run.kept_dir.glob("b*/f*.parquet") if not vectors_path(p).exists()]
    if missing:
        raise InputError(
            f"--against {path}: index damaged: {len(missing)} part(s) without their float32 "
            f"store, e.g. {vectors_path(missing[0])} (rerun that dedup to rebuild its index)"
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
                if not (Path(parent["path"]) / INDEX_DIR / INDEX_FILE).exists():
                    raise InputError(
                        f"--against {run.path}: its earlier run {parent['path']} is gone; "
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


def vectors_path(kept_part: Path) -> Path:
    """The float32 embedding store beside ``kept/bBBBB/fFFFFF.parquet``."""
    return kept_part.parents[2] / "vectors" / kept_part.parent.name / f"{kept_part.stem}.f32.npy"


def _save(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, x)
    tmp.rename(path)


def index_file(
    work: str, out: str, source: Source, index: int, id_column: str, removed: np.ndarray
) -> int:
    """Write the memberships of the kept rows of one input file into ``OUT/index/kept`` and
    their embeddings into ``OUT/index/vectors`` (sorted by cluster, primaries first).

    ``removed``: sorted global rows of this file that were removed. Returns rows kept.
    """
    done = Path(out) / INDEX_DIR / "kept" / f".f{index:05d}.done"
    if done.exists():
        return int(done.read_text())
    ids = read_ids(source.path, id_column)
    centroids = np.load(Path(work) / "centroids.npy")
    kept_rows = 0
    members = np.zeros((2, len(centroids)), np.int64)  # memberships, primaries
    for part in sorted((Path(work) / "assign" / f"f{index:05d}").glob("b*.parquet")):
        table = pq.ParquetFile(part).read(columns=["row", "cluster", "secondary"])
        row = table.column("row").to_numpy()
        cluster = table.column("cluster").to_numpy()
        secondary = table.column("secondary").to_numpy(zero_copy_only=False)
        keep = np.flatnonzero(~np.isin(row, removed))
        x = read_rows(part, centroids.shape[1])
        del table  # one copy of the embeddings at a time, then the kept ones in their order
        sim = np.einsum("ij,ij->i", x, centroids[cluster])
        keep = keep[np.lexsort((sim[keep], secondary[keep], cluster[keep]))]
        x, sim = x[keep], sim[keep]
        meta = pa.table(
            {
                "id": ids.take(pa.array(row[keep] - source.offset)).cast(pa.string()),
                "row": pa.array(row[keep], pa.int64()),
                "cluster": pa.array(cluster[keep], pa.int32()),
                "secondary": pa.array(secondary[keep]),
                "centroid_sim": pa.array(sim, pa.float32()),
            }
        )
        target = Path(out) / INDEX_DIR / "kept" / part.stem / f"f{index:05d}.parquet"
        _save(vectors_path(target), x)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        pq.write_table(meta, tmp, compression="none")
        tmp.rename(target)
        kept_rows += int((~secondary[keep]).sum())
        members[0] += np.bincount(cluster[keep], minlength=len(centroids))
        members[1] += np.bincount(cluster[keep][~secondary[keep]], minlength=len(centroids))
    np.save(done.with_suffix(".members.npy"), members)
    done.write_text(str(kept_rows))
    return kept_rows


def write_meta(
    out: Path,
    work: Path,
    run_id: str,
    config_settings: dict[str, Any],
    centroids_path: Path,
    radius: np.ndarray,
    buckets: int,
    kept: int,
    parents: list[EarlierRun],
) -> Path:
    """Write ``centroids.npy``, ``radius.npy``, ``members.npy`` (the sum of the per-file counts
    :func:`index_file` left) and ``index.json`` (last: the index is complete once it exists)."""
    folder = out / INDEX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(centroids_path, folder / "centroids.npy")
    np.save(folder / "radius.npy", radius)
    centroids = np.load(centroids_path, mmap_mode="r")
    members = np.zeros((2, len(centroids)), np.int64)
    for part in (folder / "kept").glob(".f*.members.npy"):
        members += np.load(part)
    np.save(folder / "members.npy", members)
    for marker in [*(folder / "kept").glob(".f*.done"), *(folder / "kept").glob(".f*.members.npy")]:
        marker.unlink()
    meta = {
        "version": INDEX_VERSION,
        "run_id": run_id,
        "settings": config_settings,
        "clusters": int(centroids.shape[0]),
        "buckets": buckets,
        "kept": kept,
        "parents": [{"run_id": p.run_id, "path": p.path} for p in parents],
    }
    tmp = folder / (INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.rename(folder / INDEX_FILE)
    return folder


def build_index(
    run: Any,
    work: Path,
    out: Path,
    sources: list[Source],
    id_column: str,
    removed: np.ndarray,
    meta: dict[str, Any],
    parents: list[EarlierRun],
) -> Path:
    """Write this run's index (see the module docs) with one task per input file.

    Args:
        run: a ``map_calls``.
        removed: sorted global rows this run removed (within the run or as earlier duplicates).
        meta: ``run_id``, ``settings``, ``buckets`` and ``radius`` (per-cluster array) for
            :func:`write_meta`.
    """
    calls = []
    for i, s in enumerate(sources):
        lo, hi = np.searchsorted(removed, [s.offset, s.offset + s.rows])
        calls.append((str(work), str(out), s, i, id_column, removed[lo:hi]))
    kept = sum(run(index_file, calls))
    radius = meta["radius"]
    for i in range(len(sources)):
        radius = np.minimum(radius, np.load(work / "assign" / f"f{i:05d}" / "minsim.npy"))
    return write_meta(
        out,
        work,
        meta["run_id"],
        meta["settings"],
        work / "centroids.npy",
        radius,
        meta["buckets"],
        kept,
        parents,
    )
