"""Every test under tests/models runs offline, with an empty per-test model cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline(offline):
    return offline
