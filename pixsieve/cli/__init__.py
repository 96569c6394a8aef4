"""Command-line interface: a thin layer over the Python API.

Each command group lives in its own module and is registered on :data:`main` here.
"""

from __future__ import annotations

import click

from pixsieve.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pixsieve")
def main() -> None:
    """pixsieve: curate WebDataset image datasets, losing nothing and explaining every drop."""


def _register() -> None:
    from pixsieve.cli import curate, dedup, models, report

    main.add_command(curate.curate)
    main.add_command(models.models)
    main.add_command(dedup.dedup)
    for command in report.COMMANDS:
        main.add_command(command)


_register()
