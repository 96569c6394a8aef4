"""Unit rows as int8, for the matrix products of the cross search
(:mod:`pixsieve.dedup.crossmatch`) and of the similarity phase
(:func:`pixsieve.dedup.pairs.int8_pairs`).

A row ``x`` is stored as ``q = round(x / s)`` with ``s = max|x_i| / 127`` (int8) and two float32
numbers: ``s`` and ``r``, an upper bound on ``|x - s q|``. For two rows the approximate cosine
``s_x s_y (q_x . q_y)`` is within :func:`pair_bound` of the exact one (``x.y - x~.y~ = x.(y - y~)
+ (x - x~).y~``, Cauchy-Schwarz, ``|x~| <= |x| + r_x``). The integer products are exact (at most
768 * 127**2, well inside int32 and float32's exact integers) and run ~2.3x faster than float32
ones on this CPU class (``torch._int_mm``, AVX-512 VNNI); the int8 rows are a quarter of the
float32 bytes to read. Pairs the bound cannot decide are recomputed from the float32 rows, so
every match stays exact. Measured on planted 768-d rows: ``r`` 0.0076 on average, 0.013 at most.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

QMAX: int = 127
#: Rows quantized at a time (768 KiB of float32 at 768-d, so that a chunk's six passes stay in
#: the core's cache: measured single-threaded, 1.36 µs per row against 1.68 with 2,048 rows).
CHUNK_ROWS: int = 256
#: Added to :func:`pair_bound` for float32 rounding: of ``s``, of ``r``, of the unit rows' norms
#: (within 1e-6 of 1) and of the product ``s_x s_y (q_x . q_y)`` (a few ulps of 1).
ROUNDING: float = 1e-5


def load_torch() -> ModuleType:
    """Import torch (the driver does, before the tasks that multiply with it start: their
    threads then share the cores, :func:`pixsieve.calls.shared_cores`, and none waits on the
    import lock while another imports it). :func:`preload_torch` starts the import earlier, in
    the assign phase (from the start of a run it gained nothing: the read phase took the 1.2 CPU
    s instead)."""
    import torch  # here: the CLI checks its arguments before torch is imported

    return torch


def preload_torch() -> None:
    """Start importing torch on a background thread, while tasks that do not need it run (the
    assign phase), so that :func:`load_torch` before the similarity map finds it imported."""
    import threading

    # not a daemon: a run that stops early waits for the import at exit rather than leaving
    # an import half done while the interpreter shuts down
    threading.Thread(target=load_torch, name="import-torch").start()


def quantize(x: np.ndarray, common: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(q, meta)``: the int8 rows of the float rows ``x`` ``(n, D)`` and ``meta`` ``(n, 2)``
    float32: per row the scale ``s`` and the error bound ``r`` (zero rows: ``s = 0``). In
    blocks of :data:`CHUNK_ROWS` rows with in-place operations: whole-array temporaries cost
    10x the time (fresh pages).

    ``common``: one scale for all rows (the largest row's): bounds ~1.4x wider on unit 768-d
    rows, but :func:`near_pairs` then screens products against one integer, exactly; with
    per-row scales (which vary 2x between rows) its screen lets most products through. One
    scale needs no per-row maximum (measured: 1.67 µs per row against 2.3-3.7 when it was computed
    and then replaced)."""
    torch = load_torch()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    top = None  # the common scale, float32 as stored in meta
    if common and len(t):
        low, high = torch.aminmax(t)
        top = torch.maximum(high, -low) / QMAX
    q = torch.empty(t.shape, dtype=torch.int8)
    meta = torch.empty((len(t), 2), dtype=torch.float32)
    work = torch.empty((min(CHUNK_ROWS, len(t)), t.shape[1]), dtype=torch.float32)
    for lo in range(0, len(t), CHUNK_ROWS):
        rows = t[lo : lo + CHUNK_ROWS]
        y = work[: len(rows)]
        if top is None:  # per row: its largest |x_i|
            scale = torch.amax(torch.abs(rows, out=y), dim=1) / QMAX
        else:
            scale = top.expand(len(rows))
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]
        torch.mul(rows, 1 / safe, out=y).round_().clamp_(-QMAX, QMAX)
        q[lo : lo + len(rows)] = y
        err = torch.linalg.vector_norm(y.mul_(safe).sub_(rows), dim=1)
        meta[lo : lo + len(rows), 0], meta[lo : lo + len(rows), 1] = scale, err * 1.0001 + 1e-6
    return q.numpy(), meta.numpy()


def int8_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` of int8 rows as an int32 array (exact)."""
    torch = load_torch()
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.int32)
    try:
        return torch._int_mm(ta, tb.T).numpy()
    except (RuntimeError, AttributeError):  # no int8 kernel: float32 is exact for these sums
        return (ta.to(torch.float32) @ tb.to(torch.float32).T).to(torch.int32).numpy()


def near_pairs(
    dots: np.ndarray, x_meta: np.ndarray, y_meta: np.ndarray, t: float, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(i, j)``: the products ``dots`` (:func:`int8_dot` of rows with ``x_meta`` and
    ``y_meta``) whose approximate cosine is at or above ``t`` less their :func:`pair_bound`,
    i.e. every pair whose exact cosine may reach ``t``; ``None`` when more than ``limit``
    products pass the screen (the caller multiplies such a block in float32 instead).

    For ``t`` above the largest bound a row's products are first screened against one integer
    per row (from its scale and the largest column scale): its largest product first, then, for
    the rows that pass, each product. A row's product with itself (a diagonal block) passes:
    zero it first."""
    xs, xr, ys, yr = x_meta[:, 0], x_meta[:, 1], y_meta[:, 0], y_meta[:, 1]
    if not dots.size:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    low = t - pair_bound(float(xr.max()), float(yr.max()))
    if low > 0:  # approx >= low needs dots >= low / (s_x * max s_y): a superset, floored
        with np.errstate(divide="ignore"):
            need = np.floor(low / (xs.astype(np.float64) * float(ys.max())) * (1 - 1e-6))
        need = np.minimum(need, np.iinfo(np.int32).max).astype(np.int32)
        rows = np.flatnonzero(dots.max(axis=1) >= need)  # most rows have no product near t
        many = 2 * len(rows) > len(dots)  # then screen in place, not on a copy of the rows
        passed = dots >= need[:, None] if many else dots[rows] >= need[rows, None]
        if limit is not None and np.count_nonzero(passed) > limit:
            return None
        i, j = np.nonzero(passed)
        i = i if many else rows[i]
    elif limit is not None and dots.size > limit:
        return None
    else:
        i, j = (a.ravel() for a in np.indices(dots.shape))
    approx = dots[i, j] * xs[i].astype(np.float64) * ys[j]
    keep = approx >= t - pair_bound(xr[i], yr[j])
    return i[keep], j[keep]


def pair_bound(r_x: np.ndarray | float, r_y: np.ndarray | float) -> np.ndarray | float:
    """Most the approximate cosine of rows with error bounds ``r_x`` and ``r_y`` can differ from
    the exact one (broadcasts)."""
    return r_x + r_y + r_x * r_y + ROUNDING
