"""Errors a user can fix, shared by the library and the CLI (which turns them into one line).

Each kind of mistake has one class, defined here so any layer can raise it and the CLI can catch
it by class without importing heavy modules (faiss, torch). Errors that belong to one place stay
there: :class:`pixsieve.config.ConfigError`, :class:`pixsieve.run.layout.OutputError`,
:class:`pixsieve.run.finished.RunError`, :class:`pixsieve.models.hub.ModelUnavailableError`.
"""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be used: shards that cannot be resolved (nothing matched, missing
    file, bad pattern), or an embeddings table that cannot be read (missing column, wrong type
    or dimension, NaN...)."""


class EmbeddingError(ValueError):
    """Embeddings that cannot be deduplicated (wrong shape, NaN/inf, zero vectors)."""
