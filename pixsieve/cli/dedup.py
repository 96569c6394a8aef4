"""``pixsieve dedup``: semantic deduplication of an embeddings Parquet table."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pixsieve.dedup import (
    DEFAULT_MODE,
    DEFAULT_THRESHOLD,
    KEEP_POLICIES,
    MODES,
    DedupResult,
    EmbeddingError,
    SemanticDedupConfig,
    find_duplicates,
    read_embeddings,
    write_duplicates,
)

PHASE_LABELS: dict[str, str] = {
    "read": "reading embeddings",
    "normalise": "normalising",
    "kmeans": "k-means",
    "assign": "assigning to clusters",
    "similarity": "searching clusters",
}


@contextmanager
def _progress_bars(console: Console, enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Yield a ``progress(phase, done, total)`` callback drawing one rich bar per phase."""
    if not enabled:
        yield lambda phase, done, total: None
        return
    bars = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(PHASE_LABELS.get(phase, phase), total=total)
        bars.update(tasks[phase], completed=done, total=total)

    with bars:
        yield update


def _summary(console: Console, result: DedupResult, seconds: float, target: Path) -> None:
    c = result.counts
    n = max(c.get("n", len(result)), 1)
    console.print(
        f"[bold]{c.get('removed', 0):,}[/] of {len(result):,} items are duplicates "
        f"({100.0 * c.get('removed', 0) / n:.2f}%) in {c.get('components', 0):,} groups; "
        f"{c.get('chained_components', 0):,} groups are chained"
    )
    console.print(
        f"threshold {result.config.threshold:g} (eps {result.config.eps:g}), "
        f"mode {result.config.mode}, keep {result.keep_policy}, "
        f"{c.get('n_clusters', 0):,} clusters, {c.get('border_memberships', 0):,} border "
        f"memberships, {seconds:.1f}s"
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {target}", markup=False, soft_wrap=True)


@click.command("dedup")
@click.argument("embeddings", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for duplicates.parquet and dedup.json.",
)
@click.option(
    "--threshold",
    "-t",
    type=click.FloatRange(-1.0, 1.0),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Cosine similarity at or above which two items are duplicates (= 1 - eps).",
)
@click.option(
    "--keep",
    type=click.Choice(KEEP_POLICIES),
    default="aesthetic",
    show_default=True,
    help="Which item of a duplicate group survives (aesthetic needs --score-column).",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=DEFAULT_MODE,
    show_default=True,
    help="witness: removed only when >= threshold to a kept item; components: one survivor "
    "per connected group (chains included); semdedup: NeMo Curator's rule.",
)
@click.option("--id-column", default="id", show_default=True, help="Column with unique ids.")
@click.option(
    "--embedding-column",
    default="embedding",
    show_default=True,
    help="List column of floats (e.g. image_embedding for NeMo Curator output).",
)
@click.option("--score-column", default=None, help="Aesthetic score column for --keep aesthetic.")
@click.option(
    "--width-column", default="width", show_default=True, help="Width column for --keep resolution."
)
@click.option(
    "--height-column",
    default="height",
    show_default=True,
    help="Height column for --keep resolution.",
)
@click.option(
    "--clusters",
    type=click.IntRange(min=1),
    default=None,
    help="k-means clusters (default: about sqrt(N)).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="k-means seed.")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
def dedup(
    embeddings: Path,
    output: Path,
    threshold: float,
    keep: str,
    mode: str,
    id_column: str,
    embedding_column: str,
    score_column: str | None,
    width_column: str,
    height_column: str,
    clusters: int | None,
    seed: int,
    progress: bool,
) -> None:
    """Find near-duplicate images from their embeddings (a Parquet file or directory).

    Writes OUTPUT/duplicates.parquet with one row per removed id: id, duplicate_of,
    similarity, component_id, component_size, chained.
    """
    console = Console(stderr=True)
    config = SemanticDedupConfig(
        threshold=threshold, keep=keep, mode=mode, n_clusters=clusters, seed=seed
    )
    resolution = keep == "resolution"
    start = time.perf_counter()
    try:
        with _progress_bars(console, progress) as update:
            table = read_embeddings(
                embeddings,
                id_column=id_column,
                embedding_column=embedding_column,
                score_column=score_column,
                width_column=width_column if resolution else None,
                height_column=height_column if resolution else None,
                progress=update,
            )
            result = find_duplicates(
                table.embeddings,
                config,
                aesthetic=table.aesthetic,
                resolution=table.resolution,
                progress=update,
            )
    except EmbeddingError as exc:
        raise click.ClickException(str(exc)) from exc
    target = write_duplicates(output, table.ids, result, extra={"input": str(embeddings)})
    _summary(console, result, time.perf_counter() - start, target)
