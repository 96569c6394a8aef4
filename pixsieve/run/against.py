"""``curate --against OUT``: the earlier curate outputs a run deduplicates against.

An earlier output is read, never written: its ``index/curate.json`` (settings, hash buckets,
the outputs it was itself run against), its exact index ``index/hashes/hBBBB/*.parquet``
(content hash, key and shard of every sample it kept, bucketed by
:func:`pixsieve.dedup.hashparts.key_buckets`), its semantic index (``index/index.json`` and the
partitions of :mod:`pixsieve.dedup.index`) and, to name an earlier sample by its key, its
manifest. ``--against OUT2`` brings in OUT2's own earlier outputs too (``parents``). An
output elsewhere than on local disk is read from a local copy of those files
(:func:`local_copy`) and recorded under its URL.

* :func:`open_outputs` and :func:`check_outputs`: one-line :class:`InputError` for an output
  that is missing, not a finished curate output, without an index, or of another model or
  threshold semantics; run before anything is written.
* :func:`earlier_exact`: the scan pass's second exact step. One task per (earlier run, new
  hash file) writes the file's hashes into that run's buckets (``layout.earlier_exact()``),
  one task per (earlier run, bucket) compares them with the run's kept hashes; a new sample
  whose image an earlier run kept is dropped (``duplicate_of_earlier``) before decoding.
* :func:`earlier_keys`: the key and shard of earlier samples named by the semantic index.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pixsieve.calls import MapCalls, serial_calls
from pixsieve.dedup.hashparts import key_buckets
from pixsieve.errors import InputError
from pixsieve.io.schemas import EXACT_DUPLICATES, conform, sample_id
from pixsieve.run.layout import RunLayout, shard_id

#: Version of ``index/curate.json`` this pixsieve writes and reads.
CURATE_INDEX_VERSION: int = 1
#: The semantic index's id of a sample: ``shard_index << SHIFT | position`` (the semantic pass).
SHIFT: int = 32


@dataclass(frozen=True)
class EarlierOutput:
    """One earlier curate output: the local directory it is read from (itself, or a copy of
    what a later run reads of an output elsewhere: :func:`local_copy`), its
    ``index/curate.json`` and the name it is recorded under (``duplicate_of_run``,
    ``parents``): its absolute path, or its URL."""

    path: str
    meta: dict[str, Any]
    name: str = ""

    @property
    def label(self) -> str:
        """The name a run records for it."""
        return self.name or self.path

    @property
    def semantic_index(self) -> bool:
        """Whether it holds a semantic dedup index (``index/index.json``)."""
        return Path(_layout(self.path).index_dir(), "index.json").exists()


def _layout(path: str) -> RunLayout:
    """The layout of an earlier output (a local directory; only read)."""
    return RunLayout(fs=LocalFileSystem(), root=path, url=path)


#: What a later run reads of an earlier output (relative paths; the index's ``curate.json``
#: last: a copy without it is incomplete).
READ_ENTRIES: tuple[str, ...] = ("run.json", "manifest", "index")


def local_copy_dir(url: str) -> Path:
    """Where :func:`local_copy` keeps the copy of the output at ``url``."""
    from pixsieve.models.hub import cache_dir

    return cache_dir() / "against" / hashlib.sha256(url.encode()).hexdigest()[:16]


def local_copy(url: str, fs: Any, root: str) -> Path:
    """A local copy of what a later run reads of the earlier output at ``url`` (``fs``,
    ``root``: its filesystem and path there), in ``$PIXSIEVE_CACHE/against/``: fetched once,
    fetched again when its ``index/curate.json`` changed. A run reads nearly all of an earlier
    semantic index, so a copy costs no more than reading it in place."""
    folder = local_copy_dir(url)
    meta = f"{root}/index/curate.json"
    mine = folder / "index" / "curate.json"
    if mine.exists() and mine.read_bytes() == fs.cat_file(meta):
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for entry in READ_ENTRIES:
        if fs.exists(f"{root}/{entry}"):
            fs.get(f"{root}/{entry}", str(tmp / entry), recursive=fs.isdir(f"{root}/{entry}"))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _open(path: str, storage_options: dict[str, Any] | None = None) -> EarlierOutput:
    fs, local = url_to_fs(path, **(storage_options or {}))
    name = ""
    if not isinstance(fs, LocalFileSystem):
        if not fs.isdir(local):
            raise InputError(f"--against {path}: no such directory")
        if fs.exists(f"{local}/run.json") and fs.exists(f"{local}/index/curate.json"):
            local, name = str(local_copy(path, fs, local)), path
        else:  # named below, as for a local directory
            local, name = str(Path(local_copy_dir(path)) / "missing"), path
    folder = Path(local)
    if not folder.is_dir() and not name:
        raise InputError(f"--against {path}: no such directory")
    layout = RunLayout(fs=LocalFileSystem(), root=str(folder.resolve()), url=path)
    if not Path(layout.run_json()).exists():
        raise InputError(f"--against {path}: not a finished curate output (no run.json)")
    meta_path = Path(layout.index_meta())
    if not meta_path.exists():
        raise InputError(
            f"--against {path}: has no index (index/curate.json); curate it again with this "
            "pixsieve to write one"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != CURATE_INDEX_VERSION:
        raise InputError(
            f"--against {path}: index version {meta.get('version')}, this pixsieve reads "
            f"{CURATE_INDEX_VERSION}"
        )
    return EarlierOutput(path=layout.root, meta=meta, name=name)


def _gone(parent: str, storage_options: dict[str, Any] | None) -> bool:
    """Whether an earlier run's recorded parent has no index where it was recorded."""
    fs, root = url_to_fs(parent, **(storage_options or {}))
    return not fs.exists(f"{root}/index/curate.json")


def open_outputs(
    paths: list[str], storage_options: dict[str, Any] | None = None
) -> list[EarlierOutput]:
    """The outputs named by ``--against`` and, recursively, those they were run against (each
    once, first named first). Outputs elsewhere than on local disk (any fsspec URL, opened
    with ``storage_options``) are read from a local copy (:func:`local_copy`).

    Raises:
        InputError: a missing directory, not a curate output, no index, a parent moved away.
    """
    found: dict[str, EarlierOutput] = {}
    todo = [str(p) for p in paths]
    while todo:
        out = _open(todo.pop(0), storage_options)
        if out.label in found:
            continue
        found[out.label] = out
        for parent in out.meta.get("parents", []):
            if parent not in found:
                if _gone(parent, storage_options):
                    raise InputError(
                        f"--against {out.label}: its earlier run {parent} is gone; name its new "
                        "place with another --against"
                    )
                todo.append(parent)
    return list(found.values())


def check_outputs(
    outputs: list[EarlierOutput], model: str | None, semantic: Any, exact: bool
) -> list[str]:
    """Check that this run fits every earlier output; return those with a semantic index.

    ``model``: this run's embedding model id; ``semantic``: its semantic dedup config (or
    ``None``); ``exact``: whether it runs exact dedup.

    Raises:
        InputError: one line naming the output, the setting and both values.
    """
    for out in outputs:
        theirs = out.meta.get("settings", {})
        name = f"--against {out.path}"
        if semantic is not None:
            if not theirs.get("semantic"):
                raise InputError(
                    f"{name}: semantic dedup was off in that run, so near-duplicates of its "
                    "samples cannot be found; add --skip semantic-dedup here"
                )
            if theirs.get("model") and model and theirs["model"] != model:
                raise InputError(
                    f"{name}: embeddings of model {theirs['model']!r} there, {model!r} here"
                )
        if exact and not theirs.get("exact"):
            raise InputError(
                f"{name}: exact dedup was off in that run (no hashes); add --skip dedup here"
            )
    indexed = [o for o in outputs if o.semantic_index]
    if semantic is not None and indexed:
        from pixsieve.dedup.index import check_settings, open_earlier, settings

        runs = open_earlier([o.path for o in indexed])
        dim = int(runs[0].meta["settings"]["dim"])  # the embeddings' own dim is checked later
        check_settings(runs, settings(semantic, dim, model))
    return indexed


def _partition(path: str, index: int, work: str, run: int, buckets: int) -> None:
    """Write one new hash file's hashes into earlier run ``run``'s buckets."""
    final = Path(work) / f"r{run:03d}" / f"f{shard_id(index)}"
    if final.exists():
        return
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    table = pq.read_table(path, columns=["shard_index", "position", "hash"])
    bucket = key_buckets(table.column("hash"), buckets)
    for b in np.unique(bucket):
        pq.write_table(table.filter(pa.array(bucket == b)), tmp / f"h{int(b):04d}.parquet")
    tmp.rename(final)


def _match(work: str, run: int, bucket: int, earlier: str, name: str) -> str | None:
    """New samples of one bucket whose hash earlier output ``earlier`` (recorded as ``name``)
    kept."""
    final = Path(work) / f"r{run:03d}" / f"out-h{bucket:04d}.parquet"
    if final.exists():
        return str(final)
    new = sorted(str(p) for p in Path(work).glob(f"r{run:03d}/f*/h{bucket:04d}.parquet"))
    bucket_dir = Path(_layout(earlier).index_hash_bucket(bucket))
    old = sorted(str(p) for p in bucket_dir.glob("*.parquet"))
    if not new or not old:
        return None
    mine = ds.dataset(new, format="parquet").to_table()
    theirs = ds.dataset(old, format="parquet").to_table(columns=["hash", "key", "source"])
    hit = pc.is_in(mine["hash"], value_set=theirs["hash"]).to_numpy(zero_copy_only=False)
    mine = mine.filter(pa.array(hit))
    where = pc.index_in(mine["hash"], value_set=theirs["hash"])
    table = pa.table(
        {
            "shard_index": mine["shard_index"],
            "position": mine["position"],
            "duplicate_of": theirs["key"].take(where),
            "duplicate_of_source": theirs["source"].take(where),
            "duplicate_of_run": pa.array([name] * mine.num_rows, pa.string()),
            "run": pa.array(np.full(mine.num_rows, run, np.int32)),
        }
    )
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.rename(final)
    return str(final)


def earlier_exact(
    layout: RunLayout,
    n_shards: int,
    outputs: list[EarlierOutput],
    map_calls: MapCalls | None = None,
) -> int:
    """Add the new samples whose image an earlier output kept to ``exact_duplicates.parquet``
    (``duplicate_of_run`` set; they replace a within-run row of the same sample). Returns
    how many; cached by the marker ``scan/earlier``."""
    marker = layout.marker("scan", "earlier")
    saved = layout.read_json(marker)
    if saved is not None:
        return int(saved["duplicates"])
    runs = [o for o in outputs if o.meta.get("hash_buckets")]
    run = (map_calls or serial_calls) if layout.is_local else serial_calls
    with layout.workspace(layout.earlier_exact()) as work:
        files = []
        for i in range(n_shards):
            p = layout.hashes(i)
            if layout.fs.exists(p):
                if not layout.is_local:
                    local = f"{work}/hashes-{shard_id(i)}.parquet"
                    pq.write_table(layout.read_table(p), local)
                    p = local
                files.append((i, p))
        calls: list[tuple[Any, ...]] = [
            (p, i, work, r, int(o.meta["hash_buckets"]))
            for r, o in enumerate(runs)
            for i, p in files
        ]
        list(run(_partition, calls))
        calls = [
            (work, r, b, o.path, o.label)
            for r, o in enumerate(runs)
            for b in range(o.meta["hash_buckets"])
        ]
        parts = [pq.read_table(f) for f in run(_match, calls) if f]
    within = layout.read_table(layout.exact_duplicates())
    found = 0
    if parts:
        earlier = pa.concat_tables(parts)
        order = np.lexsort(
            (
                earlier["run"].to_numpy(),
                earlier["position"].to_numpy(),
                earlier["shard_index"].to_numpy(),
            )
        )
        earlier = earlier.take(pa.array(order))
        sid, pos = earlier["shard_index"].to_numpy(), earlier["position"].to_numpy()
        first = np.r_[True, (sid[1:] != sid[:-1]) | (pos[1:] != pos[:-1])]
        earlier = conform(earlier.filter(pa.array(first)), EXACT_DUPLICATES)
        found = earlier.num_rows
        gone = set(zip(sid[first].tolist(), pos[first].tolist(), strict=True))
        mine = [
            (s, p) not in gone
            for s, p in zip(
                within["shard_index"].to_pylist(), within["position"].to_pylist(), strict=True
            )
        ]
        within = conform(within.filter(pa.array(mine, pa.bool_())), EXACT_DUPLICATES)
        merged = pa.concat_tables([within, earlier])
        order = np.lexsort((merged["position"].to_numpy(), merged["shard_index"].to_numpy()))
        layout.write_table(layout.exact_duplicates(), merged.take(pa.array(order)))
    layout.write_json(marker, {"duplicates": found})
    if layout.is_local and layout.fs.exists(layout.earlier_exact()):  # the marker covers it
        layout.fs.rm(layout.earlier_exact(), recursive=True)
    return found


def earlier_keys(output: str, ids: np.ndarray) -> tuple[list[str | None], list[str | None]]:
    """The key and shard of each earlier sample id (``shard_index << 32 | position`` of the
    earlier run ``output``), read from its manifest."""
    wanted = [sample_id(int(i) >> SHIFT, int(i) & ((1 << SHIFT) - 1)) for i in ids]
    table = ds.dataset(_layout(output).manifest_dir(), format="parquet").to_table(
        columns=["sample_id", "key", "source"],
        filter=pc.field("sample_id").isin(sorted(set(wanted))),
    )
    found = {
        s: (k, src)
        for s, k, src in zip(
            table["sample_id"].to_pylist(),
            table["key"].to_pylist(),
            table["source"].to_pylist(),
            strict=True,
        )
    }
    pairs = [found.get(w, (None, None)) for w in wanted]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def earlier_rows(out_dir: str, indexes: list[str], names: dict[str, str] | None = None) -> pa.Table:
    """The semantic pass's new samples removed as near-duplicates of an earlier kept sample,
    as ``semantic_duplicates.parquet`` rows (read from ``dedup_files``' ``duplicates.parquet``;
    ``indexes``: the earlier outputs whose semantic index it ran against, recorded under
    ``names[path]`` where given: :attr:`EarlierOutput.label`)."""
    from pixsieve.dedup.io import DUPLICATES_FILE, REASON_EARLIER
    from pixsieve.io.schemas import SEMANTIC_DUPLICATES

    table = pq.read_table(Path(out_dir, DUPLICATES_FILE))
    table = table.filter(pc.equal(table["reason"], REASON_EARLIER))
    if not table.num_rows:
        return SEMANTIC_DUPLICATES.empty_table()
    where = {}
    for path in indexes:
        meta = json.loads(Path(_layout(path).index_dir(), "index.json").read_text())
        where[meta["run_id"]] = path
    # int64 ids (a file of earlier rows only may carry them as strings)
    ids = pc.cast(table["id"], pa.int64()).to_numpy()
    runs = [where[r] for r in table["duplicate_of_run"].to_pylist()]  # read from here
    of = pc.cast(table["duplicate_of"], pa.int64()).to_numpy()
    keys: list[str | None] = [None] * len(ids)
    sources: list[str | None] = [None] * len(ids)
    for path in sorted(set(runs)):
        sel = [j for j, r in enumerate(runs) if r == path]
        k, s = earlier_keys(path, of[sel])
        for j, kk, ss in zip(sel, k, s, strict=True):
            keys[j], sources[j] = kk, ss
    n = len(ids)
    return conform(
        pa.table(
            {
                "shard_index": pa.array(ids >> SHIFT, pa.int64()),
                "position": pa.array(ids & ((1 << SHIFT) - 1), pa.int64()),
                "removed": pa.array(np.ones(n, bool)),
                "duplicate_of": pa.array(keys, pa.string()),
                "duplicate_of_source": pa.array(sources, pa.string()),
                "duplicate_of_run": pa.array([(names or {}).get(r, r) for r in runs], pa.string()),
                "similarity": table["similarity"],
                "chained": pa.array(np.zeros(n, bool)),
            }
        ),
        SEMANTIC_DUPLICATES,
    )
