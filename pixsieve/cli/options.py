"""Option parsing shared by several commands: one rule per kind of value."""

from __future__ import annotations

import json
from typing import Any

import click


def dedup_threshold(ctx: click.Context, param: click.Parameter, value: float | None) -> Any:
    """Click callback: a semantic-dedup threshold, checked by the one rule in the dedup config."""
    if value is None:
        return None
    from pixsieve.dedup.config import check_threshold

    try:
        return check_threshold(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from e


def parse_storage_options(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as fsspec storage options; a VALUE that parses as JSON is JSON.

    ``anon=true`` gives ``{"anon": True}``, ``client_kwargs={"region_name": "eu-west-1"}`` a
    dict, ``endpoint_url=http://127.0.0.1:9000`` a string. Dotted keys nest:
    ``client_kwargs.endpoint_url=URL`` gives ``{"client_kwargs": {"endpoint_url": URL}}``.

    Raises:
        click.BadParameter: for an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise click.BadParameter(
                f"{item!r}: expected KEY=VALUE (VALUE may be JSON), e.g. anon=true",
                param_hint="'--storage-option'",
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.split(".")
        target = out
        for part in parents:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise click.BadParameter(
                    f"{item!r}: {part} is already set to a plain value",
                    param_hint="'--storage-option'",
                )
            target = nested
        target[leaf] = value
    return out
