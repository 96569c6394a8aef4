"""Launch model work on the device ahead of time; land its results on the host later.

The score pass keeps the GPU busy by overlapping batches: it *launches* batch k+1 (the CLIP
forward and both heads, queued on the device) before it *lands* batch k (waits for its small
device → host copy and runs the stages' ``process``, which then only applies thresholds).

A model stage takes part by having ``launch(batch)``: it reads device tensors other stages
launched (``batch.launched``) and adds its own as ``batch.launched[name] = (rows, tensor)``,
the rows of the batch the tensor's rows belong to. :func:`land` copies every launched tensor to
page-locked host memory with one ``non_blocking`` copy each and an event (CUDA), waits for the
event only when the batch is consumed, and writes full-length columns (NaN in the rows not
computed) into ``batch.columns``, naming them in ``batch.landed``; a stage's ``process`` uses a
landed column instead of computing it again. On the CPU the same code runs, synchronously.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pixsieve.batch import ImageBatch
from pixsieve.stages.base import StageLike, StageStats, stage_name


def launchers(stages: Sequence[StageLike]) -> list[StageLike]:
    """The leading stages that can launch (a stage without ``launch`` ends the chain).

    Only a prefix is launched: a stage after one that cannot launch may depend on what that
    stage did in ``process``.
    """
    out: list[StageLike] = []
    for stage in stages:
        if not callable(getattr(stage, "launch", None)):
            break
        out.append(stage)
    return out


class HostCopy:
    """Device → host copies of a batch's launched tensors, started now, waited for later."""

    def __init__(self, launched: dict[str, tuple[np.ndarray, Any]]) -> None:
        import torch

        self.rows: dict[str, np.ndarray] = {}
        self.host: dict[str, Any] = {}
        self.event: Any = None
        self.tensors = launched  # held until the copy is done
        for name, (rows, tensor) in launched.items():
            self.rows[name] = rows
            if tensor.device.type == "cuda":
                with torch.inference_mode(False):
                    buf = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                buf.copy_(tensor, non_blocking=True)
                self.host[name] = buf
            else:
                self.host[name] = tensor.detach()
        if any(t.device.type == "cuda" for _, t in launched.values()):
            self.event = torch.cuda.Event()
            self.event.record()

    def wait(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Block until the copies are done; ``{name: (rows, host array)}``."""
        if self.event is not None:
            self.event.synchronize()
        self.tensors = {}
        return {n: (self.rows[n], self.host[n].float().numpy()) for n in self.host}


def launch(
    batch: ImageBatch, stages: Sequence[StageLike], stats: dict[str, StageStats]
) -> HostCopy | None:
    """Queue every launcher's device work for ``batch``; start and return the copy back."""
    for stage in stages:
        start = time.perf_counter()
        stage.launch(batch)  # type: ignore[attr-defined]
        stats[stage_name(stage)].seconds += time.perf_counter() - start
    copy = HostCopy(batch.launched) if batch.launched else None
    batch.launched = {}  # the device tensors live on in the copy until it lands
    return copy


def land(batch: ImageBatch, copy: HostCopy | None) -> None:
    """Wait for ``copy`` and write its results as columns of ``batch`` (NaN where not computed)."""
    if copy is None:
        return
    for name, (rows, values) in copy.wait().items():
        full = np.full((len(batch), *values.shape[1:]), np.nan, dtype=np.float32)
        full[rows] = values
        batch.set_column(name, full)
        batch.landed.add(name)
