"""Typed config sections: check a table of settings against a frozen dataclass's fields.

:func:`build_section` builds one section of :mod:`pixsieve.config` from a mapping read from a
file or the command line, checking every key and the type of every value.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any


class ConfigError(ValueError):
    """A configuration file or value is unusable."""


def type_name(value: Any) -> str:
    """The type of a config value in a user's words (``list`` for lists and tuples)."""
    return "list" if isinstance(value, list | tuple) else type(value).__name__


def _describe(annotation: Any) -> str:
    """Human words for a field's annotation: ``int | None`` → ``an integer (or unset)``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        words = " or ".join(_describe(a) for a in args if a is not type(None))
        return f"{words} (or unset)" if type(None) in args else words
    if typing.get_origin(annotation) is tuple:
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
    if typing.get_origin(annotation) is dict:
        return "a table of key = value settings"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, str(annotation)
    )


def _coerce(value: Any, annotation: Any) -> tuple[bool, Any]:
    """``(ok, value)``: whether ``value`` fits ``annotation``, and its stored form."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is not type(None):
                ok, out = _coerce(value, arg)
                if ok:
                    return True, out
        return False, value
    if origin is dict:  # dict[str, Any]: a table with string keys
        ok = isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
        return ok, dict(value) if ok else value
    if origin is tuple:  # tuple[str, ...]: a list or tuple of the item type
        (item, *_rest) = typing.get_args(annotation)
        if not isinstance(value, list | tuple):
            return False, value
        items = [_coerce(v, item) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    return isinstance(value, annotation), value


def build_section(kind: type, values: Any, where: str = "config") -> Any:
    """Build section dataclass ``kind`` from ``values``, checking every key and value type."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{where} must be a table of key = value settings, got {type_name(values)} {values!r}"
        )
    names = {f.name for f in fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown, key=str)} in {where}; known: {sorted(names)}"
        )
    hints = typing.get_type_hints(kind)
    checked: dict[str, Any] = {}
    for key, value in values.items():
        ok, checked[key] = _coerce(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{where} {key} must be {_describe(hints[key])}, got {type_name(value)} {value!r}"
            )
    return kind(**checked)
