"""``pixsieve dedup``: semantic deduplication of embeddings in Parquet files, out of core."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pixsieve.calls import default_workers
from pixsieve.cli.options import dedup_threshold
from pixsieve.dedup import (
    DEFAULT_MODE,
    DEFAULT_THRESHOLD,
    KEEP_POLICIES,
    MODES,
    EmbeddingError,
    InputError,
    SemanticDedupConfig,
)
from pixsieve.dedup.memory import default_memory_limit, parse_size
from pixsieve.dedup.partitioned import PartitionedResult, dedup_files
from pixsieve.dedup.recluster import RECLUSTER_CHOICES
from pixsieve.dedup.sources import Columns

PHASE_LABELS: dict[str, str] = {
    "read": "reading (files)",
    "assign": "assigning (files)",
    "ids": "checking ids",
    "earlier": "against earlier (buckets)",
    "similarity": "searching (buckets)",
    "gather": "gathering groups",
    "resolve": "resolving groups",
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


def _summary(
    console: Console, result: PartitionedResult, config: SemanticDedupConfig, seconds: float
) -> None:
    c = result.counts
    n = max(c.get("n", 0), 1)
    console.print(
        f"[bold]{c.get('removed', 0):,}[/] of {c.get('n', 0):,} items are duplicates "
        f"({100.0 * c.get('removed', 0) / n:.2f}%) in {c.get('components', 0):,} groups; "
        f"{c.get('chained_components', 0):,} groups are chained"
    )
    console.print(
        f"threshold {config.threshold:g} (eps {config.eps:g}), "
        f"mode {config.mode}, keep {result.keep_policy}, "
        f"{c.get('n_clusters', 0):,} clusters in {c.get('buckets', 0):,} buckets, "
        f"{c.get('border_memberships', 0):,} border memberships, {seconds:.1f}s"
    )
    if "removed_as_earlier" in c and "beyond_radius_share" in c:
        console.print(
            f"{c['removed_as_earlier']:,} removed as duplicates of earlier runs; "
            f"{100.0 * c['beyond_radius_share']:.2f}% of the new items lie beyond the earlier "
            "clusters' radius"
            + (f"; {c['recluster_extra']:,} centroids added" if "recluster_extra" in c else "")
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {result.duplicates}", markup=False, soft_wrap=True)


def _memory(ctx: click.Context, param: click.Parameter, value: str | None) -> int:
    if value is None:
        return default_memory_limit()
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("dedup")
@click.argument("embeddings", nargs=-1, required=True)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for duplicates.parquet and dedup.json.",
)
@click.option(
    "--memory-limit",
    default=None,
    callback=_memory,
    help="Peak memory of the whole run, e.g. 3GiB (default: half of this machine's memory).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=default_workers(),
    show_default=True,
    help="Tasks (files, buckets) processed at once (default: one more than the cores, "
    "so that one computes while another waits on the disk).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Partition files (default OUTPUT/work); rerunning resumes from them.",
)
@click.option(
    "--keep-work/--no-keep-work",
    default=False,
    show_default=True,
    help="Keep the partition files after a successful run.",
)
@click.option(
    "--threshold",
    "-t",
    type=float,
    callback=dedup_threshold,
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Cosine similarity in (0, 1] at or above which two items are duplicates (= 1 - eps).",
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
    help="k-means clusters (default: about one per 1,000 items).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="k-means seed.")
@click.option(
    "--against",
    "against",
    multiple=True,
    help="An earlier pixsieve dedup output, a directory or an fsspec URL (repeatable): new "
    "items that duplicate an item it kept are removed (reason duplicate_of_earlier); its "
    "centroids are reused.",
)
@click.option(
    "--recluster",
    type=click.Choice(RECLUSTER_CHOICES),
    default="off",
    show_default=True,
    help="With --against: fit extra centroids on the new items beyond the earlier clusters' "
    "radius (on), only when over 25% of them are (auto); the cross-batch search stays exact.",
)
@click.option(
    "--model-id",
    default=None,
    help="Name of the model that made the embeddings; recorded, and checked by --against.",
)
@click.option(
    "--index/--no-index",
    default=True,
    show_default=True,
    help="Write OUTPUT/index (centroids and kept items) for later --against runs.",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
def dedup(
    embeddings: tuple[str, ...],
    output: Path,
    memory_limit: int,
    workers: int,
    work_dir: Path | None,
    keep_work: bool,
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
    against: tuple[str, ...],
    recluster: str,
    model_id: str | None,
    index: bool,
    progress: bool,
) -> None:
    """Find near-duplicate images from their embeddings: Parquet files, directories or globs.

    Works out of core: memory stays under --memory-limit whatever the number of rows, and an
    interrupted run resumes where it stopped. Writes OUTPUT/duplicates.parquet with one row per
    removed id: id, duplicate_of, similarity, component_id, component_size, chained.
    """
    console = Console(stderr=True)
    config = SemanticDedupConfig(
        threshold=threshold, keep=keep, mode=mode, n_clusters=clusters, seed=seed
    )
    resolution = keep == "resolution"
    columns = Columns(
        id=id_column,
        embedding=embedding_column,
        score=score_column,
        width=width_column if resolution else None,
        height=height_column if resolution else None,
    )
    start = time.perf_counter()
    try:
        with _progress_bars(console, progress) as update:
            result = dedup_files(
                list(embeddings),
                output,
                config,
                columns=columns,
                memory_limit=memory_limit,
                workers=workers,
                work_dir=work_dir,
                progress=update,
                keep_work=keep_work,
                against=list(against),
                model=model_id,
                index=index,
                recluster=recluster,
            )
    except (EmbeddingError, InputError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # the environment (a full disk, a vanished directory), not an input
        hint = ""
        if exc.errno == errno.ENOSPC:
            hint = (
                "; the work files need about (2 + border rate) x rows x dim x 4 bytes "
                "(docs/dedup.md): rerun the same command to resume once there is room, or "
                "start afresh with --work-dir on a larger disk"
            )
        raise click.ClickException(f"{type(exc).__name__}: {exc}{hint}") from exc
    _summary(console, result, config, time.perf_counter() - start)
