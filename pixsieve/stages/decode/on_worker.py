"""A decode stage that picks its backend in ``setup()``, on the worker that runs it.

A cluster's driver may have no GPU while its workers do: choosing the backend there would
give GPU workers the CPU decoder. :func:`~pixsieve.stages.decode.choose_decoder` returns this
stage instead when the driver sees no GPU and the device may be one (``auto``, ``cuda...``);
it is cheap to ship, and its copy on each worker calls the chooser again there. ``backend``
says ``auto`` until then; the score pass reports the backend each worker chose, which
``run.json`` records as ``decoder``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pixsieve.batch import ImageBatch
from pixsieve.stages.base import DeviceResources
from pixsieve.stages.decode.base import DecoderStage


class WorkerChosenDecoder(DecoderStage):
    """Decode with whatever :func:`choose_decoder` picks for ``device`` on this worker."""

    backend: ClassVar[str] = "auto"  # type: ignore[misc]  # set per instance in setup()
    resources = DeviceResources()

    def __init__(self, device: str, settings: dict[str, Any]) -> None:
        self.device = device
        self.settings = dict(settings)
        self._stage: DecoderStage | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stage": None, "backend": "auto"}

    def setup(self) -> None:
        """Choose the backend here and set that stage up (once)."""
        if self._stage is None:
            from pixsieve.stages.decode.chooser import choose_here

            threads = {"threads": self.threads} if self.threads else {}
            self._stage = choose_here(self.device, **{**self.settings, **threads})
            self.backend = self._stage.backend  # type: ignore[misc]
        self._stage.setup()

    def process(self, batch: ImageBatch) -> ImageBatch:
        """Decode with the chosen stage."""
        self.setup()
        assert self._stage is not None
        return self._stage.process(batch)

    def take_counts(self) -> dict[str, int]:
        """The chosen stage's own counters (decode routing)."""
        take = getattr(self._stage, "take_counts", None)
        return take() if callable(take) else {}

    def describe(self) -> dict[str, Any]:
        """Settings for ``run.json`` (the chosen stage's, once there is one)."""
        if self._stage is not None:
            return self._stage.describe()
        return {"device": self.device, "backend": "chosen on the worker", **self.settings}
