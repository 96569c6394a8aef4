"""Checks of a sample's text sidecars: a bad one is a warning, never an error or a crash."""

from __future__ import annotations

import json


def sidecar_warning(name: str, ext: str, data: bytes) -> str | None:
    """Why sidecar ``name`` (extension ``ext``, lower case) does not parse, or ``None``.

    ``.json`` must be valid JSON (nesting deeper than the parser's recursion limit counts as
    invalid), ``.txt`` and ``.caption`` valid UTF-8. Never raises: whatever the parser throws
    becomes the warning. The caller bounds ``data`` by ``max_sidecar_bytes`` first.
    """
    try:
        if ext == "json":
            json.loads(data)
        elif ext in ("txt", "caption"):
            data.decode("utf-8")
    except UnicodeDecodeError:
        return f"{'invalid_json' if ext == 'json' else 'invalid_utf8'}: {name}"
    except RecursionError:
        return f"invalid_json: {name}: nested too deeply"
    except Exception as e:  # ValueError and anything else the parser may raise
        return f"invalid_json: {name}: {type(e).__name__}: {e}"[:500]
    return None
