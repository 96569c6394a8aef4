"""Optional dependencies (the ``pyproject.toml`` extras): one error type and one hint each.

pixsieve is installed from its checkout, so a hint names the extra to install there and the
package itself. The command line turns :class:`MissingExtraError` into a one-line error.
"""

from __future__ import annotations

import importlib.util


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


def hint(extra: str, what: str, packages: str) -> str:
    """How to get what ``what`` lacks: the extra, from the checkout, or ``packages`` directly."""
    return (
        f"{what}: pip install -e '.[{extra}]' in the pixsieve checkout (or pip install {packages})"
    )


RAY_HINT = hint("ray", "the Ray executor needs Ray", "'ray>=2.30'")
DALI_HINT = hint(
    "dali",
    "NVIDIA DALI is not installed",
    "nvidia-dali-cuda120 for CUDA 12 drivers, nvidia-dali-cuda130 for CUDA 13",
)
TORCHVISION_HINT = hint("gpu", "torchvision is not installed", "torchvision, a CUDA build")


def require(module: str, message: str) -> None:
    """Raise :class:`MissingExtraError` with ``message`` unless ``module`` can be imported.

    Looks the module up without importing it (Ray or DALI take seconds to import).
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        found = False
    if not found:
        raise MissingExtraError(message)
