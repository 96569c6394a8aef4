"""``pixsieve models``: pre-fetch the pinned model weights and show what is cached.

A thin layer over :mod:`pixsieve.models.hub`. ``download`` is what you run once on a machine
with network access; copy the cache folder elsewhere and set ``PIXSIEVE_CACHE`` to work offline.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from pixsieve.models import hub


def _source_text(spec: hub.ModelSpec) -> str:
    src = spec.source
    if isinstance(src, hub.UrlFile):
        return f"{src.url}\nsha256 {src.sha256}"
    if isinstance(src, hub.HubFile):
        return f"hf://{src.repo_id}/{src.filename}@{src.revision}"
    return f"hf://{src.repo_id}@{src.revision} ({', '.join(src.allow_patterns)})"


def _selected(include_all: bool) -> list[hub.ModelSpec]:
    return [s for s in hub.SPECS.values() if s.default or include_all]


def _fetch_with_progress(spec: hub.ModelSpec, root: Path, console: Console) -> Path:
    """Fetch one model: a rich progress bar for URL files, the Hub's own bars for snapshots."""
    if not isinstance(spec.source, hub.UrlFile):
        console.print(f"{spec.name}: fetching {_source_text(spec)}")
        path = hub.fetch(spec, root)
        if spec.kind == "clip":  # a snapshot cached before the tokenizer was pinned lacks it
            from pixsieve.models.clip_text import fill_tokenizer

            fill_tokenizer(path)
        return path
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, TransferSpeedColumn(), console=console) as bar:
        task = bar.add_task(spec.name, total=None)

        def report(_label: str, done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return hub.fetch(spec, root, progress=report)


@click.group("models")
def models() -> None:
    """Fetch and inspect the pinned models: CLIP ViT-L/14, LAION aesthetic and NSFW heads."""


@models.command("download")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache folder to fill (default: $PIXSIEVE_CACHE or ~/.cache/pixsieve).",
)
@click.option(
    "--all", "include_all", is_flag=True, help="Also fetch the alternative (non-default) models."
)
def download(to: Path | None, include_all: bool) -> None:
    """Download every default model into the cache and verify its checksum."""
    console = Console(stderr=True)
    if hub.is_offline():
        raise click.ClickException("offline mode is on (HF_HUB_OFFLINE / PIXSIEVE_OFFLINE)")
    root = to.expanduser().resolve() if to is not None else hub.cache_dir()
    for spec in _selected(include_all):
        try:
            path = _fetch_with_progress(spec, root, console)
        except hub.ModelUnavailableError as exc:
            raise click.ClickException(f"{spec.name}: {exc}") from exc
        console.print(f"[green]✓[/] {spec.name} → {path}")
    if to is not None and root != hub.cache_dir():
        console.print(f"Set PIXSIEVE_CACHE={root} to use this cache.")


@models.command("list")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache folder to inspect (default: $PIXSIEVE_CACHE or ~/.cache/pixsieve).",
)
@click.option("--all", "include_all", is_flag=True, help="Also list the alternative models.")
def list_models(cache: Path | None, include_all: bool) -> None:
    """Show each pinned model, its exact source and whether it is in the cache."""
    root = cache.expanduser().resolve() if cache is not None else hub.cache_dir()
    table = Table(title=f"models (cache: {root})", show_lines=True)
    for col in ("name", "kind", "default", "pinned source", "cached"):
        table.add_column(col, overflow="fold")
    for spec in _selected(include_all):
        path = hub.cached_path(spec, root)
        cached = f"[green]yes[/] {path}" if path is not None else "[yellow]no[/]"
        default = "yes" if spec.default else ""
        table.add_row(spec.name, spec.kind, default, _source_text(spec), cached)
    Console().print(table)
