"""Opening the earlier curate outputs of ``curate --against OUT`` (:mod:`pixsieve.run.against`
matches against them): one-line :class:`InputError` for an output that is missing, not a
finished curate output, without an index, or of another model or threshold semantics, before
anything is written. An output elsewhere than on local disk (any fsspec URL) is read from a
local copy of what a later run reads of it (:mod:`pixsieve.io.localcopy`) and recorded under
its URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pixsieve.errors import InputError
from pixsieve.io.localcopy import local_copy
from pixsieve.run.layout import RunLayout

#: Version of ``index/curate.json`` this pixsieve writes and reads.
CURATE_INDEX_VERSION: int = 1


@dataclass(frozen=True)
class EarlierOutput:
    """One earlier curate output: the local directory it is read from (itself, or a copy of
    what a later run reads of an output elsewhere: :mod:`pixsieve.io.localcopy`), its
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
        return Path(earlier_layout(self.path).index_dir(), "index.json").exists()


def earlier_layout(path: str) -> RunLayout:
    """The layout of an earlier output (a local directory; only read)."""
    return RunLayout(fs=LocalFileSystem(), root=path, url=path)


#: What a later run reads of an earlier output elsewhere, copied locally (relative paths).
READ_ENTRIES: tuple[str, ...] = ("run.json", "manifest", "index")


def _open(path: str, storage_options: dict[str, Any] | None = None) -> EarlierOutput:
    fs, root = url_to_fs(path, **(storage_options or {}))
    there = RunLayout(fs=fs, root=root, url=path)
    if not fs.isdir(root):
        raise InputError(f"--against {path}: no such directory")
    if not fs.exists(there.run_json()):
        raise InputError(f"--against {path}: not a finished curate output (no run.json)")
    if not fs.exists(there.index_meta()):
        raise InputError(
            f"--against {path}: has no index (index/curate.json); curate it again with this "
            "pixsieve to write one"
        )
    name = ""
    if not isinstance(fs, LocalFileSystem):  # read from a local copy, named by its URL
        stamp = there.index_meta()[len(root) :].lstrip("/")  # written last
        root, name = str(local_copy(path, READ_ENTRIES, stamp, storage_options)), path
    layout = earlier_layout(str(Path(root).resolve()))
    meta = json.loads(Path(layout.index_meta()).read_text())
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
    with ``storage_options``) are read from a local copy (:mod:`pixsieve.io.localcopy`).

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
