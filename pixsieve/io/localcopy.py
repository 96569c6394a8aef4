"""Local copies of what a run reads of an earlier output stored elsewhere (``--against URL``).

An earlier output's index is read with many positioned reads, nearly all of it, which object
stores serve poorly; so the files a later run reads are copied once into
``$PIXSIEVE_CACHE/against/<hash of the URL>/`` and read there. The copy is complete only once
its ``stamp`` file (the index's own "written last" file) is in place, and it is fetched again
when the earlier output's stamp changed.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs


def copy_dir(url: str) -> Path:
    """Where the local copy of the output at ``url`` lives."""
    from pixsieve.models.hub import cache_dir

    return cache_dir() / "against" / hashlib.sha256(url.encode()).hexdigest()[:16]


def local_copy(
    url: str, entries: tuple[str, ...], stamp: str, storage_options: dict[str, Any] | None = None
) -> Path:
    """A local directory holding ``entries`` (files or folders, relative) of the output at
    ``url``, copied when missing or when its ``stamp`` file differs from the copy's. Entries
    missing there are missing in the copy too (the caller names what is missing)."""
    fs, root = url_to_fs(url, **(storage_options or {}))
    folder = copy_dir(url)
    theirs = fs.cat_file(f"{root}/{stamp}") if fs.exists(f"{root}/{stamp}") else None
    mine = folder / stamp
    if theirs is not None and mine.exists() and mine.read_bytes() == theirs:
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for entry in entries:
        if fs.exists(f"{root}/{entry}"):
            fs.get(f"{root}/{entry}", str(tmp / entry), recursive=fs.isdir(f"{root}/{entry}"))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
