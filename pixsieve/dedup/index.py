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
  ``cluster``, ``secondary`` and ``centroid_sim`` (float32 cosine of the item to that
  cluster's centroid), so a later run's window in a cluster is one slice of one file;
* ``vectors/bBBBB.f32.npy``: their unit float32 embeddings in the same order (a later run
  reads, with positioned reads, only the rows its windows need);
* ``ids/fFFFFF.parquet``: ``row`` and ``id`` (string) of the kept items of input file ``F``
  (``index.json``'s ``id_starts``: the first row of each file), read only for matched items.

Versions 3 and 4 had one part per input file and bucket (``kept/bBBBB/fFFFFF.parquet`` with
an ``id`` column, ``vectors/bBBBB/fFFFFF.f32.npy``; version 3 also an unused float16 copy):
a later run's window was up to one slice per input file, and their metadata was read from
every file. They are still read (:func:`bucket_parts`, :func:`part_ids`).

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
from pixsieve.dedup.packing import read_rows_into
from pixsieve.dedup.readphase import NpyWriter
from pixsieve.dedup.scratch import rows_buffer
from pixsieve.dedup.sources import InputError, Source, read_ids

INDEX_DIR: str = "index"
INDEX_FILE: str = "index.json"
INDEX_VERSION: int = 5
#: Index versions this pixsieve reads (3 and 4: one part per input file and bucket, ids in the
#: parts; 3 also has an unused float16 store).
READABLE_VERSIONS: tuple[int, ...] = (3, 4, 5)
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
        *rest, last = map(str, READABLE_VERSIONS)
        readable = f"{', '.join(rest)} and {last}" if rest else last
        raise InputError(
            f"--against {path}: index version {meta.get('version')}, this pixsieve reads "
            f"versions {readable} (rerun that dedup to rebuild its index)"
        )
    run = EarlierRun(run_id=meta["run_id"], path=str(folder.resolve()), meta=meta)
    missing = [p for p in all_parts(run.kept_dir) if not vectors_path(p).exists()]
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


def bucket_parts(kept_dir: Path, bucket: int) -> list[Path]:
    """The index parts of one bucket: ``kept/bBBBB.parquet`` (version 5) or
    ``kept/bBBBB/fFFFFF.parquet``, one per input file (versions 3 and 4)."""
    single = kept_dir / f"b{bucket:04d}.parquet"
    if single.exists():
        return [single]
    return sorted((kept_dir / f"b{bucket:04d}").glob("f*.parquet"))


def all_parts(kept_dir: Path) -> list[Path]:
    """Every index part of ``kept_dir`` (any version)."""
    return sorted([*kept_dir.glob("b*.parquet"), *kept_dir.glob("b*/f*.parquet")])


def vectors_path(kept_part: Path) -> Path:
    """The float32 embedding store of an index part: ``vectors/bBBBB.f32.npy`` beside
    ``kept/bBBBB.parquet`` (version 5), ``vectors/bBBBB/fFFFFF.f32.npy`` (3 and 4)."""
    if kept_part.parent.name == "kept":
        return kept_part.parents[1] / "vectors" / f"{kept_part.stem}.f32.npy"
    return kept_part.parents[2] / "vectors" / kept_part.parent.name / f"{kept_part.stem}.f32.npy"


def part_ids(hits: list[tuple[Path, np.ndarray]]) -> list[pa.Array]:
    """The ids (strings) of rows ``pos`` of each index part of ``hits`` = ``[(part, pos)]``:
    from the part's ``id`` column (versions 3 and 4), or by its ``row`` column from
    ``ids/fFFFFF.parquet`` (version 5; each ids file read once for all the hits)."""
    out: list[pa.Array] = [pa.array([], pa.string())] * len(hits)
    by_index: dict[Path, list[tuple[int, np.ndarray]]] = {}
    for n, (part, pos) in enumerate(hits):
        meta = pq.ParquetFile(part)
        if "id" in meta.schema_arrow.names:
            out[n] = meta.read(columns=["id"]).column("id").combine_chunks().take(pa.array(pos))
        else:
            rows = meta.read(columns=["row"]).column("row").to_numpy()[pos]
            by_index.setdefault(part.parents[1], []).append((n, rows))
    for folder, items in by_index.items():
        ids = _ids_of_rows(folder, np.concatenate([rows for _, rows in items]))
        at = 0
        for n, rows in items:
            out[n] = ids.slice(at, len(rows))
            at += len(rows)
    return out


def _ids_of_rows(folder: Path, rows: np.ndarray) -> pa.Array:
    """The ids of kept ``rows`` of the index in ``folder``, in that order."""
    starts = np.asarray(json.loads((folder / INDEX_FILE).read_text())["id_starts"], np.int64)
    file_of = np.searchsorted(starts, rows, "right") - 1
    places, found = [], []
    for f in np.unique(file_of).tolist():
        mine = np.flatnonzero(file_of == f)
        table = pq.ParquetFile(folder / "ids" / f"f{f:05d}.parquet").read()
        at = np.searchsorted(table.column("row").to_numpy(), rows[mine])
        places.append(mine)
        found.append(table.column("id").combine_chunks().take(pa.array(at)))
    if not found:
        return pa.array([], pa.string())
    back = np.argsort(np.concatenate(places))  # back to the order of rows
    return pa.concat_arrays(found).take(pa.array(back))


def _save(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, x)
    tmp.rename(path)


def _write_parquet(table: pa.Table, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(table, tmp, compression="none")
    tmp.rename(target)


def index_ids(out: str, source: Source, index: int, id_column: str, removed: np.ndarray) -> int:
    """Write ``ids/fFFFFF.parquet``: ``row`` and ``id`` (string) of the kept rows of one input
    file, by row. ``removed``: sorted global rows of this file that were removed. Returns the
    rows kept."""
    target = Path(out) / INDEX_DIR / "ids" / f"f{index:05d}.parquet"
    if target.exists():
        return pq.ParquetFile(target).metadata.num_rows
    local = np.setdiff1d(np.arange(source.rows), removed - source.offset)
    ids = read_ids(source.path, id_column).take(pa.array(local)).cast(pa.string())
    rows = pa.array(source.offset + local, pa.int64())
    _write_parquet(pa.table({"row": rows, "id": ids}), target)
    return len(local)


def index_bucket(
    work: str, out: str, bucket: int, dim: int, removed: np.ndarray, max_rows: int
) -> None:
    """Write ``kept/bBBBB.parquet`` (``row``, ``cluster``, ``secondary``, ``centroid_sim``) and
    ``vectors/bBBBB.f32.npy``: every membership of a kept row in this bucket's assignment
    partitions (all input files), sorted by cluster, primaries first, then by
    ``centroid_sim``. The embeddings are copied in that order, at most ``max_rows`` at a time."""
    target = Path(out) / INDEX_DIR / "kept" / f"b{bucket:04d}.parquet"
    if target.exists():
        return
    parts = sorted(Path(work).glob(f"assign/f*/b{bucket:04d}.parquet"))
    columns = ["row", "cluster", "secondary", "centroid_sim"]
    tables = [pq.ParquetFile(p).read(columns=columns) for p in parts]
    sizes = np.array([len(t) for t in tables], np.int64)
    table = pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns})
    row, cluster = table.column("row").to_numpy(), table.column("cluster").to_numpy()
    secondary = table.column("secondary").to_numpy(zero_copy_only=False)
    sim = table.column("centroid_sim").to_numpy()
    keep = np.flatnonzero(~np.isin(row, removed))
    order = keep[np.lexsort((sim[keep], secondary[keep], cluster[keep]))]
    part_of = np.repeat(np.arange(len(parts)), sizes)
    local = np.arange(len(row)) - np.r_[0, np.cumsum(sizes)[:-1]][part_of]
    store = vectors_path(target)
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(store.name + ".tmp")
    writer = NpyWriter(tmp, len(order), (dim,), np.float32)
    try:
        for lo in range(0, len(order), max(1, max_rows)):
            take = order[lo : lo + max(1, max_rows)]
            buf = rows_buffer(len(take), dim)
            for f in np.unique(part_of[take]).tolist():
                mine = np.flatnonzero(part_of[take] == f)
                where = np.full(int(sizes[f]), -1, np.int64)
                where[local[take[mine]]] = mine
                read_rows_into(parts[f], buf, where)
            writer.write(buf)
    finally:
        writer.close()
    tmp.rename(store)
    k = len(np.load(Path(work) / "centroids.npy", mmap_mode="r"))
    members = np.stack(
        [
            np.bincount(cluster[order], minlength=k),
            np.bincount(cluster[order][~secondary[order]], minlength=k),
        ]
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target.parent / f".b{bucket:04d}.members.npy", members)
    _write_parquet(table.take(pa.array(order)), target)


def write_meta(
    out: Path, centroids_path: Path, meta: dict[str, Any], kept: int, parents: list[EarlierRun]
) -> Path:
    """Write ``centroids.npy``, ``radius.npy``, ``members.npy`` (the sum of the per-bucket
    counts :func:`index_bucket` left) and ``index.json`` (last: the index is complete once it
    exists). ``meta``: ``run_id``, ``settings``, ``buckets``, ``radius`` and ``id_starts``
    (the first row of each input file)."""
    folder = out / INDEX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(centroids_path, folder / "centroids.npy")
    np.save(folder / "radius.npy", meta["radius"])
    centroids = np.load(centroids_path, mmap_mode="r")
    members = np.zeros((2, len(centroids)), np.int64)
    markers = sorted((folder / "kept").glob(".b*.members.npy"))
    for marker in markers:
        members += np.load(marker)
    np.save(folder / "members.npy", members)
    for marker in markers:
        marker.unlink()
    info = {
        "version": INDEX_VERSION,
        "run_id": meta["run_id"],
        "settings": meta["settings"],
        "clusters": int(centroids.shape[0]),
        "buckets": meta["buckets"],
        "kept": kept,
        "id_starts": [int(s) for s in meta["id_starts"]],
        "parents": [{"run_id": p.run_id, "path": p.path} for p in parents],
    }
    tmp = folder / (INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
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
    """Write this run's index (see the module docs): one task per input file for the ids and
    one per bucket for the memberships and their embeddings.

    Args:
        run: a ``map_calls``.
        removed: sorted global rows this run removed (within the run or as earlier duplicates).
        meta: ``run_id``, ``settings`` (with ``dim``), ``buckets``, ``radius`` (per-cluster
            array) and ``bucket_rows`` (most embeddings a bucket task holds at once).
    """
    calls = []
    for i, s in enumerate(sources):
        lo, hi = np.searchsorted(removed, [s.offset, s.offset + s.rows])
        calls.append((str(out), s, i, id_column, removed[lo:hi]))
    kept = sum(run(index_ids, calls))
    dim, rows = meta["settings"]["dim"], meta["bucket_rows"]
    calls = [(str(work), str(out), b, dim, removed, rows) for b in range(meta["buckets"])]
    list(run(index_bucket, calls))
    radius = meta["radius"]
    for i in range(len(sources)):
        radius = np.minimum(radius, np.load(work / "assign" / f"f{i:05d}" / "minsim.npy"))
    info = {**meta, "radius": radius, "id_starts": [s.offset for s in sources]}
    return write_meta(out, work / "centroids.npy", info, kept, parents)
