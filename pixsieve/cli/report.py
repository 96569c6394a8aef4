"""``pixsieve report | sweep | refilter | export-docs``: look at and reuse a finished run.

A thin layer over :mod:`pixsieve.report`. None of these commands runs a model: they read the
run's manifest, cached scores and embeddings, and copy members from the shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import click
from rich.console import Console
from rich.table import Table

from pixsieve.config import EXECUTORS, CurateConfig
from pixsieve.dedup.config import check_threshold
from pixsieve.errors import EmbeddingError, InputError
from pixsieve.run.fates import OFF, Threshold
from pixsieve.run.finished import RunError
from pixsieve.run.layout import OutputError

_DEFAULTS = CurateConfig()


class ThresholdType(click.ParamType):
    """A number, or ``off``; with ``many=True`` a comma-separated list of them.

    ``check`` (e.g. the dedup threshold's rule) validates each number; its ``ValueError`` is
    reported as a usage error.
    """

    name = "threshold"

    def __init__(self, many: bool = False, check: Callable[[float], float] | None = None) -> None:
        self.many = many
        self.check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse ``4.5``, ``off`` or (``many``) ``4,4.5,off``."""
        if not isinstance(value, str):
            return value
        items = [v.strip() for v in value.split(",")] if self.many else [value.strip()]
        if "" in items:
            self.fail(f"{value!r}: give numbers or 'off', separated by commas", param, ctx)
        out: list[Threshold] = []
        for item in items:
            if item.lower() in ("off", "none"):
                out.append(OFF)
                continue
            try:
                number = float(item)
            except ValueError:
                self.fail(f"{item!r} is not a number or 'off'", param, ctx)
            if self.check is not None:
                try:
                    self.check(number)
                except ValueError as e:
                    self.fail(str(e), param, ctx)
            out.append(number)
        return out if self.many else out[0]


class NamedThresholdType(ThresholdType):
    """``NAME=VALUE`` (``many``: ``NAME=V1,V2``) for any score filter of the run, by stage name."""

    name = "name=threshold"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse ``blueness=0.3`` or (``many``) ``blueness=0.3,0.4,off``."""
        if not isinstance(value, str):
            return value
        name, sep, rest = value.partition("=")
        if not sep or not name.strip():
            self.fail(f"{value!r}: give NAME=VALUE, NAME being a score filter's stage name")
        return name.strip(), super().convert(rest, param, ctx)


_NAMED = (
    "Threshold(s) of any score filter of the run by stage name, NAME=V[,V...] (repeatable; "
    "for filters of your own, e.g. blueness=0.3,0.4)."
)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into a one-line message and exit code 1."""
    try:
        yield
    except (RunError, OutputError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    except (EmbeddingError, InputError) as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from e


def _run_dir(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("output", metavar="OUT")(f)


@click.command()
@_run_dir
@click.option("--no-blur", is_flag=True, help="Do not blur thumbnails of NSFW samples.")
@click.option(
    "--per-reason",
    type=click.IntRange(min=0),
    default=12,
    show_default=True,
    help="Thumbnails sampled per removal reason and from the kept set.",
)
def report(output: str, no_blur: bool, per_reason: int) -> None:
    """Write OUT/report.html: funnel, score histograms, thumbnails per reason, duplicate
    groups and errors of the finished run in OUT. One self-contained file that opens offline."""
    from pixsieve.report import write_report

    with user_errors():
        path = write_report(output, blur_nsfw=not no_blur, per_reason=per_reason)
    click.echo(path)


_AESTHETIC = "Aesthetic minimum(s): keep when score ≥ this; 'off' disables [the run's]."
_NSFW = "NSFW maximum(s): remove when probability ≥ this; 'off' disables [the run's]."
_DEDUP = "Semantic-dedup cosine threshold(s); 'off' disables [the run's]."


@click.command()
@_run_dir
@click.option("--aesthetic-min", type=ThresholdType(many=True), help=_AESTHETIC)
@click.option("--nsfw-max", type=ThresholdType(many=True), help=_NSFW)
@click.option(
    "--dedup-threshold", type=ThresholdType(many=True, check=check_threshold), help=_DEDUP
)
@click.option(
    "--threshold", "named", type=NamedThresholdType(many=True), multiple=True, help=_NAMED
)
@click.option("--csv", "csv_path", help="Where to write the table as CSV [OUT/sweep.csv].")
def sweep(
    output: str,
    aesthetic_min: list[Threshold] | None,
    nsfw_max: list[Threshold] | None,
    dedup_threshold: list[Threshold] | None,
    named: tuple[tuple[str, list[Threshold]], ...],
    csv_path: str | None,
) -> None:
    """How many samples each combination of thresholds keeps, from the cached scores and
    embeddings of the run in OUT (no model runs). Lists are comma-separated: 4,4.5,5."""
    from pixsieve.run.sweep import sweep as run_sweep

    with user_errors():
        result = run_sweep(
            output,
            aesthetic_min=aesthetic_min,
            nsfw_max=nsfw_max,
            dedup_threshold=dedup_threshold,
            thresholds=dict(named),
        )
        written = result.write_csv(csv_path)
    table = Table(title=f"{result.samples:,} input samples · * = the run's own thresholds")
    limits = result.columns[: result.columns.index("kept")]  # the thresholds, dedup's last
    removed = [c for c in result.columns if c.startswith("removed_")]
    for col in (*limits, "kept", "fraction"):
        table.add_column(col, justify="right")
    for col in removed:
        table.add_column("−" + col.removeprefix("removed_"), justify="right", style="dim")

    def show(v: float | None) -> str:
        return "off" if v is None else f"{v:g}"

    for row in result.rows:
        table.add_row(
            *(show(row[c]) for c in limits),
            f"{row['kept']:,}" + (" *" if row["current"] else ""),
            f"{100 * row['fraction']:.1f}%",
            *(f"{row[c]:,}" for c in removed),
        )
    console = Console()
    console.print(table)
    console.print(f"CSV: {written}")


@click.command()
@_run_dir
@click.option("-o", "--output", "new_output", required=True, help="New run directory (OUT2).")
@click.option("--aesthetic-min", type=ThresholdType(), help=_AESTHETIC)
@click.option("--nsfw-max", type=ThresholdType(), help=_NSFW)
@click.option("--dedup-threshold", type=ThresholdType(check=check_threshold), help=_DEDUP)
@click.option("--threshold", "named", type=NamedThresholdType(), multiple=True, help=_NAMED)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default=_DEFAULTS.run.executor,
    show_default=True,
    help="Where semantic dedup and export run (as for curate).",
)
@click.option("--workers", type=click.IntRange(min=1), help="Parallel export workers [all cores].")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --output.")
@click.option("--no-report", is_flag=True, help="Do not write OUT2/report.html.")
def refilter(
    output: str,
    new_output: str,
    aesthetic_min: Threshold,
    nsfw_max: Threshold,
    dedup_threshold: Threshold,
    named: tuple[tuple[str, Threshold], ...],
    executor: str,
    workers: int | None,
    overwrite: bool,
    no_report: bool,
) -> None:
    """Re-export the run in OUT with new thresholds into a new run directory, from cached
    scores and embeddings (no model runs); kept samples' members are copied byte for byte from
    the input shards, which must still be readable."""
    from pixsieve.refilter import refilter as run_refilter

    with user_errors():
        result = run_refilter(
            output,
            new_output,
            aesthetic_min=aesthetic_min,
            nsfw_max=nsfw_max,
            dedup_threshold=dedup_threshold,
            thresholds=dict(named),
            executor=executor,
            workers=workers,
            overwrite=overwrite,
            report=not no_report,
        )
    t = result.counts
    click.echo(
        f"{t['input']:,} samples: {t['kept']:,} kept, {t['removed']:,} removed, "
        f"{t['error']:,} errors → {new_output}"
    )
    for e in result.shard_errors:
        click.echo(f"error in {e['pass']} {e['task']}: {e['error']}", err=True)


def _text_source(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from pixsieve.stages.documents import TextSource

    try:
        return str(TextSource.parse(value))
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


@click.command("export-docs")
@_run_dir
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "jsonl"]),
    default="parquet",
    show_default=True,
    help="File format.",
)
@click.option("-o", "--output", "directory", required=True, help="Directory to write files to.")
@click.option(
    "--text-from",
    default="txt",
    show_default=True,
    callback=_text_source,
    help="Text source: 'txt' (or another sidecar extension) or 'json:<field>'.",
)
@click.option("--include-embedding", is_flag=True, help="Add the cached CLIP embedding.")
@click.option(
    "--include-text-embedding",
    is_flag=True,
    help="Add the cached CLIP text embedding of the caption.",
)
@click.option(
    "--rows-per-file", type=click.IntRange(min=1), default=100_000, show_default=True,
    help="Documents per output file.",
)  # fmt: skip
def export_docs(
    output: str,
    fmt: str,
    directory: str,
    text_from: str,
    include_embedding: bool,
    include_text_embedding: bool,
    rows_per_file: int,
) -> None:
    """Write the kept samples of the run in OUT as documents (id, text, metadata[, embedding]):
    the fields of datatrove and NeMo Curator, for text pipelines over captions."""
    from pixsieve.report.documents import Format, iter_documents, write_documents

    seen = {"documents": 0, "no_text": 0}

    def counted(tables: Iterator[Any]) -> Iterator[Any]:
        for table in tables:
            seen["documents"] += table.num_rows
            seen["no_text"] += table["text"].null_count
            yield table

    with user_errors():
        docs = counted(
            iter_documents(
                output, text_from, include_embedding, include_text_embedding=include_text_embedding
            )
        )
        paths = write_documents(docs, directory, cast(Format, fmt), rows_per_file)
    n, missing = seen["documents"], seen["no_text"]
    click.echo(f"{n:,} documents in {len(paths)} file(s) in {directory}")
    if missing:
        click.echo(
            f"warning: {missing:,} of {n:,} documents have no text from {text_from!r} "
            "(written as null); check --text-from",
            err=True,
        )


@click.command("export-embeddings")
@_run_dir
@click.option("-o", "--output", "directory", required=True, help="Directory to write to.")
@click.option(
    "--rows-per-file", type=click.IntRange(min=1), default=100_000, show_default=True,
    help="Embeddings per .npy file.",
)  # fmt: skip
def export_embeddings(output: str, directory: str, rows_per_file: int) -> None:
    """Write the kept samples' CLIP embeddings of the run in OUT as clip-retrieval's index
    input: DIR/img_emb/img_emb_N.npy + DIR/metadata/metadata_N.parquet, rows in the same order."""
    from pixsieve.report.embeddings import export_embeddings as export

    with user_errors():
        paths = export(output, directory, rows_per_file)
    click.echo(f"embeddings in {len(paths)} file(s) in {directory}/img_emb")


COMMANDS = (report, sweep, refilter, export_docs, export_embeddings)
"""The commands to register on :data:`pixsieve.cli.main`."""
