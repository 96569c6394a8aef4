"""The one output check of every entry point: claim a run directory, resume it, or refuse.

A run directory remembers a fingerprint of its inputs and settings
(:func:`pixsieve.run.summary.fingerprint`) in ``cache/fingerprint.json``. The same run is
resumed; shards rewritten in place since (their size or version changed) are redone with every
global step after them; any other difference is refused with what differs
(:class:`RunMismatch`) unless ``overwrite`` clears the old run first.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pixsieve.run.layout import OutputError, RunLayout, shard_id

log = logging.getLogger(__name__)


class RunMismatch(OutputError):
    """The output holds a run with other inputs or settings; ``differences`` says which."""

    def __init__(self, url: str, differences: list[str], what: str = "a run") -> None:
        self.url = url
        self.differences = differences
        self.what = what
        super().__init__(self.message("overwrite=True"))

    def message(self, option: str) -> str:
        """The one-line message, naming ``option`` as the way to replace the old run."""
        return (
            f"{self.url} already holds {self.what} ({'; '.join(self.differences)}); "
            f"choose another output, or pass {option} to replace it"
        )


def digest(data: dict[str, Any]) -> str:
    """A stable hash of a fingerprint."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def claim_output(
    layout: RunLayout, fingerprint: dict[str, Any], overwrite: bool, resume: bool = True
) -> None:
    """Make ``layout`` the home of the run described by ``fingerprint``, or refuse.

    The one output check of every entry point (``curate``, ``Pipeline.run``, ``refilter``).
    An empty directory is claimed. One holding the same run is resumed when ``resume`` (shards
    rewritten in place are redone); any other run there raises :class:`RunMismatch` unless
    ``overwrite``, which clears it.
    """
    present = layout.present()
    saved = (layout.read_json(layout.fingerprint()) or {}).get("fingerprint")
    differences: list[str] = []
    what = "a run with other inputs or settings"
    if present and not resume:
        differences, what = list(present), "a run"
    elif present:
        differences = (
            _differences(saved, fingerprint)
            if saved
            else ["it has no record of its inputs (cache/fingerprint.json)"]
        )
    if differences:
        if not overwrite:
            raise RunMismatch(layout.url, differences, what)
        layout.clear()
    elif present and saved:
        changed = _changed_shards(saved, fingerprint)
        if changed:
            _redo(layout, fingerprint, changed)
    layout.write_json(
        layout.fingerprint(), {"digest": digest(fingerprint), "fingerprint": fingerprint}
    )


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, besides shards rewritten in place."""
    out: list[str] = []
    old = [u for u, _ in saved.get("inputs") or []]
    new = [u for u, _ in current["inputs"]]
    if old != new:
        added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        what = [f"{len(added)} added, e.g. {added[0]}" if added else ""]
        what.append(f"{len(removed)} removed, e.g. {removed[0]}" if removed else "")
        out.append("input shards: " + (", ".join(w for w in what if w) or "other order"))
    old_stages = {s["name"]: s for s in saved.get("stages") or []}
    for stage in current["stages"]:
        before = old_stages.pop(stage["name"], None)
        if before is None:
            out.append(f"stage {stage['name']} added")
            continue
        for key in sorted(set(before["settings"]) | set(stage["settings"])):
            a, b = before["settings"].get(key), stage["settings"].get(key)
            if a != b:
                out.append(f"{stage['name']}.{key}: {_short(a)} -> {_short(b)}")
    out += [f"stage {name} removed" for name in old_stages]
    for key in sorted(set(saved) & set(current)):  # a key an older version did not record: same
        if key not in ("inputs", "versions", "stages") and saved.get(key) != current.get(key):
            out.append(f"{key}: {_short(saved.get(key))} -> {_short(current.get(key))}")
    return out


def _changed_shards(saved: dict[str, Any], current: dict[str, Any]) -> list[int]:
    """Indices of shards whose size or version changed (same URLs, rewritten in place)."""
    old_sizes = [size for _, size in saved["inputs"]]
    old_versions = saved.get("versions") or [None] * len(old_sizes)
    return [
        i
        for i, ((_, size), version) in enumerate(
            zip(current["inputs"], current["versions"], strict=True)
        )
        if size != old_sizes[i] or (old_versions[i] is not None and version != old_versions[i])
    ]


def _redo(layout: RunLayout, fingerprint: dict[str, Any], changed: list[int]) -> None:
    """Forget the work done on ``changed`` shards and everything downstream of them."""
    log.warning(
        "%d input shard(s) changed since the last run (e.g. %s): redoing them and the steps after",
        len(changed),
        fingerprint["inputs"][changed[0]][0],
    )
    for i in changed:
        for pass_name in ("scan", "score"):
            marker = layout.marker(pass_name, shard_id(i))
            if layout.fs.exists(marker):
                layout.fs.rm(marker)
    for path in (
        layout.manifest_dir(),
        layout.shards_dir(),
        layout.metadata_dir(),
        layout.done_dir("export"),
        layout.done_dir("semantic"),
        layout.marker("scan", "exact"),
    ):
        if layout.fs.exists(path):
            layout.fs.rm(path, recursive=True)
