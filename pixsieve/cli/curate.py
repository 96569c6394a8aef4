"""``pixsieve curate``: the whole pipeline from input shards to curated shards + manifest."""

from __future__ import annotations

import logging
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pixsieve.config import SKIPPABLE, ConfigError, CurateConfig
from pixsieve.io.shards import InputError
from pixsieve.models.hub import ModelUnavailableError
from pixsieve.pipeline import RunResult
from pixsieve.run.layout import OutputError
from pixsieve.run.summary import RunMismatch


def model_error(exc: BaseException) -> ModelUnavailableError | None:
    """The :class:`ModelUnavailableError` (or ChecksumError) behind ``exc``, if any.

    Follows ``__cause__``/``__context__`` and Ray's ``RayTaskError.cause``, so an error raised
    in a worker's model setup is found however the executor wrapped it.
    """
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ModelUnavailableError):
            return e
        todo += [getattr(e, "cause", None), e.__context__, e.__cause__]
    return None


def print_summary(result: RunResult, console: Console) -> None:
    """Print totals, per-stage counters and shard errors as tables."""
    rec = result.record
    totals = rec["totals"]
    console.print(
        f"[bold]{totals['input']:,}[/] samples: [green]{totals['kept']:,} kept[/], "
        f"[yellow]{totals['removed']:,} removed[/], [red]{totals['error']:,} errors[/] "
        f"in {rec['seconds']:.1f}s → {result.output}"
    )
    table = Table(title="stages", show_lines=False)
    for col in ("stage", "in", "kept", "dropped / errors", "seconds"):
        table.add_column(col, justify="left" if col in ("stage", "dropped / errors") else "right")
    for name, stats in rec["counters"].items():
        counts = stats["counts"]
        drops = ", ".join(
            f"{k.split('_', 1)[1]}={v:,}"
            for k, v in sorted(counts.items())
            if k.startswith(("dropped_", "errors_"))
        )
        table.add_row(
            name,
            f"{counts.get('in', 0):,}",
            f"{counts.get('kept', 0):,}",
            drops or "-",
            f"{stats.get('seconds', 0):.2f}",
        )
    console.print(table)
    if result.shard_errors:
        errs = Table(title="shard errors")
        for col in ("pass", "task", "error"):
            errs.add_column(col)
        for e in result.shard_errors:
            errs.add_row(e["pass"], e["task"], e["error"])
        console.print(errs)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output directory or fsspec URL.")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="TOML/JSON/YAML config."
)
@click.option(
    "--skip",
    multiple=True,
    type=click.Choice(SKIPPABLE),
    help="Skip a stage (repeatable); 'embed' skips all embedding stages.",
)
@click.option(
    "--samples-per-shard", type=click.IntRange(min=1), help="Samples per output tar [1000]."
)
@click.option("--workers", type=click.IntRange(min=1), help="Parallel workers [all cores].")
@click.option("--executor", type=click.Choice(["local", "ray"]), help="Where stages run [local].")
@click.option("--ray-address", help="Ray cluster address (else RAY_ADDRESS or a local cluster).")
@click.option("--clip-model", help="CLIP model: Hugging Face id or local directory.")
@click.option("--clip-revision", help="Hub revision of --clip-model.")
@click.option("--device", help="auto, cpu, cuda, cuda:N [auto].")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), help="CLIP precision.")
@click.option("--aesthetic-min", type=float, help="Keep when aesthetic score ≥ this [4.5].")
@click.option(
    "--nsfw-max", type=click.FloatRange(0, 1), help="Remove when NSFW probability ≥ this [0.5]."
)
@click.option("--aesthetic-weights", help="Aesthetic head weights: path, URL or name.")
@click.option("--nsfw-weights", help="NSFW head weights: path, URL or name.")
@click.option("--score-only", is_flag=True, default=None, help="Record all scores, remove nothing.")
@click.option(
    "--dedup-threshold",
    type=click.FloatRange(0, 1, min_open=True),
    help="Cosine similarity for near-duplicates.",
)
@click.option(
    "--keep",
    type=click.Choice(["aesthetic", "resolution", "first", "farthest"]),
    help="Which duplicate survives [aesthetic].",
)
@click.option(
    "--min-side", type=click.IntRange(min=0), help="Remove images with a shorter side below this."
)
@click.option(
    "--max-aspect-ratio",
    type=click.FloatRange(min=1),
    help="Remove images more elongated than this.",
)
@click.option(
    "--max-pixels", type=click.IntRange(min=1), help="Decompression-bomb limit in pixels."
)
@click.option(
    "--decoder",
    type=click.Choice(["auto", "pillow", "dali", "nvjpeg"]),
    help="Image decoder [auto: DALI or nvJPEG on a GPU when installed, else CPU].",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Samples per batch [256].")
@click.option("--retries", type=click.IntRange(min=0), help="Retries of a failing shard [1].")
@click.option("--overwrite", is_flag=True, help="Replace a different run already in --output.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def curate(inputs: tuple[str, ...], output: str, config_file: str | None, **opts: Any) -> None:
    """Curate WebDataset shards: decode, filter, embed, score, deduplicate, export.

    INPUTS are tar files, directories, globs, brace patterns (shard-{000..009}.tar) or fsspec
    URLs. Writes OUT/shards (kept samples, original bytes), OUT/manifest (one row per input
    sample with its fate and reason) and OUT/run.json. Re-running the same command resumes.
    Exit code 0 when the run completed, even if some samples are errors (see the manifest).
    """
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(opts["verbose"], 2)]
    )
    try:
        cfg = CurateConfig.from_file(config_file) if config_file else CurateConfig()
        cfg = cfg.with_overrides(
            {
                "read": {
                    "max_pixels": opts["max_pixels"],
                    "batch_size": opts["batch_size"],
                    "decoder": opts["decoder"],
                },
                "filters": {
                    "min_side": opts["min_side"],
                    "max_aspect_ratio": opts["max_aspect_ratio"],
                    "aesthetic_min": opts["aesthetic_min"],
                    "nsfw_max": opts["nsfw_max"],
                    "score_only": opts["score_only"],
                },
                "embed": {
                    "model": opts["clip_model"],
                    "revision": opts["clip_revision"],
                    "device": opts["device"],
                    "precision": opts["precision"],
                },
                "models": {"aesthetic": opts["aesthetic_weights"], "nsfw": opts["nsfw_weights"]},
                "dedup": {"threshold": opts["dedup_threshold"], "keep": opts["keep"]},
                "export": {"samples_per_shard": opts["samples_per_shard"]},
                "run": {
                    "executor": opts["executor"],
                    "workers": opts["workers"],
                    "retries": opts["retries"],
                    "skip": tuple(opts["skip"]) or None,
                    "ray_address": opts["ray_address"],
                },
            }
        )
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    from pixsieve.curate import curate as run_curate

    console = Console(stderr=True)
    try:  # checks the inputs, then resolves every model, before anything is written to OUTPUT
        result = run_curate(
            list(inputs), output, cfg, progress=not opts["no_progress"], overwrite=opts["overwrite"]
        )
    except InputError as e:
        raise click.UsageError(str(e)) from e
    except RunMismatch as e:
        raise click.ClickException(e.message("--overwrite")) from e
    except OutputError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:  # the environment (a vanished or read-only output...), not a sample
        raise click.ClickException(f"{type(e).__name__}: {e}") from e
    except Exception as e:
        cause = model_error(e)
        if cause is not None:
            raise click.ClickException(str(cause)) from e
        raise
    print_summary(result, console)
