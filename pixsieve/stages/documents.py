"""Attach each sample's text (a caption sidecar or a JSON field) as a ``text`` column.

Text sources, as a string: ``"txt"`` (the ``.txt`` member; any other sidecar extension such as
``"caption"`` works the same way) or ``"json:<field>"`` (a field of the ``.json`` member, dotted
for nested objects: ``"json:meta.caption"``). The same rules serve
:func:`pixsieve.report.documents.to_documents`, which reads finished runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pixsieve.batch import ImageBatch
from pixsieve.io.tar_reader import split_name
from pixsieve.models.captions import clip_chars
from pixsieve.stages.base import Stage

CAPTION_PROBLEMS = ("missing", "empty", "not_utf8", "bad_json", "not_text")
"""Why a sample has no usable caption (see :func:`read_caption`)."""


@dataclass(frozen=True)
class TextSource:
    """Where a sample's text comes from: a sidecar extension, and a JSON field path or none."""

    extension: str
    field: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> TextSource:
        """Parse ``"txt"``, ``"caption"`` or ``"json:<field>"``; raise ``ValueError`` otherwise."""
        spec = spec.strip()
        kind, sep, path = spec.partition(":")
        kind = kind.lower()
        if sep:
            fields = tuple(p for p in path.split("."))
            if kind != "json" or not path or not all(fields):
                raise ValueError(
                    f"bad text source {spec!r}: use 'txt' or 'json:<field>' (e.g. json:caption)"
                )
            return cls("json", fields)
        if not kind or not kind.replace("_", "").isalnum() or kind == "json":
            raise ValueError(f"bad text source {spec!r}: use 'txt' or 'json:<field>'")
        return cls(kind)

    def __str__(self) -> str:
        return f"json:{'.'.join(self.field)}" if self.field else self.extension

    def member(self, members: dict[str, bytes]) -> bytes | None:
        """The bytes of this source's sidecar in ``{member name: bytes}`` (``None``: absent)."""
        return next(
            (d for name, d in members.items() if split_name(name)[1].lower() == self.extension),
            None,
        )

    def field_value(self, data: bytes) -> Any:
        """The value at :attr:`field` of a JSON sidecar (``None`` when absent or null).

        Raises:
            ValueError: the bytes are not valid JSON (``UnicodeDecodeError`` included).
        """
        value: Any = json.loads(data)
        for part in self.field:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def read(self, members: dict[str, bytes]) -> tuple[str | None, str | None]:
        """Strictly read one sample's text: ``(text, None)`` or ``(None, problem)``.

        Problems: ``missing`` (no such sidecar, field or a null field), ``not_utf8`` (a text
        sidecar that is not UTF-8), ``bad_json`` (a JSON sidecar that does not parse) and
        ``not_text`` (a JSON field holding a number, list or object).
        """
        data = self.member(members)
        if data is None:
            return None, "missing"
        if not self.field:
            try:
                return data.decode("utf-8"), None
            except UnicodeDecodeError:
                return None, "not_utf8"
        try:
            value = self.field_value(data)
        except ValueError:
            return None, "bad_json"
        if value is None:
            return None, "missing"
        return (value, None) if isinstance(value, str) else (None, "not_text")

    def extract(self, members: dict[str, bytes]) -> str | None:
        """The text of one sample from its ``{member name: bytes}`` (``None`` when absent).

        Lenient, for document export: a text sidecar that is not UTF-8 is decoded with
        replacement characters, and a non-string JSON field is returned as JSON text.
        """
        data = self.member(members)
        if data is None:
            return None
        if not self.field:
            return data.decode("utf-8", errors="replace")
        try:
            value = self.field_value(data)
        except ValueError:
            return None
        if value is None:
            return None
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def caption_sources(caption_from: str) -> tuple[TextSource, ...]:
    """The sources tried in order: ``"txt"`` → ``.txt`` then ``.json`` ``caption``.

    Raises:
        ValueError: ``caption_from`` is not ``txt``, a sidecar extension or ``json:FIELD``.
    """
    first = TextSource.parse(caption_from)
    if first == TextSource("txt"):
        return first, TextSource("json", ("caption",))
    return (first,)


def read_caption(
    sources: tuple[TextSource, ...], members: dict[str, bytes]
) -> tuple[str | None, str | None]:
    """``(caption, None)`` or ``(None, problem)``: the first source whose sidecar exists decides.

    A caption of only whitespace is ``empty``; one longer than ``MAX_CAPTION_CHARS`` has its
    whitespace collapsed and is cut there (far past CLIP's 77 tokens: the tokenizer marks it
    truncated), which bounds what a hostile sidecar costs downstream.
    """
    text, problem = None, "missing"
    for source in sources:
        text, problem = source.read(members)
        if problem == "missing" and source.member(members) is None:
            continue  # no such sidecar: try the next source
        break
    if text is None:
        return None, problem
    if not text.strip():
        return None, "empty"
    return clip_chars(text), None


class TextStage(Stage):
    """Set column ``text`` from each sample's sidecars (``None`` where there is no text).

    ``text_from``: ``"txt"`` (default), another sidecar extension, or ``"json:<field>"``. Text is
    attached to every sample, kept or not, so it lands in the manifest and the output shards'
    metadata; nothing is removed.
    """

    name: ClassVar[str] = "text"
    columns: ClassVar[Mapping[str, str]] = {"text": "string"}

    def __init__(self, text_from: str = "txt") -> None:
        self.text_from = str(TextSource.parse(text_from))

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Attach the ``text`` column."""
        source = TextSource.parse(self.text_from)
        text = np.array([source.extract(s) for s in batch.sidecars], dtype=object)
        batch.set_column("text", text)
        return batch
