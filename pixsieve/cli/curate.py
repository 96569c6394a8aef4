"""``pixsieve curate``: the whole pipeline from input shards to curated shards + manifest."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from pixsieve.cli.exits import (
    EXIT_CODES_HELP,
    EXIT_MESSAGES,
    INTERRUPTED,
    INTERRUPTED_MESSAGE,
    exit_code,
)
from pixsieve.cli.options import dedup_threshold, parse_storage_options
from pixsieve.cli.summary import print_summary
from pixsieve.config import (
    DECODERS,
    EXECUTORS,
    PRECISIONS,
    SKIPPABLE,
    ConfigError,
    CurateConfig,
    StorageConfig,
)
from pixsieve.dedup.config import KEEP_POLICIES
from pixsieve.errors import InputError
from pixsieve.extras import RAY_HINT, MissingExtraError, require
from pixsieve.io.shards import ShardRef, discover_shards
from pixsieve.models.hub import ChecksumError, ModelUnavailableError
from pixsieve.run.claim import RunMismatch
from pixsieve.run.layout import OutputError
from pixsieve.stages.captions import ImageTextFilter
from pixsieve.stages.scoring import AestheticFilter, NSFWFilter

_DEFAULTS = CurateConfig()  # option help shows the config's defaults, never a copy of them

if TYPE_CHECKING:
    pass

SKIP_EMBED_HINT = "to curate without models (ingest, exact dedup, export) add --skip embed"


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


def check_output(output: str, storage_options: dict[str, Any]) -> None:
    """Cheap checks of ``output`` before any heavy import; creates nothing.

    A local path must not be a file and its nearest existing folder must be writable; for a
    URL the filesystem must be available (``s3://`` needs s3fs). ``RunLayout.open`` makes the
    full check (a probe write) when the run starts.

    Raises:
        OutputError: naming the output and what is wrong.
    """
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(output, **storage_options)
    except (ImportError, ValueError) as e:
        raise OutputError(f"cannot write to output {output!r}: {e}") from e
    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputError(f"cannot write to output {output!r}: it is a file, not a folder")
    parent = next((p for p in (target, *target.parents) if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to output {output!r}: {parent} is not writable")


def _config(config_file: str | None, opts: dict[str, Any]) -> CurateConfig:
    """The file's settings with the command line's on top (``ConfigError`` when invalid)."""
    cfg = CurateConfig.from_file(config_file) if config_file else CurateConfig()
    cfg = cfg.with_overrides(
        {
            "read": {
                "max_pixels": opts["max_pixels"],
                "batch_size": opts["batch_size"],
                "decoder": opts["decoder"],
                "keep_invalid_sidecars": opts["keep_invalid_sidecars"],
            },
            "filters": {
                "min_side": opts["min_side"],
                "max_aspect_ratio": opts["max_aspect_ratio"],
                "aesthetic_min": opts["aesthetic_min"],
                "nsfw_max": opts["nsfw_max"],
                "score_only": opts["score_only"],
                "clip_score_min": opts["clip_score_min"],
                "caption_from": opts["caption_from"],
                "require_caption": opts["require_caption"],
            },
            "embed": {
                "model": opts["clip_model"],
                "revision": opts["clip_revision"],
                "device": opts["device"],
                "precision": opts["precision"],
                "compile": opts["compile"],
            },
            "models": {"aesthetic": opts["aesthetic_weights"], "nsfw": opts["nsfw_weights"]},
            "dedup": {
                "threshold": opts["dedup_threshold"],
                "keep": opts["keep"],
                "against": tuple(opts["against"]) or None,
            },
            "export": {"samples_per_shard": opts["samples_per_shard"]},
            "run": {
                "executor": opts["executor"],
                "workers": opts["workers"],
                "retries": opts["retries"],
                "skip": tuple(opts["skip"]) or None,
                "ray_address": opts["ray_address"],
                "memory_limit": opts["memory_limit"],
            },
        }
    )
    flags = parse_storage_options(opts["storage_option"])
    if flags:  # the flags add to (and override) the file's [storage] options
        options = {**cfg.storage.options, **flags}
        cfg = dataclasses.replace(cfg, storage=StorageConfig(options=options))
    return cfg


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output directory or fsspec URL.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="TOML/JSON/YAML config (docs/config.md).",
)
@click.option(
    "--storage-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option for s3:// etc. (repeatable; VALUE may be JSON; "
    "a.b=V nests), e.g. endpoint_url=http://127.0.0.1:9000.",
)
@click.option(
    "--skip",
    multiple=True,
    type=click.Choice(SKIPPABLE),
    help="Skip a stage (repeatable); 'embed' skips all embedding stages.",
)
@click.option(
    "--samples-per-shard",
    type=click.IntRange(min=1),
    help=f"Samples per output tar [{_DEFAULTS.export.samples_per_shard}].",
)
@click.option("--workers", type=click.IntRange(min=1), help="Parallel workers [all cores].")
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    help=f"Where stages run [{_DEFAULTS.run.executor}].",
)
@click.option("--ray-address", help="Ray cluster address (else RAY_ADDRESS or a local cluster).")
@click.option(
    "--memory-limit",
    help="Memory of the exact and semantic dedup steps, e.g. 8GiB [half the machine's].",
)
@click.option("--clip-model", help="CLIP model: Hugging Face id or local directory.")
@click.option("--clip-revision", help="Hub revision of --clip-model.")
@click.option("--device", help="auto, cpu, cuda, cuda:N [auto].")
@click.option("--precision", type=click.Choice(PRECISIONS), help="CLIP precision.")
@click.option(
    "--compile/--no-compile",
    "compile",
    default=None,
    help="torch.compile the CLIP model (fixed padded batch; pays off on GPUs) [no].",
)
@click.option(
    "--aesthetic-min",
    type=float,
    help=f"Keep when aesthetic score ≥ this [{AestheticFilter.default_threshold:g}].",
)
@click.option(
    "--nsfw-max",
    type=click.FloatRange(*(NSFWFilter.threshold_range or (None, None))),
    help=f"Remove when NSFW probability ≥ this [{NSFWFilter.default_threshold:g}].",
)
@click.option(
    "--clip-score-min",
    type=click.FloatRange(*(ImageTextFilter.threshold_range or (None, None))),
    help=f"Remove when image–caption CLIP cosine < this [{ImageTextFilter.default_threshold:g}].",
)
@click.option("--caption-from", help="Captions: txt (.txt, else .json caption), json:FIELD [txt].")
@click.option("--require-caption", is_flag=True, default=None, help="Remove uncaptioned samples.")
@click.option("--aesthetic-weights", help="Aesthetic head weights: path, URL or name.")
@click.option("--nsfw-weights", help="NSFW head weights: path, URL or name.")
@click.option("--score-only", is_flag=True, default=None, help="Record all scores, remove nothing.")
@click.option(
    "--keep-invalid-sidecars",
    is_flag=True,
    default=None,
    help="Keep samples whose JSON/text sidecar does not parse (a warning, not an error).",
)
@click.option(
    "--dedup-threshold",
    type=float,
    callback=dedup_threshold,
    help="Cosine similarity for near-duplicates, in (0, 1] [0.95].",
)
@click.option(
    "--keep",
    type=click.Choice(KEEP_POLICIES),
    help=f"Which duplicate survives [{_DEFAULTS.dedup.keep}].",
)
@click.option(
    "--against",
    multiple=True,
    metavar="OUT",
    help="An earlier curate output, a directory or an fsspec URL (repeatable): remove new "
    "copies of what it kept.",
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
    type=click.Choice(DECODERS),
    help="Image decoder [auto: DALI or nvJPEG on a GPU when installed, else CPU].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help=f"Samples per batch [{_DEFAULTS.read.batch_size}].",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    help=f"Retries of a failing shard [{_DEFAULTS.run.retries}].",
)
@click.option("--overwrite", is_flag=True, help="Replace a different run already in --output.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def curate(inputs: tuple[str, ...], output: str, config_file: str | None, **opts: Any) -> None:
    """Curate WebDataset shards: decode, filter, embed, score, deduplicate, export.

    INPUTS are tar files, directories, globs, brace patterns (shard-{000..009}.tar) or fsspec
    URLs. Writes OUT/shards (kept samples, original bytes), OUT/manifest (one row per input
    sample with its fate and reason) and OUT/run.json. Re-running the same command resumes.
    Storage options for s3:// and other URLs come from --storage-option or the config's
    [storage] options (and the usual environment, e.g. AWS_ENDPOINT_URL).
    """
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(opts["verbose"], 2)]
    )
    try:
        cfg = _config(config_file, opts)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    storage = cfg.storage.options
    try:  # cheap checks first: inputs, output and extras before torch and the models load
        if cfg.run.executor == "ray":
            require("ray", RAY_HINT)
        shards: list[ShardRef] = discover_shards(list(inputs), storage)
        check_output(output, storage)
    except InputError as e:
        raise click.UsageError(str(e)) from e
    except (OutputError, MissingExtraError) as e:
        raise click.ClickException(str(e)) from e
    console = Console(stderr=True)
    try:
        result = _run(shards, output, cfg, opts)
    except KeyboardInterrupt:
        console.print(f"[yellow]{INTERRUPTED_MESSAGE}[/]")
        sys.exit(INTERRUPTED)
    print_summary(result, console)
    code = exit_code(result.record)
    if code:
        console.print(f"[red]{EXIT_MESSAGES[code]}[/] (exit code {code})")
    sys.exit(code)


def _run(shards: list[ShardRef], output: str, cfg: CurateConfig, opts: dict[str, Any]) -> Any:
    """Run the default pipeline; turn the errors a user can act on into one-line messages."""
    from pixsieve.curate import curate as run_curate

    try:  # resolves every model before anything is written to OUTPUT
        return run_curate(
            shards,
            output,
            cfg,
            progress=not opts["no_progress"],
            overwrite=opts["overwrite"],
        )
    except InputError as e:
        raise click.UsageError(str(e)) from e
    except RunMismatch as e:
        raise click.ClickException(e.message("--overwrite")) from e
    except (OutputError, MissingExtraError) as e:  # on Ray, the worker's own error (its cause)
        raise click.ClickException(str(getattr(e, "cause", None) or e)) from e
    except OSError as e:  # the environment (a vanished or read-only output...), not a sample
        raise click.ClickException(f"{type(e).__name__}: {e}") from e
    except Exception as e:
        cause = model_error(e)
        if cause is not None:
            hint = "" if isinstance(cause, ChecksumError) else f"; {SKIP_EMBED_HINT}"
            raise click.ClickException(f"{cause}{hint}") from e
        raise
