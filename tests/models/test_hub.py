"""The pinned-model cache: checksums, atomic downloads, offline failures, id resolution."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fixtures_clip import AESTHETIC_PTH, NSFW_PTH, WEIGHTS
from huggingface_hub.errors import LocalEntryNotFoundError

from pixsieve.models import hub
from pixsieve.models.hub import (
    ChecksumError,
    HubFile,
    HubSnapshot,
    ModelUnavailableError,
    UrlFile,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pinned_sums() -> dict[str, str]:
    lines = (WEIGHTS / "SHA256SUMS").read_text().split("\n")
    return {Path(name).name: digest for digest, name in (ln.split() for ln in lines if ln)}


def test_default_pins_match_the_fixture_weights():
    sums = _pinned_sums()
    for kind in ("aesthetic", "nsfw"):
        source = hub.default_spec(kind).source
        assert isinstance(source, UrlFile)
        assert sums[source.filename] == source.sha256
        assert source.url.startswith("https://")
    clip = hub.default_spec("clip").source
    assert isinstance(clip, HubSnapshot)
    assert clip.repo_id == "openai/clip-vit-large-patch14"
    assert len(clip.revision) == 40 and int(clip.revision, 16) >= 0
    assert "*.safetensors" in clip.allow_patterns  # never the .bin/.h5/.msgpack copies


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXSIEVE_CACHE", str(tmp_path / "c"))
    assert hub.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PIXSIEVE_CACHE")
    assert hub.cache_dir() == Path.home() / ".cache" / "pixsieve"


def test_file_url_download_is_verified_and_atomic(offline):
    source = UrlFile(AESTHETIC_PTH.as_uri(), _sha(AESTHETIC_PTH), AESTHETIC_PTH.name)
    seen: list[tuple[int, int | None]] = []
    path = hub.fetch_url(source, progress=lambda _label, done, total: seen.append((done, total)))
    assert path == offline / "files" / source.sha256 / AESTHETIC_PTH.name
    assert path.read_bytes() == AESTHETIC_PTH.read_bytes()
    assert seen[-1][0] == AESTHETIC_PTH.stat().st_size
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .part- leftovers


def test_checksum_mismatch_discards_the_file(offline):
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match="expected 0000"):
        hub.fetch_url(UrlFile(NSFW_PTH.as_uri(), wrong, "nsfw.pth"))
    folder = offline / "files" / wrong
    assert not folder.exists() or list(folder.iterdir()) == []


def test_tampered_cache_entry_is_replaced(offline):
    source = UrlFile(NSFW_PTH.as_uri(), _sha(NSFW_PTH), NSFW_PTH.name)
    path = hub.fetch_url(source)
    path.write_bytes(b"evil pickle")
    assert hub.fetch_url(source).read_bytes() == NSFW_PTH.read_bytes()


def test_offline_cache_miss_says_how_to_fetch(offline):
    with pytest.raises(ModelUnavailableError, match="pixsieve models download") as info:
        hub.resolve_head(None, "aesthetic")
    assert "offline" in str(info.value)


def test_offline_default_heads_load_from_a_filled_cache(offline):
    for kind, pth in (("aesthetic", AESTHETIC_PTH), ("nsfw", NSFW_PTH)):
        spec = hub.default_spec(kind)
        target = offline / "files" / spec.source.sha256 / spec.source.filename
        target.parent.mkdir(parents=True)
        target.write_bytes(pth.read_bytes())
        assert hub.resolve_head(None, kind) == target
        assert hub.cached_path(spec) == target


def test_resolve_head_accepts_paths_names_and_pinned_urls(offline, tmp_path):
    assert hub.resolve_head(AESTHETIC_PTH, "aesthetic") == AESTHETIC_PTH
    assert hub.resolve_head(AESTHETIC_PTH.as_uri(), "aesthetic") == AESTHETIC_PTH
    folder = tmp_path / "head"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    assert hub.resolve_head(folder, "aesthetic") == folder / "model.safetensors"
    pinned = f"{NSFW_PTH.as_uri()}#sha256={_sha(NSFW_PTH)}"
    assert hub.resolve_head(pinned, "nsfw").read_bytes() == NSFW_PTH.read_bytes()
    with pytest.raises(ValueError, match="nsfw model, not a aesthetic"):
        hub.resolve_head("laion-nsfw-l14", "aesthetic")
    with pytest.raises(ValueError, match="without a checksum"):
        hub.resolve_head("https://example.com/head.pth", "nsfw")
    with pytest.raises(FileNotFoundError):
        hub.resolve_head("no such thing", "nsfw")


def test_hub_ids_go_through_huggingface_hub_with_pins(monkeypatch, tmp_path, offline):
    calls: list[tuple] = []

    def fake_file(repo_id, filename, revision, cache_dir, local_files_only):
        calls.append((repo_id, filename, revision, local_files_only))
        path = tmp_path / filename
        path.write_bytes(b"w")
        return str(path)

    def fake_snapshot(repo_id, revision, allow_patterns, cache_dir, local_files_only):
        calls.append((repo_id, revision, tuple(allow_patterns), local_files_only))
        assert Path(cache_dir) == offline / "hf"
        return str(tmp_path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_file)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    hub.resolve_head("laion-aesthetic-v2-hf", "aesthetic")
    hub.resolve_head("someone/head/weights.safetensors@abc123", "nsfw")
    hub.resolve_clip()
    hub.resolve_clip("openai/clip-vit-large-patch14")
    hub.resolve_clip("hf://someone/clip", revision="v1")
    pinned = hub.DEFAULT_CLIP_REVISION
    assert calls[0] == (
        "ttj/sac-logos-ava1-l14-linearMSE",
        "model.safetensors",
        "1e77fa05081323d99725fc40a9bf9f88180490e7",
        True,
    )
    assert calls[1] == ("someone/head", "weights.safetensors", "abc123", True)
    assert calls[2][:2] == calls[3][:2] == ("openai/clip-vit-large-patch14", pinned)
    assert calls[4][:2] == ("someone/clip", "v1")
    assert all(call[-1] is True for call in calls)  # HF_HUB_OFFLINE=1 → local_files_only


def test_hub_failures_become_model_unavailable(monkeypatch, offline):
    def missing(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr("huggingface_hub.snapshot_download", missing)
    with pytest.raises(ModelUnavailableError, match="pixsieve models download") as info:
        hub.resolve_clip()
    assert "openai/clip-vit-large-patch14@" in str(info.value)
    assert hub.cached_path(hub.default_spec("clip")) is None


def test_real_hub_cache_miss_offline_fails_fast(offline):
    with pytest.raises(ModelUnavailableError, match="offline mode"):
        hub.fetch_hub(HubFile("openai/clip-vit-large-patch14", "config.json", "main"))


def test_hub_blobs_are_checked_against_their_names(tmp_path):
    data = b"tensor bytes"
    good = tmp_path / "blobs" / hashlib.sha256(data).hexdigest()
    good.parent.mkdir()
    good.write_bytes(data)
    link = tmp_path / "model.safetensors"
    os.symlink(good, link)
    hub._verify_hub_blob(link)
    good.write_bytes(b"corrupted")
    with pytest.raises(ChecksumError):
        hub._verify_hub_blob(link)
    text = b'{"a": 1}'
    sha1 = hashlib.sha1(b"blob %d\0" % len(text) + text).hexdigest()
    (tmp_path / "blobs" / sha1).write_bytes(text)
    os.symlink(tmp_path / "blobs" / sha1, tmp_path / "config.json")
    hub._verify_hub_blob(tmp_path / "config.json")


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls: list[bool] = []

    def fake_snapshot(*args, local_files_only, **kwargs):
        calls.append(local_files_only)
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    monkeypatch.setattr(hub, "_hub_reachable", lambda: False)
    with pytest.raises(ModelUnavailableError, match="cannot reach the Hugging Face Hub"):
        hub.resolve_clip()
    assert calls == [True]  # only the cache was consulted, no 30-second retry loop


def test_pinned_commit_cache_hit_never_contacts_the_hub(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls: list[bool] = []

    def fake_snapshot(*args, local_files_only, **kwargs):
        calls.append(local_files_only)
        return str(tmp_path)

    def no_probe():
        raise AssertionError("the Hub was probed although the pinned snapshot is cached")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    monkeypatch.setattr(hub, "_hub_reachable", no_probe)
    assert hub.resolve_clip() == tmp_path
    assert calls == [True]
