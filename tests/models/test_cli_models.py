"""``pixsieve models download`` / ``list`` against local file:// sources and a fake Hub."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from fixtures_clip import AESTHETIC_PTH, NSFW_PTH

from pixsieve.cli.models import models
from pixsieve.models import hub


def _url_spec(name: str, kind: str, path: Path) -> hub.ModelSpec:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return hub.ModelSpec(name, kind, hub.UrlFile(path.as_uri(), digest, path.name), "", True)


@pytest.fixture
def local_specs(monkeypatch, tiny_clip_dir, tmp_path):
    """Default specs served from local files; the Hub replaced by a copy of the tiny model."""
    clip = hub.ModelSpec("clip", "clip", hub.HubSnapshot("acme/clip", "c0ffee"), "", True)
    specs = {
        "clip": clip,
        "aes": _url_spec("aes", "aesthetic", AESTHETIC_PTH),
        "nsfw": _url_spec("nsfw", "nsfw", NSFW_PTH),
    }
    monkeypatch.setattr(hub, "SPECS", specs)
    snapshots: list[tuple[str, str, bool]] = []

    def fake_snapshot(repo_id, revision, allow_patterns, cache_dir, local_files_only):
        target = Path(cache_dir) / "snap" / revision
        if not target.exists():
            if local_files_only:
                raise FileNotFoundError("not in the local cache")
            shutil.copytree(tiny_clip_dir, target)
        snapshots.append((repo_id, revision, local_files_only))
        return str(target)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    monkeypatch.setattr(hub, "_hub_reachable", lambda: True)
    return snapshots


def test_every_command_has_help():
    runner = CliRunner()
    assert models.help
    for name, command in [("models", models), *models.commands.items()]:
        assert command.help, f"{name} has no help text"
        args = [] if command is models else [name]
        result = runner.invoke(models, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
        if isinstance(command, click.Command):
            for param in command.params:
                if isinstance(param, click.Option):
                    assert param.help, f"{name} {param.opts} has no help text"


def test_download_then_list(local_specs, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    runner = CliRunner()
    target = tmp_path / "models"
    result = runner.invoke(models, ["download", "--to", str(target)])
    assert result.exit_code == 0, result.output
    assert "PIXSIEVE_CACHE" in result.output
    for name in ("aes", "nsfw"):
        source = hub.SPECS[name].source
        cached = target / "files" / source.sha256 / source.filename
        assert cached.is_file() and hub.sha256_file(cached) == source.sha256
    assert local_specs == [("acme/clip", "c0ffee", False)]

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIXSIEVE_CACHE", str(target))
    listing = runner.invoke(models, ["list"], terminal_width=250)
    assert listing.exit_code == 0, listing.output
    assert listing.output.count("yes") >= 6  # default + cached for three models
    assert "acme/clip@c0ffee" in listing.output


def test_list_on_an_empty_cache(local_specs):
    result = CliRunner().invoke(models, ["list"], terminal_width=250)
    assert result.exit_code == 0 and result.output.count(" no ") >= 3


def test_download_refuses_offline_mode():
    result = CliRunner().invoke(models, ["download"])
    assert result.exit_code != 0 and "offline" in result.output


def test_download_reports_a_checksum_mismatch(local_specs, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    bad = hub.UrlFile(NSFW_PTH.as_uri(), "f" * 64, NSFW_PTH.name)
    hub.SPECS["nsfw"] = hub.ModelSpec("nsfw", "nsfw", bad, "", True)
    result = CliRunner().invoke(models, ["download"])
    assert result.exit_code != 0
    assert "nsfw" in result.output and "sha256" in result.output
    assert "Traceback" not in result.output
