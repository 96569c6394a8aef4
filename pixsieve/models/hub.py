"""A local, checksummed cache of pinned models: fetch, verify, resolve.

The catalogue of pinned sources lives in :mod:`pixsieve.models.specs`. Every default model is
pinned: the CLIP backbone to a Hugging Face commit, each head to a URL
plus the sha256 of its bytes. Files land in ``$PIXSIEVE_CACHE`` (default ``~/.cache/pixsieve``)
through a temporary file and an atomic rename, and are sha256-checked before anything opens them,
on download and again on every later use. With ``HF_HUB_OFFLINE=1`` (or ``PIXSIEVE_OFFLINE=1``)
nothing is fetched; a missing model raises :class:`ModelUnavailableError` saying how to get it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import fsspec

from pixsieve.models.specs import (
    DEFAULT_CLIP_ID,
    DEFAULT_CLIP_REVISION,
    SPECS,
    HubFile,
    HubSnapshot,
    Kind,
    ModelSpec,
    UrlFile,
    default_spec,
)

logger = logging.getLogger(__name__)

__all__ = [  # the catalogue (pixsieve.models.specs) is re-exported: hub.SPECS, hub.ModelSpec...
    "DEFAULT_CLIP_ID",
    "DEFAULT_CLIP_REVISION",
    "SPECS",
    "ChecksumError",
    "HubFile",
    "HubSnapshot",
    "Kind",
    "ModelSpec",
    "ModelUnavailableError",
    "UrlFile",
    "cache_dir",
    "cached_path",
    "default_spec",
    "fetch",
    "fetch_hub",
    "fetch_url",
    "is_offline",
    "resolve_clip",
    "resolve_head",
    "sha256_file",
]

Progress = Callable[[str, int, int | None], None]
"""Download progress callback: ``(label, bytes_done, bytes_total_or_None)``."""

CACHE_ENV = "PIXSIEVE_CACHE"
FETCH_HINT = (
    "run `pixsieve models download` on a machine with network access (then copy the cache "
    "folder and set PIXSIEVE_CACHE), or pass a local file/folder instead"
)
_LOCAL_PROTOCOLS = {"file", "local", "memory"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HF_ID = re.compile(r"^[\w.-]+/[\w.-]+(/[^@\s]+)?(@[\w./-]+)?$")
_CHUNK = 1 << 20


class ModelUnavailableError(RuntimeError):
    """A model cannot be found locally and cannot (or may not) be downloaded."""


class ChecksumError(ModelUnavailableError):
    """A file's sha256 does not match its pin; it was not (and will not be) opened."""


def cache_dir() -> Path:
    """The cache root: ``$PIXSIEVE_CACHE`` or ``~/.cache/pixsieve``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pixsieve").expanduser()


def is_offline() -> bool:
    """Whether downloads are forbidden (``HF_HUB_OFFLINE`` or ``PIXSIEVE_OFFLINE`` set truthy)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("PIXSIEVE_OFFLINE", ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _unavailable(what: str, exc: BaseException | None = None) -> ModelUnavailableError:
    detail = ""
    if exc is not None:
        root = exc
        while root.__cause__ is not None and root.__cause__ is not root:
            root = root.__cause__  # fsspec hides DNS/connection errors behind FileNotFoundError
        detail = f" ({type(exc).__name__}: {exc}"
        detail += f"; caused by {type(root).__name__}: {root})" if root is not exc else ")"
    return ModelUnavailableError(f"{what} is not available{detail}; {FETCH_HINT}")


def _url_cache_path(source: UrlFile, root: Path | None) -> Path:
    return (root or cache_dir()) / "files" / source.sha256 / source.filename


def fetch_url(source: UrlFile, root: Path | None = None, progress: Progress | None = None) -> Path:
    """Return the verified local copy of ``source``, downloading it first when needed."""
    if not _SHA256.match(source.sha256):
        raise ValueError(f"sha256 pin for {source.url} must be 64 lowercase hex digits")
    dest = _url_cache_path(source, root)
    if dest.is_file():
        if sha256_file(dest) == source.sha256:
            return dest
        logger.warning("cached %s does not match its sha256 pin; fetching it again", dest)
        dest.unlink()
    protocol = urlsplit(source.url).scheme or "file"
    if is_offline() and protocol not in _LOCAL_PROTOCOLS:
        raise _unavailable(f"{source.filename} (offline mode, not in cache {dest.parent})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # fsspec leaves file:// paths percent-encoded (Path.as_uri() writes "+" as %2B)
    url = unquote(urlsplit(source.url).path) if protocol == "file" else source.url
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, fsspec.open(url, "rb") as src:
            total = getattr(src, "size", None)
            done = 0
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(source.filename, done, total)
        if digest.hexdigest() != source.sha256:
            raise ChecksumError(
                f"{source.url} has sha256 {digest.hexdigest()}, expected {source.sha256}; "
                "the file was discarded unopened"
            )
        os.replace(tmp, dest)
    except (OSError, ImportError, ValueError) as exc:
        raise _unavailable(f"{source.url}", exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _verify_hub_blob(path: Path) -> None:
    """Check a Hub cache file against its blob name (sha256 for LFS, git sha1 otherwise)."""
    blob = Path(os.path.realpath(path)).name
    if _SHA256.match(blob):
        actual = sha256_file(path)
    elif re.fullmatch(r"[0-9a-f]{40}", blob):
        data = path.read_bytes()
        actual = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    else:  # no symlinked blob store (e.g. Windows without symlinks): nothing to compare to
        return
    if actual != blob:
        raise ChecksumError(f"{path} does not match its Hub checksum {blob}; delete it and retry")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the Hub endpoint (huggingface_hub itself retries for ~30 s)."""
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let huggingface_hub try
    parts = urlsplit(constants.ENDPOINT)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def fetch_hub(
    source: HubFile | HubSnapshot, root: Path | None = None, local_only: bool = False
) -> Path:
    """Find (or download) a pinned Hub file or snapshot and verify it; return its local path.

    A revision that is a full commit hash is immutable, so a cache hit never contacts the Hub.
    """
    hf_cache = (root or cache_dir()) / "hf"
    offline = local_only or is_offline()
    label = f"{source.repo_id}@{source.revision}"
    if not offline and re.fullmatch(r"[0-9a-f]{40}", source.revision):
        with contextlib.suppress(ModelUnavailableError):
            return _fetch_hub(source, hf_cache, local_only=True, label=label)
    if not offline and not _hub_reachable():
        raise _unavailable(f"{label} (cannot reach the Hugging Face Hub)")
    return _fetch_hub(source, hf_cache, local_only=offline, label=label)


def _fetch_hub(source: HubFile | HubSnapshot, hf_cache: Path, local_only: bool, label: str) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        if isinstance(source, HubFile):
            path = Path(
                hf_hub_download(
                    source.repo_id,
                    source.filename,
                    revision=source.revision,
                    cache_dir=hf_cache,
                    local_files_only=local_only,
                )
            )
            files = [path]
        else:
            path = Path(
                snapshot_download(
                    source.repo_id,
                    revision=source.revision,
                    allow_patterns=list(source.allow_patterns),
                    cache_dir=hf_cache,
                    local_files_only=local_only,
                )
            )
            files = sorted(p for p in path.rglob("*") if p.is_file())
    except (OSError, HFValidationError) as exc:  # HTTP, connection and cache-miss errors
        where = " (offline mode: not in the cache)" if local_only else ""
        raise _unavailable(f"{label}{where}", exc) from exc
    for file in files:
        _verify_hub_blob(file)
    return path


def fetch(spec: ModelSpec, root: Path | None = None, progress: Progress | None = None) -> Path:
    """Local path of a pinned model (a file for heads, a folder for CLIP), fetching if needed."""
    if isinstance(spec.source, UrlFile):
        return fetch_url(spec.source, root, progress)
    return fetch_hub(spec.source, root)


def cached_path(spec: ModelSpec, root: Path | None = None) -> Path | None:
    """Where ``spec`` sits in the cache, or ``None``; never touches the network."""
    if isinstance(spec.source, UrlFile):
        path = _url_cache_path(spec.source, root)
        return path if path.is_file() else None
    try:
        return fetch_hub(spec.source, root, local_only=True)
    except ModelUnavailableError:
        return None


def _split_url_pin(url: str) -> tuple[str, str | None]:
    base, _, fragment = url.partition("#")
    pin = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
    return base, pin


def resolve_head(path_or_id: str | os.PathLike[str] | None, kind: Kind) -> Path:
    """Resolve an aesthetic/NSFW head to a verified local file.

    Accepts ``None`` (the pinned default), a local file, a folder holding ``model.safetensors``,
    a known name from :data:`SPECS`, a ``file://`` URL, a remote URL pinned as ``URL#sha256=HEX``,
    or a Hugging Face id ``owner/repo[/file.safetensors][@revision]``.
    """
    if path_or_id is None:
        return fetch(default_spec(kind))
    text = os.fspath(path_or_id)
    local = Path(text).expanduser()
    if local.is_dir() and (local / "model.safetensors").is_file():
        return local / "model.safetensors"
    if local.is_file():
        return local
    if text in SPECS:
        spec = SPECS[text]
        if spec.kind != kind:
            raise ValueError(f"{text!r} is a {spec.kind} model, not a {kind} head")
        return fetch(spec)
    if "://" in text:
        url, pin = _split_url_pin(text)
        if url.startswith("file://") and pin is None:
            return resolve_head(unquote(urlsplit(url).path), kind)
        if pin is None:
            raise ValueError(
                f"refusing to download {url} without a checksum: pass it as URL#sha256=<hex> "
                "or download it yourself and pass the local path"
            )
        name = Path(unquote(urlsplit(url).path)).name or "weights"
        return fetch_url(UrlFile(url, pin, name))
    if _HF_ID.match(text):
        repo, _, revision = text.partition("@")
        owner, name, *rest = repo.split("/")
        filename = "/".join(rest) or "model.safetensors"
        if not revision:
            logger.warning("%s has no @revision: using the moving 'main' branch", text)
        return fetch_hub(HubFile(f"{owner}/{name}", filename, revision or "main"))
    raise FileNotFoundError(f"{text!r} is not a file, a known model name, a URL or a Hub id")


def resolve_clip(model: str | os.PathLike[str] | None = None, revision: str | None = None) -> Path:
    """Resolve a CLIP model to a local folder (a ``save_pretrained`` layout).

    Accepts ``None`` (the pinned default), a local folder, a known name, or a Hugging Face id
    (the default id without ``revision`` gets its pinned commit; others default to ``main``).
    """
    if model is None:
        model = default_spec("clip").name
    text = os.fspath(model)
    local = Path(text).expanduser()
    if local.is_dir():
        return local
    spec = SPECS.get(text)
    if spec is not None and isinstance(spec.source, HubSnapshot):
        return fetch_hub(HubSnapshot(spec.source.repo_id, revision or spec.source.revision))
    text = text.removeprefix("hf://")
    if text == DEFAULT_CLIP_ID:
        return fetch_hub(HubSnapshot(DEFAULT_CLIP_ID, revision or DEFAULT_CLIP_REVISION))
    if _HF_ID.match(text) and text.count("/") == 1:
        if revision is None:
            logger.warning("%s has no revision: using the moving 'main' branch", text)
        return fetch_hub(HubSnapshot(text, revision or "main"))
    raise FileNotFoundError(f"{text!r} is not a model folder, a known model name or a Hub id")
